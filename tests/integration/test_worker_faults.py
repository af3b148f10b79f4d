"""Faults a worker injects into its own runs on a signal (``axon.worker.faults``), for chaos:
SIGUSR1 makes the next run raise, SIGUSR2 makes it stall until it is cancelled. The worker
stays up, other runs are not affected, and nothing of the faulty run is committed."""

from __future__ import annotations

import signal

import pytest

from axon import AgentRunFailed, AgentSpec, AgentTimeout, Axon
from axon.testing import EventLog, capture_events, kill_worker, user_prompts, worker_pids
from axon.worker.faults import ARMED_LINE, ENV_VAR

from ..conftest import MISBEHAVING, StartAxon


async def armed(axon: Axon, events: EventLog, sig: int, fault: str) -> int:
    """Send ``sig`` to the worker and wait until it says the fault is armed; its pid."""
    mark = events.mark()
    pid = kill_worker(axon, "m", sig=sig)
    await events.wait_for(
        "worker.output", since=mark, agent="m", pid=pid, line=f"{ARMED_LINE}{fault}"
    )
    return pid


@pytest.fixture
async def axon(start_axon: StartAxon) -> Axon:
    return await start_axon(AgentSpec(id="m", agent=MISBEHAVING, env={ENV_VAR: "1"}))


async def test_sigusr1_makes_the_next_run_raise(axon: Axon) -> None:
    await axon.send_message("m", "first", conversation_id="c")
    with capture_events() as events:
        pid = await armed(axon, events, signal.SIGUSR1, "raise")
        with pytest.raises(AgentRunFailed) as failed:
            await axon.send_message("m", "second", conversation_id="c")
        assert failed.value.remote_type == "InjectedFault"
        assert (await axon.send_message("m", "third", conversation_id="c")).output == "echo: third"
        assert not events.find("worker.exit")
    assert worker_pids(axon, "m") == [pid]
    assert user_prompts(await axon.history("c")) == ["first", "third"]


async def test_sigusr2_makes_the_next_run_stall_until_it_is_cancelled(axon: Axon) -> None:
    with capture_events() as events:
        pid = await armed(axon, events, signal.SIGUSR2, "stall")
        with pytest.raises(AgentTimeout):
            await axon.send_message("m", "stalled", conversation_id="c", timeout=0.5)
        # The stall honours the cancel: the worker is not killed for ignoring it.
        assert (await axon.send_message("m", "next", conversation_id="c")).output == "echo: next"
        assert not events.find("worker.kill")
    assert worker_pids(axon, "m") == [pid]
    assert user_prompts(await axon.history("c")) == ["next"]
