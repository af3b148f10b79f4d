"""``RuntimeMetrics`` on its own: events in, the exposition format out (parsed, exact numbers).

The events are emitted on a real ``EventBus`` as the runtime emits them; the scrape-time gauges
read status snapshots (plain ``AgentStatus`` values) and real OS processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from axon.observability.events import EventBus
from axon.observability.metrics import RuntimeMetrics
from axon.observability.resources import WorkerResources
from axon.status import AgentStatus, WorkerStatus
from axon.store.sqlite import SqliteStore

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: RuntimeMetrics) -> Series:
    """Every sample of the exposition: ``{(name, labels): value}``."""
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def names_with(series: Series, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in series.items() if n == name}


def run_finished(
    bus: EventBus,
    agent: str,
    outcome: str,
    latency: float,
    *,
    ttft: float | None = None,
    commit: float | None = None,
) -> None:
    bus.emit(
        "run.finished",
        logging.INFO,
        agent=agent,
        conversation="c-1",
        run=1,
        pid=123,
        outcome=outcome,
        latency_s=latency,
        ttft_s=ttft,
        commit_s=commit,
    )


def worker(index: int, state: str, *, pid: int | None = None, in_flight: int = 0) -> WorkerStatus:
    return WorkerStatus(
        index, pid, state, generation=1, restarts=0, in_flight=in_flight, last_exit=None
    )


class Runtime:
    """A bus and the agents' status as the runtime would report them (mutable between scrapes)."""

    def __init__(self, *agent_ids: str) -> None:
        self.bus = EventBus()
        self.status: list[AgentStatus] = []
        self.metrics = RuntimeMetrics(self.bus, lambda: self.status, agent_ids, WorkerResources())


def test_configured_agents_start_with_zero_series() -> None:
    rt = Runtime("a", "b")
    series = scrape(rt.metrics)
    for agent in ("a", "b"):
        assert value(series, "axon_runs_total", agent=agent, outcome="ok") == 0
        assert value(series, "axon_run_duration_seconds_count", agent=agent, outcome="ok") == 0
        assert value(series, "axon_worker_restarts_total", agent=agent) == 0
        assert value(series, "axon_agent_failures_total", agent=agent) == 0
        assert value(series, "axon_protocol_errors_total", agent=agent) == 0
    # Only "ok" is pre-created: other outcomes and exit causes appear when they happen.
    assert set(names_with(series, "axon_runs_total")) == {
        frozenset({("agent", "a"), ("outcome", "ok")}),
        frozenset({("agent", "b"), ("outcome", "ok")}),
    }
    assert names_with(series, "axon_worker_exits_total") == {}


def test_runs_are_counted_by_agent_and_outcome_with_their_durations() -> None:
    rt = Runtime("a", "b")
    run_finished(rt.bus, "a", "ok", 0.2, commit=0.0004)
    run_finished(rt.bus, "a", "ok", 3.0, ttft=0.7, commit=0.02)
    run_finished(rt.bus, "a", "agent_crashed", 0.03)
    run_finished(rt.bus, "a", "agent_timeout", 0.5)
    run_finished(rt.bus, "b", "cancelled", 400.0)
    series = scrape(rt.metrics)

    runs = {
        (dict(labels)["agent"], dict(labels)["outcome"]): v
        for labels, v in names_with(series, "axon_runs_total").items()
    }
    assert runs == {
        ("a", "ok"): 2,
        ("a", "agent_crashed"): 1,
        ("a", "agent_timeout"): 1,
        ("b", "ok"): 0,
        ("b", "cancelled"): 1,
    }
    duration = "axon_run_duration_seconds"
    assert value(series, f"{duration}_count", agent="a", outcome="ok") == 2
    assert value(series, f"{duration}_sum", agent="a", outcome="ok") == pytest.approx(3.2)
    assert value(series, f"{duration}_bucket", agent="a", outcome="ok", le="0.25") == 1
    assert value(series, f"{duration}_bucket", agent="a", outcome="ok", le="2.5") == 1
    assert value(series, f"{duration}_bucket", agent="a", outcome="ok", le="5.0") == 2
    # Minutes-long runs land in a finite bucket.
    assert value(series, f"{duration}_bucket", agent="b", outcome="cancelled", le="300.0") == 0
    assert value(series, f"{duration}_bucket", agent="b", outcome="cancelled", le="600.0") == 1

    ttft = "axon_run_time_to_first_token_seconds"
    assert value(series, f"{ttft}_count", agent="a") == 1  # only the run that streamed text
    assert value(series, f"{ttft}_sum", agent="a") == pytest.approx(0.7)
    assert value(series, f"{ttft}_count", agent="b") == 0

    commit = "axon_store_commit_duration_seconds"
    assert value(series, f"{commit}_count") == 2  # runs without a commit are not observed
    assert value(series, f"{commit}_bucket", le="0.0005") == 1
    assert value(series, f"{commit}_bucket", le="0.025") == 2


def test_supervision_events_are_counted() -> None:
    rt = Runtime("a", "b")
    for cause in ("crashed", "crashed", "requested", "hung"):
        rt.bus.emit("worker.exit", logging.WARNING, agent="a", worker=0, pid=1, cause=cause)
    for _ in range(3):
        rt.bus.emit("agent.restart", logging.WARNING, agent="a", worker=0, attempt=1)
    rt.bus.emit("agent.failed", logging.ERROR, agent="b", restarts=5, window_s=10.0)
    rt.bus.emit("protocol.error", logging.ERROR, agent="b", worker=0, pid=2, message="bad")
    rt.bus.emit("protocol.error", logging.ERROR, agent="b", worker=0, pid=2, message="bad")
    series = scrape(rt.metrics)

    exits = {
        (dict(labels)["agent"], dict(labels)["cause"]): v
        for labels, v in names_with(series, "axon_worker_exits_total").items()
    }
    assert exits == {("a", "crashed"): 2, ("a", "requested"): 1, ("a", "hung"): 1}
    assert value(series, "axon_worker_restarts_total", agent="a") == 3
    assert value(series, "axon_worker_restarts_total", agent="b") == 0
    assert value(series, "axon_agent_failures_total", agent="a") == 0
    assert value(series, "axon_agent_failures_total", agent="b") == 1
    assert value(series, "axon_protocol_errors_total", agent="a") == 0
    assert value(series, "axon_protocol_errors_total", agent="b") == 2


def test_events_of_unknown_agents_add_no_series() -> None:
    rt = Runtime("a")
    before = set(scrape(rt.metrics))
    run_finished(rt.bus, "ghost", "ok", 0.1, ttft=0.1)
    rt.bus.emit("worker.exit", logging.INFO, agent="ghost", worker=0, pid=1, cause="crashed")
    rt.bus.emit("agent.restart", logging.WARNING, agent="ghost", worker=0)
    rt.bus.emit("agent.state", logging.INFO, agent="a", previous="starting", state="running")
    rt.bus.emit("run.timeout", logging.WARNING, agent="a", conversation="c-9", timeout_s=1.0)
    after = scrape(rt.metrics)
    assert set(after) == before
    assert "ghost" not in rt.metrics.exposition()[0].decode()


def test_gauges_are_read_at_scrape_time() -> None:
    rt = Runtime("a", "b")
    rt.status = [
        AgentStatus(
            "a",
            "restarting",
            restarts=1,
            workers=[worker(0, "running", in_flight=3), worker(1, "backoff")],
            queued=5,
        ),
        AgentStatus("b", "running", restarts=0, workers=[worker(0, "running", in_flight=1)]),
    ]
    series = scrape(rt.metrics)
    assert value(series, "axon_runs_in_flight", agent="a") == 3
    assert value(series, "axon_runs_in_flight", agent="b") == 1
    assert value(series, "axon_run_queue_depth", agent="a") == 5
    assert value(series, "axon_run_queue_depth", agent="b") == 0
    states = names_with(series, "axon_agent_state")
    assert {dict(k)["state"]: v for k, v in states.items() if ("agent", "a") in k} == {
        "starting": 0,
        "running": 0,
        "restarting": 1,
        "failed": 0,
        "stopping": 0,
        "stopped": 0,
    }
    workers = names_with(series, "axon_workers")
    assert {dict(k)["state"]: v for k, v in workers.items() if ("agent", "a") in k} == {
        "starting": 0,
        "running": 1,
        "stopping": 0,
        "exited": 0,
        "backoff": 1,
        "stopped": 0,
    }

    # The next scrape sees the new status: nothing is cached between scrapes.
    rt.status = [
        AgentStatus("a", "running", 1, workers=[worker(0, "running"), worker(1, "running")]),
        AgentStatus("b", "failed", 0, workers=[worker(0, "stopped")]),
    ]
    series = scrape(rt.metrics)
    assert value(series, "axon_runs_in_flight", agent="a") == 0
    assert value(series, "axon_run_queue_depth", agent="a") == 0
    assert value(series, "axon_agent_state", agent="a", state="running") == 1
    assert value(series, "axon_agent_state", agent="a", state="restarting") == 0
    assert value(series, "axon_agent_state", agent="b", state="failed") == 1
    assert value(series, "axon_workers", agent="a", state="running") == 2
    assert value(series, "axon_workers", agent="a", state="backoff") == 0
    assert value(series, "axon_workers", agent="b", state="stopped") == 1


async def test_a_grouping_store_exports_its_batches_and_runs(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "axon.db")
    await store.open()
    try:
        metrics = RuntimeMetrics(
            EventBus(), list, ["a"], WorkerResources(), group_commit=store.group_commit
        )
        series = scrape(metrics)
        assert value(series, "axon_store_commit_batches_total") == 0
        assert value(series, "axon_store_commit_batch_runs_total") == 0

        await asyncio.gather(  # queued together: one batch
            *(
                store.commit(f"c{i}", agent_id="a", expected_revision=0, messages=b"[]")
                for i in range(5)
            )
        )
        await store.commit("c0", agent_id="a", expected_revision=1, messages=b"[]")  # alone
        series = scrape(metrics)
        assert value(series, "axon_store_commit_batches_total") == 2
        assert value(series, "axon_store_commit_batch_runs_total") == 6
    finally:
        await store.close()


def test_a_store_that_does_not_group_exports_no_batch_counters() -> None:
    series = scrape(Runtime("a").metrics)
    assert not [name for name, _ in series if name.startswith("axon_store_commit_batch")]


def test_worker_resources_are_exported_per_slot() -> None:
    rt = Runtime("a")
    me = os.getpid()  # a real live process standing in for a worker
    slots = [worker(0, "running", pid=me), worker(1, "backoff", pid=me)]
    rt.status = [AgentStatus("a", "running", 0, workers=slots)]
    series = scrape(rt.metrics)
    cpu = value(series, "axon_worker_cpu_seconds_total", agent="a", worker="0")
    assert cpu is not None
    assert cpu > 0
    rss = value(series, "axon_worker_resident_memory_bytes", agent="a", worker="0")
    assert rss is not None
    assert rss > 10_000_000
    # A slot with no live process keeps its CPU counter (0 here) and has no RSS sample.
    assert value(series, "axon_worker_cpu_seconds_total", agent="a", worker="1") == 0
    assert value(series, "axon_worker_resident_memory_bytes", agent="a", worker="1") is None


def test_the_orchestrators_own_process_and_python_metrics_are_included() -> None:
    series = scrape(Runtime("a").metrics)
    names = {name for name, _ in series}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert "python_gc_objects_collected_total" in names


def test_runtimes_in_one_process_keep_separate_counts() -> None:
    first, second = Runtime("a"), Runtime("a")
    run_finished(first.bus, "a", "ok", 0.1)
    run_finished(first.bus, "a", "ok", 0.1)
    run_finished(second.bus, "a", "ok", 0.1)
    assert value(scrape(first.metrics), "axon_runs_total", agent="a", outcome="ok") == 2
    assert value(scrape(second.metrics), "axon_runs_total", agent="a", outcome="ok") == 1


def test_a_malformed_event_does_not_break_the_emitter(caplog: pytest.LogCaptureFixture) -> None:
    rt = Runtime("a")
    fields: dict[str, Any] = {"agent": "a"}  # no outcome: a bug somewhere, not a crash here
    with caplog.at_level(logging.ERROR, logger="axon"):
        rt.bus.emit("run.finished", logging.INFO, **fields)
    assert any("failed on run.finished" in r.getMessage() for r in caplog.records)
    run_finished(rt.bus, "a", "ok", 0.1)
    assert value(scrape(rt.metrics), "axon_runs_total", agent="a", outcome="ok") == 1


async def test_scrape_reads_the_runtime_on_the_loop_and_formats_elsewhere() -> None:
    import threading

    from axon.observability.events import EventBus
    from axon.observability.metrics import RuntimeMetrics
    from axon.observability.resources import WorkerResources
    from axon.status import AgentStatus

    callers: list[int] = []

    def agents() -> list[AgentStatus]:
        callers.append(threading.get_ident())
        return [AgentStatus(id="a", state="running", restarts=0, queued=4)]

    metrics = RuntimeMetrics(EventBus(), agents, ["a"], WorkerResources())
    body, content_type = await metrics.scrape()
    assert callers == [threading.get_ident()]  # read once, on the event loop's thread
    assert 'axon_run_queue_depth{agent="a"} 4.0' in body.decode()
    assert content_type.startswith("text/plain")
    assert body.decode().splitlines()[:40] == metrics.exposition()[0].decode().splitlines()[:40]
