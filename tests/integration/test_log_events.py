"""Every kind of structured log event, as the JSON lines an operator gets.

Each line is checked against the catalogue (:data:`axon.observability.events.EVENTS`): a known
event, one of its documented levels, and exactly its documented fields. The scenario through a
real ``axon serve --log-format json --log-level debug`` produces every event but three that
cannot be caused from outside the process (a malformed frame, a bug in a background task, a bug
behind a route); those are caused in process below, rendered by the same logging set-up.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from axon import AgentSpec, Axon
from axon._tasks import TaskSet
from axon.http.app import create_app
from axon.observability.events import EVENTS, LOGGER_NAME
from axon.observability.logging import configure_logging
from axon.pool.process import WorkerProcess
from axon.testing import AxonServer

from ..conftest import MISBEHAVING, ServeAxon, StartAxon
from .test_http_streaming import closed_by_server, stalled_stream

BASE_KEYS = {"ts", "level", "event", "logger"}
IN_PROCESS_ONLY = {"protocol.error", "task.failed", "http.internal_error"}

CONFIG = """\
[runtime]
store = "sqlite:///axon.db"
shutdown_grace = 1

[supervisor]
backoff_initial = 0.01
backoff_max = 0.2
heartbeat_interval = 0.25
heartbeat_timeout = 4.0
cancel_grace = 1.0
shutdown_timeout = 3.0

[[agents]]
id = "m"
agent = "axon.examples.misbehaving:misbehaving_agent"
timeout = 20

[agents.supervisor]
backoff_initial = 0.01
backoff_max = 0.2
heartbeat_interval = 0.2
heartbeat_timeout = 1.5
cancel_grace = 10.0
shutdown_timeout = 3.0

[[agents]]
id = "threaded"
agent = "axon.examples.misbehaving:misbehaving_agent"
env = { AXON_EXAMPLE_IMPORT_THREAD = "1" }

[[agents]]
id = "broken"
agent = "axon.examples.misbehaving:raise_at_startup"

[agents.supervisor]
max_restarts = 1
max_seconds = 60
backoff_initial = 0.01
backoff_max = 0.05
failed_cooldown = 600

[[agents]]
id = "chatty"
agent = "axon.examples.hostile:hostile_agent"
env = { AXON_EXAMPLE_IMPORT_LINES = "3000" }
"""


def check_line(line: str) -> dict[str, Any]:
    """One JSON log line, checked against the catalogue."""
    record = json.loads(line)
    kind = EVENTS.get(record["event"])
    assert kind is not None, f"an event missing from the catalogue: {line}"
    assert logging.getLevelName(record["level"].upper()) in kind.levels, line
    assert set(record) == BASE_KEYS | set(kind.fields), line
    assert record["logger"] == LOGGER_NAME
    assert isinstance(record["ts"], float)
    return record


def axon_records(text: str) -> list[dict[str, Any]]:
    """Axon's events in a JSON log (every line must be JSON), each checked."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [check_line(json.dumps(r)) for r in lines if r["logger"] == LOGGER_NAME]


async def wait_logged(
    server: AxonServer, matches: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """The first logged event for which ``matches`` holds, re-reading the log as it grows."""
    async with asyncio.timeout(timeout):
        while True:
            for record in axon_records(server.logs()):
                if matches(record):
                    return record
            await asyncio.sleep(0.05)


def named(event: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["event"] == event and all(r.get(k) == v for k, v in fields.items())


def count(server: AxonServer, event: str, **fields: Any) -> int:
    return sum(map(named(event, **fields), axon_records(server.logs())))


async def wait_count(server: AxonServer, n: int, event: str, **fields: Any) -> None:
    """Wait until ``event`` (with ``fields``) has been logged ``n`` times."""
    async with asyncio.timeout(30):
        while True:
            if count(server, event, **fields) >= n:
                return
            await asyncio.sleep(0.05)


async def test_every_event_kind_is_a_json_line_with_its_documented_fields(
    serve_axon: ServeAxon,
) -> None:
    server = await serve_axon(CONFIG, args=("--log-format", "json", "--log-level", "debug"))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

        async def send(prompt: str, **body: Any) -> httpx.Response:
            return await client.post("/v1/agents/m/messages", json={"prompt": prompt, **body})

        # A streamed success: routed, finished with a time to first token and a commit time.
        async with client.stream(
            "POST", "/v1/agents/m/messages", json={"prompt": "stream:3:0.01", "stream": True}
        ) as stream:
            assert stream.status_code == 200
            _ = [chunk async for chunk in stream.aiter_text()]
        ok = await wait_logged(server, named("run.finished", agent="m", outcome="ok"))
        assert ok["ttft_s"] is not None
        assert ok["commit_s"] is not None
        assert ok["latency_s"] >= ok["ttft_s"] > 0
        routed = await wait_logged(server, named("run.routed", agent="m"))
        assert routed["level"] == "debug"
        assert (routed["run"], routed["pid"]) == (ok["run"], ok["pid"])

        # A crash: the run's worker exits (WARNING, cause crashed) and is restarted.
        assert (await send("crash")).status_code == 502
        crashed = await wait_logged(server, named("worker.exit", agent="m", cause="crashed"))
        assert (crashed["level"], crashed["exit_code"]) == ("warning", 13)
        assert (await wait_logged(server, named("agent.restart", agent="m")))["attempt"] == 1
        failed_run = await wait_logged(
            server, named("run.finished", agent="m", outcome="agent_crashed")
        )
        assert failed_run["level"] == "warning"
        await wait_count(server, 2, "worker.ready", agent="m")

        # A hang: the deadline passes (run.timeout), then the heartbeat notices (hung, kill).
        assert (await send("hang:5", timeout=0.5)).status_code == 504
        assert (await wait_logged(server, named("run.timeout", agent="m")))["timeout_s"] == 0.5
        hung = await wait_logged(server, named("worker.hung", agent="m"))
        kill = await wait_logged(server, named("worker.kill", agent="m", pid=hung["pid"]))
        assert kill["reason"].startswith("hung")
        await wait_logged(server, named("worker.exit", agent="m", cause="hung"))
        await wait_count(server, 3, "worker.ready", agent="m")

        # A stream client that reads nothing: cut once the run is 1,000 events ahead of it.
        stalled = await stalled_stream(server.url, "stalled", agent_id="m")
        try:
            cut = await wait_logged(server, named("http.slow_consumer", agent="m"))
            assert (cut["pending"], cut["on_disconnect"]) == (1000, "cancel")
            assert cut["level"] == "warning"
            await closed_by_server(stalled)
        finally:
            stalled.close()
        await wait_logged(
            server, named("run.finished", conversation="stalled", outcome="cancelled")
        )

        # A client that leaves mid-stream.
        async with client.stream(
            "POST", "/v1/agents/m/messages", json={"prompt": "stream:50:0.1", "stream": True}
        ) as stream:
            async for _chunk in stream.aiter_text():
                break
        left = await wait_logged(server, named("http.disconnected", agent="m"))
        assert left["on_disconnect"] == "cancel"
        await wait_logged(server, named("run.finished", agent="m", outcome="cancelled"))

        # A worker and a zygote that print more than the log takes: the rest is counted.
        assert (
            await client.post("/v1/agents/chatty/messages", json={"prompt": "line:10:3000"})
        ).status_code == 200
        dropped = await wait_logged(server, named("worker.output_dropped", agent="chatty"))
        assert dropped["stream"] == "stdout"
        assert dropped["lines"] > 0
        await wait_logged(server, named("zygote.output_dropped", agent="chatty"))

        # A request still running when the shutdown grace (1 s) ends is cut.
        routed_before = count(server, "run.routed", agent="m")
        slow = asyncio.ensure_future(send("sleep:10"))
        await wait_count(server, routed_before + 1, "run.routed", agent="m")
        server.send_signal(signal.SIGTERM)
        assert (await slow).status_code == 503
    assert await server.wait() == 0

    records = axon_records(server.logs())
    others = [line for line in server.logs().splitlines() if '"logger": "axon"' not in line]
    assert others == []  # uvicorn had nothing to add (its grace-cut error is an http.cut)
    seen = {r["event"] for r in records}
    assert seen == set(EVENTS) - IN_PROCESS_ONLY
    by_event = {r["event"]: r for r in records}
    assert by_event["http.listening"]["url"] == server.url
    assert by_event["http.shutdown"]["grace_s"] == 1
    assert by_event["http.cut"]["path"] == "/v1/agents/m/messages"
    broken_start = by_event["worker.startup_failed"]
    assert broken_start["agent"] == "broken"
    assert "simulated start-up failure" in broken_start["message"]
    output = [r for r in records if r["event"] == "worker.output" and r["agent"] == "broken"]
    assert output
    assert all(r["stream"] == "stderr" for r in output)
    assert all(r["level"] == "warning" and isinstance(r["pid"], int) for r in output)
    assert by_event["agent.failed"]["agent"] == "broken"
    # The fork server: its root and the agents' zygotes were ready; "threaded" starts a thread
    # at import, so its zygote refused (and its import-time line was logged).
    assert {r["agent"] for r in records if r["event"] == "zygote.ready"} >= {None, "m", "broken"}
    assert by_event["zygote.refused"]["agent"] == "threaded"
    assert "import-time-thread" in by_event["zygote.refused"]["reason"]
    said = [r for r in records if r["event"] == "zygote.output" and r["agent"] == "threaded"]
    assert [r["line"] for r in said] == ["misbehaving: starting a thread at import"]
    assert said[0]["level"] == "warning"
    starts = {r["agent"]: r["start"] for r in records if r["event"] == "worker.ready"}
    assert starts == {"m": "fork", "threaded": "cold", "chatty": "fork"}
    stops = [r for r in records if r["event"] == "worker.exit" and r["cause"] == "requested"]
    assert stops
    assert all(r["level"] == "info" for r in stops)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the loggers ``configure_logging`` changes back as they were."""
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name in (LOGGER_NAME, "uvicorn.error")
        for logger in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def json_log(restore_logging: None) -> io.StringIO:
    """The ``axon`` logger set up as ``axon serve --log-format json`` does, into a buffer."""
    buffer = io.StringIO()
    configure_logging("json", logging.DEBUG, stream=buffer)
    return buffer


async def test_a_malformed_frame_is_a_protocol_error_line(
    start_axon: StartAxon, json_log: io.StringIO
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING))
    worker = axon.hosted("m").worker_at(0)
    assert isinstance(worker, WorkerProcess)
    assert worker._channel is not None  # pyright: ignore[reportPrivateUsage]
    worker._channel.write_raw(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # pyright: ignore[reportPrivateUsage]
    assert (await axon.send_message("m", "after")).output == "echo: after"
    (error,) = [r for r in axon_records(json_log.getvalue()) if r["event"] == "protocol.error"]
    assert (error["agent"], error["worker"], error["pid"]) == ("m", 0, worker.pid)
    assert error["level"] == "error"


async def test_a_background_task_that_raises_is_a_task_failed_line(json_log: io.StringIO) -> None:
    tasks = TaskSet("owner-x")

    async def broken() -> None:
        raise ValueError("a bug")

    task = tasks.create_task(broken())
    await asyncio.wait({task})
    await tasks.aclose()
    (failed,) = [r for r in axon_records(json_log.getvalue()) if r["event"] == "task.failed"]
    assert failed["owner"] == "owner-x"
    assert failed["error"] == "ValueError: a bug"


async def test_a_bug_behind_a_route_is_an_internal_error_line(
    start_axon: StartAxon, json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING))

    def bug() -> list[Any]:
        raise KeyError("a bug")

    # The fault is injected into our own runtime on purpose: the path under test only runs
    # when Axon itself is broken.
    transport = httpx.ASGITransport(app=create_app(axon), raise_app_exceptions=False)
    with monkeypatch.context() as patch:
        patch.setattr(axon, "agents", bug)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            response = await client.get("/v1/agents")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"type": "internal_error", "message": "internal error; see the server log"}
    }
    (line,) = [r for r in axon_records(json_log.getvalue()) if r["event"] == "http.internal_error"]
    assert (line["method"], line["path"]) == ("GET", "/v1/agents")
    assert "a bug" in line["error"]


def test_text_lines_are_the_default_and_carry_the_same_fields(restore_logging: None) -> None:
    buffer = io.StringIO()
    configure_logging(stream=buffer)
    bus = Axon().events
    bus.emit("worker.ready", logging.INFO, agent="a", worker=0, pid=7, startup_s=1.5)
    bus.emit("run.routed", logging.DEBUG, agent="a", worker=0, pid=7, run=1, conversation="c")
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO    worker.ready agent=a worker=0 pid=7 startup_s=1.5\n",
        buffer.getvalue(),
    )
