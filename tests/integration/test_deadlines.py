"""Guarantee 4, deadlines: every request ends by its deadline (success or ``AgentTimeout``), and a
worker that stops answering heartbeats or ignores cancellation is killed and restarted.

Real worker processes running the misbehaving example agent. Time bounds are upper bounds derived
from the configured deadlines plus a generous grace for a loaded machine, never speed claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest

from axon import AgentCrashed, AgentSpec, AgentTimeout, Axon, InvalidRequest, SupervisorSpec
from axon.testing import (
    EventLog,
    capture_events,
    kill_worker,
    user_prompts,
    wait_until,
    wait_until_serving,
    worker_pids,
)

from ..conftest import FAST, MISBEHAVING, StartAxon, pid_alive

GRACE = 2.0
"""Slack on top of a deadline before we call a late answer a bug (loaded 2-core CI)."""

# Fast hang detection, and a cancel grace long enough that the heartbeat check kills first.
HUNG = SupervisorSpec(
    **{
        **FAST.model_dump(),
        "heartbeat_interval": 0.2,
        "heartbeat_timeout": 1.0,
        "cancel_grace": 10.0,
    }
)


async def warm_up(axon: Axon, agent_id: str) -> None:
    """One run first, so the next run reaches the agent's code well within a 0.5 s deadline.

    A fresh worker's first run does one-time work (lazy imports, schema building) that can take
    longer than that on a loaded machine; a cancel arriving before the misbehaving code starts
    is honoured at once, and the fault under test would never happen.
    """
    assert (await axon.send_message(agent_id, "warm-up")).output == "echo: warm-up"


def _process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0]
    except FileNotFoundError:
        return None


# -- a run past its deadline --------------------------------------------------------------------


async def test_run_past_its_deadline_times_out_is_cancelled_in_the_worker_and_commits_nothing(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING))
    await axon.send_message("m", "before", conversation_id="c")
    (pid,) = worker_pids(axon, "m")

    started = time.monotonic()
    with pytest.raises(AgentTimeout) as info:
        await axon.send_message("m", "sleep:10", conversation_id="c", timeout=0.5)
    elapsed = time.monotonic() - started
    assert info.value.timeout == 0.5
    assert info.value.agent_id == "m"
    assert 0.45 <= elapsed < 0.5 + GRACE, elapsed
    assert events.find("run.timeout", agent="m", conversation="c", timeout_s=0.5)

    # The run ends in the worker (it honoured the cancel) well before its 10 s sleep is up, and
    # the worker was not killed for it.
    status = await wait_until(axon, "m", lambda s: s.in_flight == 0, timeout=5.0)
    assert status.workers[0].pid == pid
    assert status.workers[0].state == "running"
    assert pid_alive(pid)

    # Nothing of the timed-out run was committed; the same process serves the next request.
    assert user_prompts(await axon.history("c")) == ["before"]
    reply = await axon.send_message("m", "after", conversation_id="c")
    assert reply.output == "echo: after"
    assert user_prompts(await axon.history("c")) == ["before", "after"]
    assert worker_pids(axon, "m") == [pid]
    assert axon.agent("m").restarts == 0
    assert not events.find("worker.kill", agent="m")


async def test_agent_timeout_is_the_default_and_a_per_call_timeout_overrides_it(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING, timeout=0.5, max_timeout=10))

    started = time.monotonic()
    with pytest.raises(AgentTimeout) as info:
        await axon.send_message("m", "sleep:10", conversation_id="d")
    assert info.value.timeout == 0.5
    assert time.monotonic() - started < 0.5 + GRACE

    # A per-call timeout longer than the agent's default lets a 1 s run finish.
    reply = await axon.send_message("m", "sleep:1", conversation_id="o", timeout=5)
    assert reply.output == "slept 1"

    # Up to max_timeout is allowed; above it is rejected before anything runs.
    assert (await axon.send_message("m", "hi", timeout=10)).output == "echo: hi"
    with pytest.raises(InvalidRequest) as bad:
        await axon.send_message("m", "hi", conversation_id="x", timeout=10.5)
    assert bad.value.field == "timeout"
    assert await axon.history("x") == []
    assert user_prompts(await axon.history("d")) == []


# -- hung workers ---------------------------------------------------------------------------------


async def test_hung_worker_times_out_the_caller_then_is_killed_and_replaced(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING), supervisor=HUNG)
    (pid,) = worker_pids(axon, "m")
    await warm_up(axon, "m")

    started = time.monotonic()
    with pytest.raises(AgentTimeout) as info:
        await axon.send_message("m", "hang:60", conversation_id="c", timeout=0.5)
    assert info.value.timeout == 0.5
    assert time.monotonic() - started < 0.5 + GRACE

    status = await wait_until_serving(axon, "m", replaced=[pid], timeout=30)
    assert events.find("worker.hung", agent="m", pid=pid)
    kills = events.find("worker.kill", agent="m", pid=pid)
    assert kills
    assert "hung" in kills[0].fields["reason"]
    last_exit = status.workers[0].last_exit
    assert last_exit is not None
    assert (last_exit.pid, last_exit.signal) == (pid, signal.SIGKILL)
    assert not pid_alive(pid)

    assert (await axon.send_message("m", "again", conversation_id="c")).output == "echo: again"
    assert user_prompts(await axon.history("c")) == ["again"]


async def test_hung_worker_is_killed_by_heartbeat_long_before_a_long_deadline(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING), supervisor=HUNG)
    (pid,) = worker_pids(axon, "m")

    started = time.monotonic()
    with pytest.raises(AgentCrashed) as info:
        await axon.send_message("m", "hang:60", conversation_id="c", timeout=30)
    elapsed = time.monotonic() - started
    # Detected after heartbeat_timeout of silence (checked every heartbeat_interval).
    assert elapsed < HUNG.heartbeat_timeout + HUNG.heartbeat_interval + GRACE, elapsed
    crash = info.value
    assert crash.pid == pid
    assert crash.signal == signal.SIGKILL
    assert crash.signal_name == "SIGKILL"
    assert "hung" in (crash.reason or "")
    assert events.find("worker.hung", agent="m", pid=pid)

    await wait_until_serving(axon, "m", replaced=[pid], timeout=30)
    assert user_prompts(await axon.history("c")) == []
    assert (await axon.send_message("m", "again")).output == "echo: again"


async def test_stopped_worker_stops_heartbeating_and_is_killed_and_replaced(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING), supervisor=HUNG)
    (pid,) = worker_pids(axon, "m")
    try:
        assert kill_worker(axon, "m", sig=signal.SIGSTOP) == pid
        # A run sent to the frozen worker ends with AgentCrashed once it is killed, not at its
        # (long) deadline.
        started = time.monotonic()
        with pytest.raises(AgentCrashed) as info:
            await axon.send_message("m", "frozen", conversation_id="c", timeout=30)
        assert time.monotonic() - started < HUNG.heartbeat_timeout + GRACE
        assert info.value.signal == signal.SIGKILL

        status = await wait_until_serving(axon, "m", replaced=[pid], timeout=30)
        assert events.find("worker.hung", agent="m", pid=pid)
        last_exit = status.workers[0].last_exit
        assert last_exit is not None
        assert (last_exit.pid, last_exit.signal) == (pid, signal.SIGKILL)
        assert not pid_alive(pid)  # SIGKILL works on a stopped process

        assert (await axon.send_message("m", "thawed", conversation_id="c")).output == (
            "echo: thawed"
        )
        assert user_prompts(await axon.history("c")) == ["thawed"]
    finally:
        if _process_state(pid) == "T":  # never leave a stopped process behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- a run that ignores cancellation --------------------------------------------------------------


async def test_run_ignoring_cancel_is_killed_after_the_grace_and_replaced(
    start_axon: StartAxon, events: EventLog
) -> None:
    supervision = SupervisorSpec(**{**FAST.model_dump(), "cancel_grace": 0.5})
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING), supervisor=supervision)
    (pid,) = worker_pids(axon, "m")
    await warm_up(axon, "m")

    started = time.monotonic()
    with pytest.raises(AgentTimeout) as info:
        await axon.send_message("m", "ignore-cancel:30", conversation_id="c", timeout=0.5)
    timed_out = time.monotonic()
    assert info.value.timeout == 0.5
    assert timed_out - started < 0.5 + GRACE

    status = await wait_until_serving(axon, "m", replaced=[pid], timeout=30)
    kills = events.find("worker.kill", agent="m", pid=pid)
    assert kills
    killed_at = kills[0].monotonic
    assert "cancel" in kills[0].fields["reason"]
    # Killed only once the grace was up, and not much later.
    assert killed_at - timed_out >= supervision.cancel_grace - 0.05
    assert killed_at - timed_out < supervision.cancel_grace + GRACE
    assert not events.find("worker.hung", agent="m")  # its loop stayed responsive
    last_exit = status.workers[0].last_exit
    assert last_exit is not None
    assert (last_exit.pid, last_exit.signal) == (pid, signal.SIGKILL)
    assert "cancel" in (last_exit.reason or "")

    assert (await axon.send_message("m", "next", conversation_id="c")).output == "echo: next"
    assert user_prompts(await axon.history("c")) == ["next"]


# -- isolation ----------------------------------------------------------------------------------


async def test_other_agents_answer_while_one_agents_worker_is_hung(
    start_axon: StartAxon, events: EventLog
) -> None:
    slow_detection = SupervisorSpec(
        **{**HUNG.model_dump(), "heartbeat_interval": 0.2, "heartbeat_timeout": 2.0}
    )
    axon = await start_axon(
        AgentSpec(id="stuck", agent=MISBEHAVING, supervisor=slow_detection),
        AgentSpec(id="fine", agent=MISBEHAVING),
    )
    (stuck_pid,) = worker_pids(axon, "stuck")
    (fine_pid,) = worker_pids(axon, "fine")
    hung = events.waiter("worker.hung", agent="stuck", pid=stuck_pid)

    stuck = asyncio.create_task(axon.send_message("stuck", "hang:60", timeout=30))
    answered: list[float] = []
    async with asyncio.timeout(30):
        while not hung.is_set():
            reply = await axon.send_message("fine", "sleep:0.05", timeout=5)
            assert reply.output == "slept 0.05"
            answered.append(time.monotonic())

    # The stuck worker's loop was blocked from at most one heartbeat after its last pong until
    # it was declared hung: the other agent answered during that window.
    (hung_event,) = events.find("worker.hung", agent="stuck", pid=stuck_pid)
    detected_at = hung_event.monotonic
    blocked_from = (
        detected_at - hung_event.fields["silent_s"] + slow_detection.heartbeat_interval + 0.1
    )
    during_hang = [t for t in answered if blocked_from <= t <= detected_at]
    assert len(during_hang) >= 3, (len(answered), during_hang)

    with pytest.raises(AgentCrashed):
        await asyncio.wait_for(stuck, timeout=10)
    await wait_until_serving(axon, "stuck", replaced=[stuck_pid], timeout=30)
    assert (await axon.send_message("stuck", "back")).output == "echo: back"
    assert worker_pids(axon, "fine") == [fine_pid]
    assert axon.agent("fine").restarts == 0
    assert (await axon.send_message("fine", "still here")).output == "echo: still here"


async def test_a_worker_not_ready_within_startup_timeout_is_killed(start_axon: StartAxon) -> None:
    with capture_events() as events:
        axon = await start_axon(
            AgentSpec(
                id="slow",
                agent="axon.examples.misbehaving:slow_startup",
                env={"AXON_STARTUP_DELAY": "60"},
            ),
            supervisor=FAST.model_copy(update={"startup_timeout": 1.0, "max_restarts": 0}),
        )
        assert axon.agent("slow").state == "failed"
        kill = events.find("worker.kill", agent="slow")
        assert kill
        assert kill[0].fields["reason"] == "not ready within 1s"
        (exit_,) = events.find("worker.exit", agent="slow")
        assert (exit_.fields["cause"], exit_.fields["signal"]) == ("startup_timeout", 9)


async def test_startup_timeout_does_not_apply_once_the_worker_is_ready(
    start_axon: StartAxon,
) -> None:
    timeout = 4.0
    with capture_events() as events:
        axon = await start_axon(
            AgentSpec(id="m", agent=MISBEHAVING),
            supervisor=FAST.model_copy(update={"startup_timeout": timeout}),
        )
        (pid,) = worker_pids(axon, "m")
        (spawned,) = events.find("worker.start", agent="m")
        # Nothing may happen when the start-up timeout comes due for a worker that is ready;
        # this waits out that moment (the assertion is about time passing, not a sync point).
        await asyncio.sleep(spawned.monotonic + timeout + 0.5 - time.monotonic())
        assert not events.find("worker.kill")
        assert not events.find("worker.exit")
    assert worker_pids(axon, "m") == [pid]
    assert (await axon.send_message("m", "still here")).output == "echo: still here"
