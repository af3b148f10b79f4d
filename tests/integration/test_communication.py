"""The seed's communication failures: the link between orchestrator and worker breaks."""

from __future__ import annotations

import asyncio

import pytest

from axon import AgentCrashed, AgentSpec
from axon.testing import cut_connection, user_prompts, wait_until, wait_until_serving

from ..conftest import MISBEHAVING, StartAxon


async def test_cut_connection_mid_run_fails_the_run_and_the_worker_is_replaced(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING), AgentSpec(id="other", agent=MISBEHAVING)
    )
    await axon.send_message("m", "before", conversation_id="c")
    run = asyncio.ensure_future(axon.send_message("m", "sleep:30", conversation_id="c"))
    await wait_until(axon, "m", lambda s: s.in_flight == 1, timeout=10)
    pid = cut_connection(axon, "m")
    with pytest.raises(AgentCrashed) as caught:
        await asyncio.wait_for(run, 10)
    assert caught.value.pid == pid
    # The worker saw EOF without a shutdown frame: an abnormal exit, so it is restarted.
    status = await wait_until_serving(axon, "m", replaced=[pid])
    assert status.recent_exits[-1].exit_code == 5
    assert (await axon.send_message("m", "after", conversation_id="c")).output == "echo: after"
    assert user_prompts(await axon.history("c")) == ["before", "after"]
    assert (await axon.send_message("other", "hi")).output == "echo: hi"


async def test_cut_connection_of_an_idle_worker_recovers_without_a_request_failing(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING, workers=2))
    pid = cut_connection(axon, "m", index=1)
    # Worker 0 keeps serving while worker 1 is replaced.
    replies = await asyncio.gather(*(axon.send_message("m", f"p{i}") for i in range(10)))
    assert [r.output for r in replies] == [f"echo: p{i}" for i in range(10)]
    await wait_until_serving(axon, "m", replaced=[pid])
