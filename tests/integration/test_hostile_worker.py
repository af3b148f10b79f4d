"""A worker is untrusted input (issue 12): whatever one sends or fails to send, the orchestrator
stays bounded, every slot is freed, other agents keep serving, and the worker is killed and
restarted with a typed error for its runs.

Real worker processes running :mod:`axon.examples.hostile`, whose prompts make the worker attack
its own connection to the orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from pydantic_ai import ModelMessagesTypeAdapter
from pydantic_ai.messages import ModelRequest, UserPromptPart

from axon import (
    AgentCrashed,
    AgentSpec,
    Axon,
    HistoryTooLarge,
    ProtocolError,
    ResultTooLarge,
    SupervisorSpec,
)
from axon.pool.session import PROTOCOL_BUDGET
from axon.run_call import RunRequest
from axon.store.memory import InMemoryStore
from axon.testing import EventLog, wait_until, wait_until_serving, worker_pids

from ..conftest import FAST, FAST_SUPERVISOR_TOML, MISBEHAVING, ServeAxon, StartAxon

HOSTILE = "axon.examples.hostile:hostile_agent"


async def start_pair(start_axon: StartAxon, **hostile: object) -> Axon:
    """A hostile agent beside a healthy one (which must never notice)."""
    return await start_axon(
        AgentSpec(id="hostile", agent=HOSTILE, timeout=20, **hostile),  # type: ignore[arg-type]
        AgentSpec(id="healthy", agent=MISBEHAVING),
    )


async def assert_healthy_untouched(axon: Axon, events: EventLog, pids: list[int | None]) -> None:
    assert worker_pids(axon, "healthy") == pids, "the healthy agent's worker was replaced"
    assert not events.find("worker.exit", agent="healthy")
    assert (await axon.send_message("healthy", "still there")).output == "echo: still there"


async def killed_for(events: EventLog, mark: int, pid: int | None) -> str:
    exit_ = await events.wait_for("worker.exit", since=mark, agent="hostile", pid=pid)
    return str(exit_.fields["cause"])


# -- 1. what a frame costs to decode; the heartbeat and the orchestrator's own stalls --------------


async def test_an_event_bomb_for_an_unknown_run_is_dropped_unread(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_pair(start_axon)
    healthy = worker_pids(axon, "healthy")
    tracemalloc.start()
    try:
        reply = await axon.send_message("hostile", "event-bomb:16000000")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reply.output == "bombed 16000000"
    # 16 MB of empty msgpack arrays is ~1 GB of Python lists; read and dropped, it is the bytes.
    assert peak < 80 * 2**20, f"decoding the bomb cost {peak / 2**20:.0f} MiB"
    await assert_healthy_untouched(axon, events, healthy)


async def test_a_frame_over_the_agents_limit_gets_its_worker_killed(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_pair(start_axon, max_result_bytes=2**20)
    healthy = worker_pids(axon, "healthy")
    (pid,) = worker_pids(axon, "hostile")
    mark = events.mark()
    with pytest.raises(AgentCrashed) as caught:
        await axon.send_message("hostile", "event-bomb:2000000")
    assert caught.value.pid == pid
    assert await killed_for(events, mark, pid) == "protocol"
    await wait_until_serving(axon, "hostile", replaced=[pid])
    await assert_healthy_untouched(axon, events, healthy)


async def test_a_stall_of_the_orchestrators_own_loop_is_not_a_hung_worker(
    start_axon: StartAxon, events: EventLog
) -> None:
    quick = FAST.model_copy(update={"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0})
    axon = await start_axon(AgentSpec(id="a", agent=MISBEHAVING, workers=2), supervisor=quick)
    pids = worker_pids(axon, "a")
    mark = events.mark()
    time.sleep(2.5)  # the orchestrator's loop itself is blocked (like a 10 s decode did)  # noqa: ASYNC251
    # Every heartbeat that was due during the stall runs now, and judges the silence at once.
    await asyncio.sleep(4 * quick.heartbeat_interval)
    assert not events.find("worker.hung", since=mark), "a stall of ours was blamed on a worker"
    assert worker_pids(axon, "a") == pids
    assert (await axon.send_message("a", "hi")).output == "echo: hi"


async def test_a_worker_that_really_hangs_is_still_killed(
    start_axon: StartAxon, events: EventLog
) -> None:
    quick = FAST.model_copy(update={"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0})
    axon = await start_axon(AgentSpec(id="a", agent=MISBEHAVING), supervisor=quick)
    (pid,) = worker_pids(axon, "a")
    mark = events.mark()
    with pytest.raises(AgentCrashed):
        await axon.send_message("a", "hang:30")
    hung = await events.wait_for("worker.hung", since=mark, pid=pid)
    assert hung.fields["silent_s"] > quick.heartbeat_timeout


# -- 2. no error path leaks a slot; histories over the agent's limit -------------------------------


def _history_of(size: int) -> bytes:
    request = ModelRequest(parts=[UserPromptPart("x" * size)])
    return ModelMessagesTypeAdapter.dump_json([request])


async def test_a_history_over_max_history_bytes_fails_at_once_without_a_worker(
    start_axon: StartAxon, events: EventLog
) -> None:
    store = InMemoryStore()
    await store.open()
    await store.commit("c-big", agent_id="a", expected_revision=0, messages=_history_of(20_000))
    axon = await start_axon(
        AgentSpec(id="a", agent=MISBEHAVING, max_history_bytes=10_000), store=store
    )
    mark = events.mark()
    for _ in range(3):
        with pytest.raises(HistoryTooLarge) as caught:
            await axon.send_message("a", "more", conversation_id="c-big")
        error = caught.value
        assert (error.conversation_id, error.limit) == ("c-big", 10_000)
        assert error.size > 20_000
    assert axon.agent("a").workers[0].in_flight == 0
    assert not events.find("run.routed", since=mark), "a worker was involved"
    assert (await axon.load_conversation("c-big")).revision == 1
    assert (await axon.send_message("a", "new conversation")).output == "echo: new conversation"


async def test_over_http_a_history_over_the_limit_is_413_with_its_facts(
    serve_axon: ServeAxon,
) -> None:
    server = await serve_axon(
        f"""{FAST_SUPERVISOR_TOML}
[[agents]]
id = "a"
agent = "{MISBEHAVING}"
max_history_bytes = 4096
"""
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        url = "/v1/agents/a/messages"
        first = await client.post(url, json={"prompt": "x" * 5000, "conversation_id": "c"})
        assert first.status_code == 200  # committed: it is what makes the history too large
        refused = await client.post(url, json={"prompt": "more", "conversation_id": "c"})
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["type"] == "history_too_large"
        assert (error["conversation_id"], error["limit"]) == ("c", 4096)
        assert error["size"] > 10_000
        assert (await client.get("/v1/conversations/c")).json()["revision"] == 1


async def test_a_run_frame_that_cannot_be_sent_takes_no_slot(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="a", agent=MISBEHAVING))
    worker = axon.hosted("a").workers()[0]
    huge = RunRequest("p", b"[" + b" " * (65 * 2**20) + b"]", "c", deadline=None, stream=False)
    for _ in range(3):
        with pytest.raises(ProtocolError):  # FrameTooLarge: nothing was sent
            worker.start_run(huge)
    assert worker.in_flight == 0
    assert (await axon.send_message("a", "hi")).output == "echo: hi"


# -- 3. a worker that cannot be started is a start-up failure --------------------------------------


async def test_a_long_tmpdir_does_not_matter(start_axon: StartAxon, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    long_dir = tmp_path / ("d" * 90)
    long_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_dir))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    axon = await start_axon(AgentSpec(id="a", agent=MISBEHAVING))
    assert (await axon.send_message("a", "hi")).output == "echo: hi"


# -- 4. a worker that stops reading or floods the connection ---------------------------------------


@pytest.mark.parametrize(
    "attack",
    ["flood:ready:30000", "flood:pong:100000", "flood:invalid:100000", "deaf:15"],
)
async def test_a_worker_that_breaks_the_protocol_is_killed_past_its_budget(
    start_axon: StartAxon, events: EventLog, attack: str
) -> None:
    axon = await start_pair(start_axon)
    healthy = worker_pids(axon, "healthy")
    (pid,) = worker_pids(axon, "hostile")
    mark = events.mark()
    with contextlib.suppress(AgentCrashed):  # the flood may be over before it is killed
        await axon.send_message("hostile", attack)
    assert await killed_for(events, mark, pid) == "protocol"
    logged = events.find("protocol.error", since=mark, agent="hostile")
    assert len(logged) <= PROTOCOL_BUDGET, "one worker's junk flooded the log"
    assert len(events.find("worker.kill", since=mark, pid=pid)) == 1, "killed more than once"
    await wait_until_serving(axon, "hostile", replaced=[pid])
    assert (await axon.send_message("hostile", "hello")).output == "echo: hello"
    await assert_healthy_untouched(axon, events, healthy)


async def test_a_worker_that_stops_reading_is_killed_as_hung(
    start_axon: StartAxon, events: EventLog
) -> None:
    quick = FAST.model_copy(update={"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0})
    axon = await start_axon(AgentSpec(id="hostile", agent=HOSTILE), supervisor=quick)
    (pid,) = worker_pids(axon, "hostile")
    mark = events.mark()
    with pytest.raises(AgentCrashed):
        await axon.send_message("hostile", "mute:30")
    assert await killed_for(events, mark, pid) == "hung"


# -- 5. what a worker prints -----------------------------------------------------------------------


async def test_an_overlong_line_and_a_flood_of_lines_never_stop_the_output_pump(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_pair(start_axon)
    (pid,) = worker_pids(axon, "hostile")
    mark = events.mark()
    # 200 KB on one line (past any readline limit), then more lines than a pipe holds.
    reply = await axon.send_message("hostile", "line:200000:20000")
    assert reply.output == "printed 200000 20000"
    assert worker_pids(axon, "hostile") == [pid]
    lines = events.find("worker.output", since=mark, pid=pid, stream="stdout")
    cut = [e for e in lines if "cut: the line was 200000 bytes" in e.fields["line"]]
    assert len(cut) == 1
    assert len(cut[0].fields["line"]) < 10_000
    dropped = await events.wait_for("worker.output_dropped", since=mark, pid=pid)
    assert len(lines) + dropped.fields["lines"] <= 20_001
    assert (await axon.send_message("hostile", "hello")).output == "echo: hello"


# -- 6. a result over the limit fails that run alone -----------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_result_over_the_limit_fails_alone_and_the_worker_keeps_serving(
    start_axon: StartAxon, events: EventLog, stream: bool
) -> None:
    axon = await start_pair(start_axon, max_result_bytes=2**20)
    (pid,) = worker_pids(axon, "hostile")
    neighbour = asyncio.ensure_future(axon.send_message("hostile", "sleep:1.5"))
    await wait_until(axon, "hostile", lambda s: s.in_flight == 1, timeout=10)
    with pytest.raises(ResultTooLarge) as caught:
        await run_to_the_end(axon, "big:3000000", stream=stream)
    assert caught.value.limit == 2**20
    assert caught.value.size > 3_000_000
    assert (await neighbour).output == "slept 1.5"
    assert worker_pids(axon, "hostile") == [pid]
    assert not events.find("worker.exit", agent="hostile")
    assert (await axon.load_conversation("c")).revision == 0


async def run_to_the_end(axon: Axon, prompt: str, *, stream: bool) -> None:
    if stream:
        async for _ in axon.stream_message("hostile", prompt, conversation_id="c"):
            pass
    else:
        await axon.send_message("hostile", prompt, conversation_id="c")


# -- 7. a result's messages are checked before they are committed ----------------------------------


@pytest.mark.parametrize("forged", ["object", "inject", "kind"])
async def test_a_forged_result_is_refused_and_the_history_is_untouched(
    start_axon: StartAxon, forged: str
) -> None:
    axon = await start_pair(start_axon)
    await axon.send_message("hostile", "hello", conversation_id="c")
    before = await axon.load_conversation("c")
    with pytest.raises(ProtocolError, match="messages"):
        await axon.send_message("hostile", f"forge:{forged}", conversation_id="c")
    after = await axon.load_conversation("c")
    assert after == before
    json.loads(after.messages)  # still a valid history
    assert (await axon.send_message("hostile", "again", conversation_id="c")).output == (
        "echo: again"
    )
    assert len(await axon.history("c")) == 4


async def test_a_worker_that_keeps_forging_results_is_killed(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_pair(start_axon)
    (pid,) = worker_pids(axon, "hostile")
    mark = events.mark()
    for _ in range(PROTOCOL_BUDGET + 1):
        with contextlib.suppress(ProtocolError, AgentCrashed):
            await axon.send_message("hostile", "forge:object")
    assert await killed_for(events, mark, pid) == "protocol"


async def test_many_workers_under_attack_leave_the_healthy_agent_serving(
    start_axon: StartAxon, events: EventLog
) -> None:
    lenient = SupervisorSpec(max_restarts=100, max_seconds=10, backoff_initial=0.01)
    axon = await start_axon(
        AgentSpec(id="hostile", agent=HOSTILE, workers=2, timeout=20),
        AgentSpec(id="healthy", agent=MISBEHAVING),
        supervisor=lenient,
    )
    healthy = worker_pids(axon, "healthy")
    attacks = ["event-bomb:8000000", "flood:ready:20000", "flood:invalid:50000", "forge:inject"]
    results = await asyncio.gather(
        *(axon.send_message("hostile", a) for a in attacks),
        *(axon.send_message("healthy", f"p{i}") for i in range(20)),
        return_exceptions=True,
    )
    assert [getattr(r, "output", r) for r in results[len(attacks) :]] == [
        f"echo: p{i}" for i in range(20)
    ]
    await assert_healthy_untouched(axon, events, healthy)


@pytest.mark.parametrize("cold", [False, True], ids=["forked", "cold"])
async def test_running_out_of_descriptors_during_a_restart_is_a_startup_failure(
    cold: bool,
) -> None:
    child = Path(__file__).with_name("fd_exhaustion_child.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(child),
        *(["--cold"] if cold else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    steps = {line["step"]: line for line in map(json.loads, out.decode().splitlines())}
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "Too many open files" in steps["spawn_failed"]["reason"]
    assert steps["recovered"]["output"] == "echo: after"
    assert steps["recovered"]["pid"] != steps["serving"]["pid"]
    assert "stopped" in steps  # stop() finished: nothing was left "starting" forever
