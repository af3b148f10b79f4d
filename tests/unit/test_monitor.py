"""The dashboard's monitor fed with real events on a real ``EventBus``, emitted with the names,
levels and fields the runtime uses, on a clock the tests move: the timeline's buckets, error
counts and latency percentiles, the feed's ring and ``since`` cursor, bucket roll-over, and the
sampled gauges (in flight, queued, a real process's CPU % and RSS)."""

from __future__ import annotations

import json
import logging
import math
import os
import time

import psutil
import pytest

from axon.observability.events import EventBus
from axon.observability.monitor import LatencyHistogram, Monitor
from axon.observability.resources import WorkerResources
from axon.status import AgentStatus, ExitRecord, WorkerStatus
from axon.testing import FakeClock

T0 = 1_800_000_000.0  # a whole second: bucket boundaries fall on whole seconds
_QUIET = {"ok", "cancelled", "conversation_busy", "run_interrupted"}


def run_finished(bus: EventBus, outcome: str, latency_s: float, agent: str = "a") -> None:
    """``run.finished`` as ``Axon._run`` emits it."""
    bus.emit(
        "run.finished",
        logging.INFO if outcome in _QUIET else logging.WARNING,
        agent=agent,
        conversation="c-1",
        run=1,
        pid=4242,
        outcome=outcome,
        latency_s=latency_s,
        ttft_s=None,
        commit_s=0.001 if outcome == "ok" else None,
    )


def worker_exit(bus: EventBus, cause: str, pid: int = 4242) -> None:
    """``worker.exit`` as ``WorkerProcess`` emits it."""
    bus.emit(
        "worker.exit",
        logging.INFO if cause == "requested" else logging.WARNING,
        agent="a",
        worker=0,
        pid=pid,
        exit_code=None if cause != "requested" else 0,
        signal=9 if cause != "requested" else None,
        reason="killed" if cause != "requested" else "stop requested",
        cause=cause,
        was_ready=True,
    )


def make(
    clock: FakeClock,
    agents: list[AgentStatus] | None = None,
    **options: float,
) -> tuple[EventBus, Monitor]:
    bus = EventBus()
    statuses = agents or []
    monitor = Monitor(bus, lambda: statuses, WorkerResources(), clock=clock, **options)  # type: ignore[arg-type]
    return bus, monitor


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_buckets_count_runs_and_errors_per_second() -> None:
    clock = FakeClock(T0 + 0.2)
    bus, monitor = make(clock)
    for outcome in ("ok", "ok", "ok", "agent_crashed", "cancelled"):
        run_finished(bus, outcome, 0.010)
    clock.advance(1.0)  # the next second
    for outcome in ("ok", "agent_timeout", "overloaded", "conversation_busy"):
        run_finished(bus, outcome, 0.020)

    # The current second is still filling: the series ends before it.
    during = monitor.snapshot()
    assert during["series"]["requests"][-1] == 5
    assert during["series"]["errors"][-1] == 1
    assert during["series"]["t"][-1] == T0

    clock.advance(1.0)
    snap = monitor.snapshot()
    series = snap["series"]
    assert len(series["t"]) == 600
    assert series["t"][-2:] == [T0, T0 + 1]
    assert series["requests"][-2:] == [5, 4]
    assert series["errors"][-2:] == [1, 3]  # cancelled is no error; conversation_busy is
    assert series["requests"][:-2] == [0] * 598
    assert series["p50_s"][:-2] == [None] * 598
    assert snap["totals"] == {
        "requests": 9,
        "errors": 4,
        "outcomes": {
            "ok": 4,
            "agent_crashed": 1,
            "cancelled": 1,
            "agent_timeout": 1,
            "overloaded": 1,
            "conversation_busy": 1,
        },
        "restarts": 0,
        "crashes": 0,
    }
    now = snap["now"]
    assert now["window_s"] == 10
    assert now["requests_per_s"] == 0.9
    assert now["errors_per_s"] == 0.4
    assert now["error_ratio"] == round(4 / 9, 4)
    # Only successful runs count towards latency: 3 at 10 ms, 1 at 20 ms.
    assert now["p50_s"] == pytest.approx(0.010, rel=0.05)
    assert now["p99_s"] == pytest.approx(0.020, rel=0.05)
    assert series["p50_s"][-1] == 0.02  # one sample: the exact value (min = max)
    json.dumps(snap, allow_nan=False)  # JSON-able as it is


def test_percentiles_are_within_five_percent() -> None:
    clock = FakeClock(T0)
    bus, monitor = make(clock)
    # A skewed, LLM-like spread: 1 ms to ~40 s, deterministic.
    latencies = [0.001 * 1.009**i for i in range(1000)]
    latencies = latencies[::2] + latencies[1::2]  # not in order
    for latency in latencies:
        run_finished(bus, "ok", latency)
    clock.advance(1.0)
    series = monitor.snapshot()["series"]
    for q, column in ((0.5, "p50_s"), (0.99, "p99_s")):
        exact = nearest_rank(latencies, q)
        assert series[column][-1] == pytest.approx(exact, rel=0.05), (q, exact)

    histogram = LatencyHistogram()
    histogram.add(0.00005)  # below the first bin's edge (0.1 ms) ...
    assert histogram.quantile(0.5) == 0.00005  # ... clamped to the exact minimum
    histogram.add(0.00007)
    histogram.add(5000.0)  # past the last bin
    assert histogram.quantile(0.5) == LatencyHistogram.LOWEST  # the first bin: "0.1 ms or less"
    assert histogram.quantile(1.0) == 5000.0  # clamped to the exact maximum
    assert LatencyHistogram().quantile(0.5) is None


def test_percentiles_merge_across_buckets() -> None:
    clock = FakeClock(T0)
    bus, monitor = make(clock)
    values: list[float] = []
    for second in range(10):
        for i in range(20):
            value = 0.005 * (second + 1) + 0.0001 * i
            values.append(value)
            run_finished(bus, "ok", value)
        clock.advance(1.0)
    now = monitor.snapshot()["now"]
    assert now["requests_per_s"] == 20.0
    assert now["p50_s"] == pytest.approx(nearest_rank(values, 0.5), rel=0.05)
    assert now["p99_s"] == pytest.approx(nearest_rank(values, 0.99), rel=0.05)
    clock.advance(10.0)  # ten quiet seconds later, "now" is quiet
    quiet = monitor.snapshot()["now"]
    assert quiet["requests_per_s"] == 0
    assert quiet["p50_s"] is None
    assert quiet["error_ratio"] is None


def test_buckets_roll_over_and_memory_stays_bounded() -> None:
    clock = FakeClock(T0)
    bus, monitor = make(clock, window_s=10, bucket_s=2)
    run_finished(bus, "ok", 0.1)
    run_finished(bus, "agent_crashed", 0.1)
    clock.advance(2.0)
    series = monitor.snapshot()["series"]
    assert series["t"] == [T0 - 8, T0 - 6, T0 - 4, T0 - 2, T0]
    assert series["requests"] == [0, 0, 0, 0, 1.0]  # per second: 2 runs in a 2-second bucket
    assert series["errors"] == [0, 0, 0, 0, 0.5]

    clock.advance(8.0)  # the bucket at T0 leaves the window ...
    run_finished(bus, "ok", 0.3)  # ... and its slot is reused for T0 + 10
    clock.advance(2.0)
    series = monitor.snapshot()["series"]
    assert series["t"] == [T0 + 2, T0 + 4, T0 + 6, T0 + 8, T0 + 10]
    assert series["requests"] == [0, 0, 0, 0, 0.5]
    assert series["errors"] == [0, 0, 0, 0, 0]
    assert series["p50_s"] == [None, None, None, None, 0.3]

    # A day of traffic keeps as many buckets as the window holds.
    for _ in range(3000):
        run_finished(bus, "ok", 0.1)
        clock.advance(29.0)
    assert len(monitor._slots) == 5  # pyright: ignore[reportPrivateUsage]
    assert monitor.snapshot()["totals"]["requests"] == 3003


def test_feed_keeps_notable_events_in_a_bounded_ring() -> None:
    clock = FakeClock(T0)
    bus, monitor = make(clock, feed_size=5)
    worker_exit(bus, "requested")  # a stop asked for: no crash
    bus.emit("worker.output", logging.INFO, agent="a", worker=0, pid=1, stream="stdout", line="x")
    bus.emit("run.routed", logging.DEBUG, agent="a", worker=0, pid=1, run=1, conversation="c")
    run_finished(bus, "agent_crashed", 0.1)
    assert monitor.snapshot()["events"] == []
    assert monitor.snapshot()["last_seq"] == 0

    worker_exit(bus, "crashed", pid=101)
    clock.advance(0.5)
    bus.emit(
        "agent.restart", logging.WARNING, agent="a", worker=0, attempt=1, delay_s=0.05,
        cause="signal SIGKILL",
    )  # fmt: skip
    bus.emit("agent.state", logging.INFO, agent="a", previous="running", state="restarting")
    bus.emit("run.timeout", logging.WARNING, agent="a", conversation="c-1", timeout_s=2.0)
    bus.emit("worker.hung", logging.ERROR, agent="a", worker=0, pid=101, silent_s=4.2)
    bus.emit("worker.kill", logging.WARNING, agent="a", worker=0, pid=101, reason="hung")
    bus.emit("protocol.error", logging.ERROR, agent="a", worker=0, pid=101, message="<b>" * 200)
    bus.emit("agent.failed", logging.ERROR, agent="a", restarts=5, window_s=10.0, cooldown_s=30.0)

    snap = monitor.snapshot()
    assert snap["last_seq"] == 8
    assert [e["seq"] for e in snap["events"]] == [4, 5, 6, 7, 8]  # the ring kept the last 5
    assert [e["event"] for e in snap["events"]] == [
        "run.timeout",
        "worker.hung",
        "worker.kill",
        "protocol.error",
        "agent.failed",
    ]
    first = snap["events"][0]
    assert first == {
        "seq": 4,
        "time": T0 + 0.5,
        "level": "warning",
        "event": "run.timeout",
        "fields": {"agent": "a", "conversation": "c-1", "timeout_s": 2.0},
    }
    message = snap["events"][3]["fields"]["message"]
    assert len(message) == 500  # a long field is cut
    assert message.endswith("...")
    assert snap["events"][4]["level"] == "error"
    assert snap["totals"]["crashes"] == 1
    assert snap["totals"]["restarts"] == 1

    assert [e["seq"] for e in monitor.snapshot(since=6)["events"]] == [7, 8]
    assert monitor.snapshot(since=8)["events"] == []
    assert [e["seq"] for e in monitor.snapshot(since=0)["events"]] == [4, 5, 6, 7, 8]
    # A cursor beyond the last seq (the server restarted under the client): everything kept.
    assert [e["seq"] for e in monitor.snapshot(since=99)["events"]] == [4, 5, 6, 7, 8]


def test_feed_survives_a_sink_error_elsewhere() -> None:
    """Another broken sink on the same bus does not stop the monitor's feed."""
    clock = FakeClock(T0)
    bus, monitor = make(clock)

    def broken(event: str, level: int, fields: object) -> None:
        raise RuntimeError("broken view")

    bus.subscribe(broken)
    worker_exit(bus, "crashed")
    assert [e["event"] for e in monitor.snapshot()["events"]] == ["worker.exit"]


def _status(pid: int | None, state: str, in_flight: int, queued: int) -> AgentStatus:
    exit_ = ExitRecord(signal=9, cause="crashed", reason="killed", pid=99, worker=0, at=T0)
    return AgentStatus(
        id="a",
        state="running",
        restarts=1,
        workers=[WorkerStatus(0, pid, state, 2, 1, in_flight, exit_)],
        recent_exits=[exit_],
        queued=queued,
    )


def test_samples_in_flight_queued_cpu_and_rss_of_a_real_process() -> None:
    clock = FakeClock(T0)
    statuses = [_status(os.getpid(), "running", in_flight=3, queued=2)]
    _, monitor = make(clock, statuses)
    monitor.sample()
    first = monitor.snapshot()["agents"][0]["workers"][0]
    assert first["cpu_percent"] is None  # one sample: no rate yet
    assert first["rss_bytes"] == pytest.approx(psutil.Process().memory_info().rss, rel=0.1)

    cpu_before = time.process_time()
    busy_until = cpu_before + 0.3
    while time.process_time() < busy_until:  # burn 0.3 s of CPU in this very process
        pass
    burned = time.process_time() - cpu_before
    clock.advance(1.0)  # ... over one (fake) second: about 30 %
    monitor.sample()
    worker = monitor.snapshot()["agents"][0]["workers"][0]
    assert worker["cpu_percent"] == pytest.approx(100 * burned, abs=3.0)
    assert worker["pid"] == os.getpid()

    clock.advance(1.0)
    snap = monitor.snapshot()
    assert snap["series"]["in_flight"][-3:] == [None, 3, 3]  # sampled at T0 and T0 + 1
    assert snap["series"]["queued"][-3:] == [None, 2, 2]
    assert snap["now"]["in_flight"] == 3
    assert snap["now"]["queued"] == 2
    agent = snap["agents"][0]
    plain = {**agent, "workers": [dict(w) for w in agent["workers"]]}
    for worker in plain["workers"]:
        del worker["cpu_percent"], worker["rss_bytes"]
    assert plain == statuses[0].to_dict()  # the status as ``/v1/agents`` has it, plus usage
    assert agent["in_flight"] == 3
    assert agent["queued"] == 2
    assert agent["recent_exits"][0]["cause"] == "crashed"

    # No process in the slot: no CPU or memory figures.
    statuses[0] = _status(None, "restarting", in_flight=0, queued=0)
    monitor.sample()
    worker = monitor.snapshot()["agents"][0]["workers"][0]
    assert worker["cpu_percent"] is None
    assert worker["rss_bytes"] is None


async def test_run_samples_until_cancelled() -> None:
    """``run()`` (the runtime's task) samples at once and then every ``sample_interval_s``."""
    import asyncio

    clock = FakeClock(T0)
    statuses = [_status(os.getpid(), "running", in_flight=1, queued=0)]
    sampled = asyncio.Event()
    calls = 0

    class CountingResources(WorkerResources):
        def sample(self, agents: list[AgentStatus]):  # type: ignore[override]
            nonlocal calls
            calls += 1
            clock.advance(1.0)
            if calls == 3:
                sampled.set()
            return super().sample(agents)

    bus = EventBus()
    monitor = Monitor(
        bus, lambda: statuses, CountingResources(), clock=clock, sample_interval_s=0.01
    )
    task = asyncio.create_task(monitor.run())
    await asyncio.wait_for(sampled.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert monitor.snapshot()["agents"][0]["workers"][0]["cpu_percent"] is not None


def test_rejects_a_window_without_buckets() -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        Monitor(EventBus(), list, WorkerResources(), window_s=0.5, bucket_s=1.0)
