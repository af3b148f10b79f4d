"""Prometheus metrics of a running Axon (issue 5): ``/metrics`` of a real ``axon serve`` shows
exactly the runs, crashes, timeouts, exits and restarts that happened; worker CPU and memory come
from the OS and survive restarts; no per-conversation series; metrics can be turned off.

Counts are compared exactly, from the parsed exposition format. The runtime emits a run's
``run.finished`` as the run ends, which may be a moment after its reply is sent, so each check
first polls ``/metrics`` until the expected total is there, then compares every number.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from axon import AgentSpec, AgentUnavailable, Axon, RuntimeSpec
from axon.observability.metrics import RuntimeMetrics
from axon.testing import EventLog, capture_events, kill_worker, wait_until, wait_until_serving

from ..conftest import FAST, FAST_SUPERVISOR_TOML, MISBEHAVING, ServeAxon, StartAxon
from .test_http_api import poll

STATES = ("starting", "running", "restarting", "failed", "stopping", "stopped")
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

SERVER_TOML = f"""\
[runtime]
store = "sqlite:///axon.db"

{FAST_SUPERVISOR_TOML}
[[agents]]
id = "misbehaving"
agent = "{MISBEHAVING}"
timeout = 10

[[agents]]
id = "steady"
agent = "{MISBEHAVING}"
"""


def parse(body: str) -> Series:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def by_label(series: Series, name: str, agent: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` of metric ``name`` for ``agent``."""
    return {
        dict(labels)[label]: v
        for (n, labels), v in series.items()
        if n == name and ("agent", agent) in labels
    }


class Scraper:
    """``GET /metrics`` and ``/v1/...`` on a server; keeps the CPU counter of every scrape."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cpu: list[float] = []

    async def scrape(self) -> Series:
        response = await self.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        series = parse(response.text)
        cpu = value(series, "axon_worker_cpu_seconds_total", agent="misbehaving", worker="0")
        assert cpu is not None
        self.cpu.append(cpu)
        return series

    async def until(self, predicate: Callable[[Series], bool]) -> Series:
        return await poll(self.scrape, predicate)

    async def send(self, agent: str, prompt: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            f"/v1/agents/{agent}/messages", json={"prompt": prompt, **body}
        )

    async def error(self, agent: str, prompt: str, **body: Any) -> str:
        response = await self.send(agent, prompt, **body)
        assert response.status_code >= 400, response.text
        return response.json()["error"]["type"]

    async def worker_pid(self, agent: str) -> int:
        return (await self.client.get(f"/v1/agents/{agent}")).json()["workers"][0]["pid"]

    async def serving_again(self, agent: str, old_pid: int) -> int:
        async def status() -> dict[str, Any]:
            return (await self.client.get(f"/v1/agents/{agent}")).json()

        def replaced(body: dict[str, Any]) -> bool:
            worker = body["workers"][0]
            running = body["state"] == "running" and worker["state"] == "running"
            return running and worker["pid"] != old_pid

        return (await poll(status, replaced))["workers"][0]["pid"]


def runs_of(series: Series, agent: str) -> float:
    return sum(by_label(series, "axon_runs_total", agent, "outcome").values())


async def test_metrics_count_exactly_what_happened(serve_axon: ServeAxon) -> None:
    server = await serve_axon(SERVER_TOML)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        api = Scraper(client)
        series = await api.scrape()
        for agent in ("misbehaving", "steady"):
            assert by_label(series, "axon_runs_total", agent, "outcome") == {"ok": 0}
            assert value(series, "axon_runs_in_flight", agent=agent) == 0

        for i in range(5):
            assert (await api.send("misbehaving", f"hi {i}")).status_code == 200
        for i in range(4):
            assert (await api.send("steady", f"hi {i}")).status_code == 200
        streamed = await api.send("misbehaving", "stream:3:0.01", stream=True)
        assert streamed.status_code == 200
        assert "chunk-2" in streamed.text
        assert await api.error("misbehaving", "raise:x") == "agent_run_failed"
        assert await api.error("misbehaving", "sleep:5", timeout=0.5) == "agent_timeout"
        for _ in range(2):
            pid = await api.worker_pid("misbehaving")
            assert await api.error("misbehaving", "crash") == "agent_crashed"
            await api.serving_again("misbehaving", pid)

        # An idle worker killed: an exit and a restart, no run.
        pid = await api.worker_pid("misbehaving")
        os.kill(pid, signal.SIGKILL)
        await api.serving_again("misbehaving", pid)
        # A restart by hand: an exit with cause "requested", no automatic restart.
        restarted = await client.post("/v1/agents/misbehaving/restart")
        assert restarted.status_code == 200
        assert restarted.json()["state"] == "running"

        # A run held in flight is seen as one, then interrupted by the next message.
        held = asyncio.create_task(api.send("misbehaving", "sleep:30", conversation_id="held"))
        series = await api.until(
            lambda s: value(s, "axon_runs_in_flight", agent="misbehaving") == 1
        )
        assert value(series, "axon_runs_in_flight", agent="steady") == 0
        interrupting = await api.send(
            "misbehaving", "hi", conversation_id="held", policy="interrupt"
        )
        assert interrupting.status_code == 200
        assert (await held).json()["error"]["type"] == "run_interrupted"

        series = await api.until(
            lambda s: (
                runs_of(s, "misbehaving") == 12
                and runs_of(s, "steady") == 4
                and value(s, "axon_runs_in_flight", agent="misbehaving") == 0
            )
        )

    runs = by_label(series, "axon_runs_total", "misbehaving", "outcome")
    assert runs == {
        "ok": 7,  # 5 + the streamed run + the interrupting message
        "agent_run_failed": 1,
        "agent_timeout": 1,
        "agent_crashed": 2,
        "run_interrupted": 1,
    }
    assert by_label(series, "axon_runs_total", "steady", "outcome") == {"ok": 4}
    for agent in ("misbehaving", "steady"):
        counts = by_label(series, "axon_run_duration_seconds_count", agent, "outcome")
        assert counts == by_label(series, "axon_runs_total", agent, "outcome")
        assert value(series, "axon_runs_in_flight", agent=agent) == 0
        assert value(series, "axon_run_queue_depth", agent=agent) == 0
        states = by_label(series, "axon_agent_state", agent, "state")
        assert states == dict.fromkeys(STATES, 0) | {"running": 1}
        assert value(series, "axon_workers", agent=agent, state="running") == 1
    ttft = "axon_run_time_to_first_token_seconds_count"
    assert value(series, ttft, agent="misbehaving") == 1  # only the streamed run
    assert value(series, ttft, agent="steady") == 0
    assert value(series, "axon_store_commit_duration_seconds_count") == 7 + 4  # ok runs commit
    # Sent one at a time, each commit found the store idle: a transaction of its own.
    assert value(series, "axon_store_commit_batches_total") == 7 + 4
    assert value(series, "axon_store_commit_batch_runs_total") == 7 + 4

    assert by_label(series, "axon_worker_exits_total", "misbehaving", "cause") == {
        "crashed": 3,  # two crashes and the SIGKILL
        "requested": 1,  # the restart by hand
    }
    assert by_label(series, "axon_worker_exits_total", "steady", "cause") == {}
    assert value(series, "axon_worker_restarts_total", agent="misbehaving") == 3
    assert value(series, "axon_worker_restarts_total", agent="steady") == 0
    for agent in ("misbehaving", "steady"):
        assert value(series, "axon_agent_failures_total", agent=agent) == 0
        assert value(series, "axon_protocol_errors_total", agent=agent) == 0

    # Per-worker resources, the slot's CPU never going down across four process changes.
    for agent in ("misbehaving", "steady"):
        rss = value(series, "axon_worker_resident_memory_bytes", agent=agent, worker="0")
        assert rss is not None
        assert rss > 10_000_000
    assert api.cpu == sorted(api.cpu)
    # The orchestrator's own process and interpreter.
    assert value(series, "process_cpu_seconds_total") is not None
    assert value(series, "process_resident_memory_bytes") is not None
    assert any(name == "python_info" for name, _ in series)


async def test_a_worker_slots_cpu_survives_sigkill_and_restart(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING))
    assert axon.metrics is not None
    for i in range(20):  # some CPU in the first process beyond its start-up
        await axon.send_message("m", f"hi {i}")
    before = parse(axon.metrics.exposition()[0].decode())
    cpu_before = value(before, "axon_worker_cpu_seconds_total", agent="m", worker="0")
    rss = value(before, "axon_worker_resident_memory_bytes", agent="m", worker="0")
    assert cpu_before is not None
    assert cpu_before > 0
    assert rss is not None
    assert rss > 10_000_000

    mark = events.mark()
    pid = kill_worker(axon, "m")
    await events.wait_for("worker.exit", since=mark, agent="m", pid=pid)
    status = await wait_until_serving(axon, "m", replaced=[pid])
    new_pid = status.workers[0].pid
    assert new_pid is not None
    new_times = psutil.Process(new_pid).cpu_times()

    after = parse(axon.metrics.exposition()[0].decode())
    cpu_after = value(after, "axon_worker_cpu_seconds_total", agent="m", worker="0")
    assert cpu_after is not None
    # The first process's reading is kept and the new process's CPU added to it.
    assert cpu_after >= cpu_before + new_times.user + new_times.system - 1e-9  # float sums
    rss_after = value(after, "axon_worker_resident_memory_bytes", agent="m", worker="0")
    assert rss_after is not None
    assert rss_after > 10_000_000
    assert value(after, "axon_worker_exits_total", agent="m", cause="crashed") == 1
    assert value(after, "axon_worker_restarts_total", agent="m") == 1


async def test_runs_over_many_conversations_add_no_series(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING, max_concurrency=64))
    metrics = axon.metrics
    assert metrics is not None

    async def scrape() -> tuple[str, Series]:
        body = metrics.exposition()[0].decode()
        return body, parse(body)

    await axon.send_message("m", "warm-up")
    await wait_until(axon, "m", lambda s: s.in_flight == 0)
    _, first = await poll(scrape, lambda scraped: runs_of(scraped[1], "m") == 1)

    replies = await asyncio.gather(*(axon.send_message("m", f"hi {i}") for i in range(200)))
    conversations = {reply.conversation_id for reply in replies}
    assert len(conversations) == 200
    body, last = await poll(scrape, lambda scraped: runs_of(scraped[1], "m") == 201)

    assert set(last) == set(first)
    assert value(last, "axon_runs_total", agent="m", outcome="ok") == 201
    assert not any(cid in body for cid in conversations)


async def test_metrics_off_serves_404_and_subscribes_no_sink(serve_axon: ServeAxon) -> None:
    spec = AgentSpec(id="m", agent=MISBEHAVING)
    on, off = Axon([spec]), Axon([spec], runtime=RuntimeSpec(metrics=False))
    assert on.metrics is not None
    assert off.metrics is None
    sinks_on = on.events._sinks  # pyright: ignore[reportPrivateUsage]
    sinks_off = off.events._sinks  # pyright: ignore[reportPrivateUsage]
    assert len(sinks_on) == len(sinks_off) + 1
    assert any(isinstance(getattr(s, "__self__", None), RuntimeMetrics) for s in sinks_on)
    assert not any(isinstance(getattr(s, "__self__", None), RuntimeMetrics) for s in sinks_off)

    server = await serve_axon(
        f'[runtime]\nmetrics = false\n\n[[agents]]\nid = "m"\nagent = "{MISBEHAVING}"\n'
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        assert (
            await client.post("/v1/agents/m/messages", json={"prompt": "hi"})
        ).status_code == 200
        response = await client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert "Traceback" not in response.text


async def test_requests_refused_by_a_failed_agent_are_counted(start_axon: StartAxon) -> None:
    axon = await start_axon(
        AgentSpec(id="broken", agent="axon.examples.misbehaving:raise_at_startup"),
        supervisor=FAST.model_copy(update={"max_restarts": 0}),
    )
    assert axon.agent("broken").state == "failed"
    with capture_events() as events:
        for _ in range(3):
            try:
                await axon.send_message("broken", "hi")
            except AgentUnavailable:
                pass
            else:
                raise AssertionError("a failed agent answered")
        finished = events.find("run.finished", agent="broken")
    assert [e.fields["outcome"] for e in finished] == ["agent_unavailable"] * 3
    assert all(e.levelno == logging.WARNING for e in finished)
    assert axon.metrics is not None
    series = parse(axon.metrics.exposition()[0].decode())
    assert by_label(series, "axon_runs_total", "broken", "outcome") == {
        "ok": 0.0,
        "agent_unavailable": 3.0,
    }
