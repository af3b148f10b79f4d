"""Stopping the runtime: graceful by default, escalated when a worker does not listen, and in
every agent state it leaves no worker process behind (real worker processes).

Every wait is on an event (a state change or a log event), never on a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import pytest

from axon import AgentCrashed, AgentSpec, Axon, SupervisorSpec
from axon.testing import EventLog, wait_until, worker_pids

from ..conftest import FAST, MISBEHAVING, StartAxon, all_worker_pids, pid_alive


def supervision(**overrides: Any) -> SupervisorSpec:
    return SupervisorSpec(**{**FAST.model_dump(), **overrides})


def misbehaving(agent_id: str, **kw: Any) -> AgentSpec:
    return AgentSpec(id=agent_id, agent=MISBEHAVING, **kw)


def exits_by_pid(events: EventLog, since: int) -> dict[int, tuple[int | None, int | None]]:
    """``{pid: (exit_code, signal)}`` of the ``worker.exit`` events logged since ``since``."""
    out: dict[int, tuple[int | None, int | None]] = {}
    for record in events.find("worker.exit", since=since):
        facts = record.fields
        assert facts["pid"] not in out, f"two exits for pid {facts['pid']}"
        out[facts["pid"]] = (facts["exit_code"], facts["signal"])
    return out


def assert_all_stopped(axon: Axon) -> None:
    for agent in axon.agents():
        assert agent.state == "stopped", agent
        assert [w.state for w in agent.workers] == ["stopped"] * len(agent.workers), agent


async def test_graceful_stop_leaves_no_worker_process_behind(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(misbehaving("a", workers=2), misbehaving("b"))
    pids = all_worker_pids(axon)
    assert len(pids) == 3
    assert all(pid_alive(pid) for pid in pids)

    mark = events.mark()
    await axon.stop()

    assert not [pid for pid in pids if pid_alive(pid)]
    assert_all_stopped(axon)
    # Every worker left on the shutdown frame, by itself: exit code 0, no signal, no kill.
    assert exits_by_pid(events, mark) == {pid: (0, None) for pid in pids}
    assert all(r.levelno == logging.INFO for r in events.find("worker.exit", since=mark))
    assert events.find("worker.kill", since=mark) == []
    assert events.find("worker.start", since=mark) == []


async def test_a_run_in_flight_finishes_during_a_graceful_stop(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(misbehaving("a"))
    pid = worker_pids(axon, "a")[0]
    assert pid is not None

    mark = events.mark()
    run = asyncio.create_task(axon.send_message("a", "sleep:0.5", conversation_id="c"))
    await events.wait_for("run.routed", since=mark, agent="a", conversation="c")
    assert not run.done()
    await axon.stop()

    reply = await run  # the worker let it finish within the shutdown grace
    assert reply.output == "slept 0.5"
    assert reply.conversation_id == "c"
    assert not pid_alive(pid)
    assert exits_by_pid(events, mark) == {pid: (0, None)}


async def test_a_run_longer_than_the_heartbeat_timeout_still_finishes_at_stop(
    start_axon: StartAxon, events: EventLog
) -> None:
    # While a worker drains at stop it reads no pings; the stop's own timeout governs it, so
    # it must not be killed as hung (heartbeat_timeout 1 s < run 2.5 s < shutdown_timeout 15 s).
    axon = await start_axon(
        misbehaving("a"),
        supervisor=supervision(heartbeat_interval=0.2, heartbeat_timeout=1.0, shutdown_timeout=15),
    )
    pid = worker_pids(axon, "a")[0]
    mark = events.mark()
    run = asyncio.create_task(axon.send_message("a", "sleep:2.5", conversation_id="c"))
    await events.wait_for("run.routed", since=mark, agent="a", conversation="c")
    await axon.stop()
    assert (await run).output == "slept 2.5"
    assert events.find("worker.hung", since=mark) == []
    assert events.find("worker.kill", since=mark) == []
    assert exits_by_pid(events, mark) == {pid: (0, None)}


async def test_a_blocked_worker_is_escalated_at_stop(
    start_axon: StartAxon, events: EventLog
) -> None:
    # Heartbeats so lax that only the stop's escalation can end the hung worker in time.
    lax = supervision(shutdown_timeout=0.5, heartbeat_timeout=600)
    axon = await start_axon(misbehaving("a"), supervisor=lax)
    await axon.send_message("a", "warm-up")  # the worker's first run pays for lazy imports
    pid = worker_pids(axon, "a")[0]
    assert pid is not None

    mark = events.mark()
    run = asyncio.create_task(axon.send_message("a", "hang:30", conversation_id="c"))
    await events.wait_for("run.routed", since=mark, agent="a", conversation="c")
    # The worker's loop is blocked for 30 s: it cannot act on the shutdown frame, so the stop
    # must escalate to SIGTERM (then SIGKILL) rather than wait for the hang to end.
    await axon.stop()

    assert not pid_alive(pid)
    assert_all_stopped(axon)
    code, sig = exits_by_pid(events, mark)[pid]
    assert code is None
    assert sig in (signal.SIGTERM, signal.SIGKILL)
    assert events.find("worker.hung", since=mark) == []
    with pytest.raises(AgentCrashed) as info:
        await run
    assert (info.value.pid, info.value.signal) == (pid, sig)


async def test_stop_while_a_worker_waits_in_backoff(
    start_axon: StartAxon, events: EventLog
) -> None:
    # A backoff far longer than the test: the stop must not wait for it, nor start the worker.
    slow = supervision(backoff_initial=600, backoff_max=600)
    axon = await start_axon(misbehaving("a", workers=2, supervisor=slow))
    pids = [worker_pids(axon, "a")[i] for i in range(2)]
    with pytest.raises(AgentCrashed):
        await axon.send_message("a", "crash")  # lands on worker 0
    status = axon.agent("a")
    assert [w.state for w in status.workers] == ["backoff", "running"]
    assert status.state == "restarting"

    mark = events.mark()
    await axon.stop()

    assert not [pid for pid in pids if pid is not None and pid_alive(pid)]
    assert_all_stopped(axon)
    assert events.find("worker.start", since=mark) == []
    assert exits_by_pid(events, mark) == {pids[1]: (0, None)}


async def test_stop_while_an_agent_is_failed(start_axon: StartAxon, events: EventLog) -> None:
    never = supervision(max_restarts=0, failed_cooldown=600)
    axon = await start_axon(misbehaving("a", workers=2, supervisor=never), misbehaving("b"))
    pids = all_worker_pids(axon)
    b_pid = worker_pids(axon, "b")[0]
    with pytest.raises(AgentCrashed):
        await axon.send_message("a", "crash")
    assert axon.agent("a").state == "failed"

    mark = events.mark()
    await axon.stop()

    assert not [pid for pid in pids if pid_alive(pid)]
    assert_all_stopped(axon)
    assert events.find("worker.start", since=mark) == []
    assert exits_by_pid(events, mark)[b_pid] == (0, None)  # the healthy agent stops gracefully


async def test_a_cancelled_start_leaves_no_worker_behind() -> None:
    # An agent that keeps failing start-up keeps ``start()`` waiting; cancelling the
    # ``async with`` must stop whatever was spawned.
    spec = AgentSpec(id="never", agent="axon.examples.misbehaving:raise_at_startup")
    axon = Axon([spec], supervisor=supervision(max_restarts=1000, backoff_max=0.05))

    async def enter() -> None:
        async with axon:
            raise AssertionError("start() cannot succeed for this agent")

    task = asyncio.create_task(enter())
    await asyncio.sleep(0)  # let start() create the supervisors (it then awaits their start)
    status = await wait_until(axon, "never", lambda s: any(w.pid for w in s.workers))
    seen = {w.pid for w in status.workers if w.pid is not None}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen |= all_worker_pids(axon)
    assert not [pid for pid in seen if pid_alive(pid)]
    assert all(a.state == "stopped" for a in axon.agents())
