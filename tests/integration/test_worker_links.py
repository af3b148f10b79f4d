"""Faults on the link between the orchestrator and a worker (``axon.chaos.link_relay``): a
slow or fragmented link still serves every run; a cut, truncated or silent one costs only the
runs on that worker, which is replaced, and no history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from axon import AgentCrashed, AgentSpec, Axon
from axon.chaos.link_relay import FaultyLinks
from axon.pool.spawner import ProcessSpawner
from axon.testing import capture_events, user_prompts, wait_until_serving, worker_pids

from ..conftest import FAST, MISBEHAVING, StartAxon


@pytest.fixture
async def linked(start_axon: StartAxon) -> AsyncIterator[tuple[Axon, FaultyLinks]]:
    links = FaultyLinks()
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING),
        AgentSpec(id="other", agent=MISBEHAVING),
        supervisor=FAST.model_copy(update={"heartbeat_timeout": 1.5}),
        spawner=ProcessSpawner(links=links),
    )
    yield axon, links
    links.close()


async def test_every_worker_talks_through_its_relay(linked: tuple[Axon, FaultyLinks]) -> None:
    axon, links = linked
    assert links.opened == 2
    relay = links.relay("m")
    before = dict(relay.forwarded)
    assert (await axon.send_message("m", "hi")).output == "echo: hi"
    assert relay.forwarded["to_worker"] > before["to_worker"]
    assert relay.forwarded["to_orchestrator"] > before["to_orchestrator"]


async def test_a_sliced_link_still_delivers_whole_frames(linked: tuple[Axon, FaultyLinks]) -> None:
    axon, links = linked
    links.relay("m").slice(size=3, pause=0.0005)
    chunks = [
        e.text
        async for e in axon.stream_message("m", "stream:4:0.01", conversation_id="s")
        if hasattr(e, "text")
    ]
    assert "".join(chunks) == "chunk-0 chunk-1 chunk-2 chunk-3 "
    assert (await axon.send_message("m", "again", conversation_id="s")).output == "echo: again"
    assert user_prompts(await axon.history("s")) == ["stream:4:0.01", "again"]


async def test_a_slow_link_adds_its_latency_and_nothing_else(
    linked: tuple[Axon, FaultyLinks],
) -> None:
    axon, links = linked
    links.relay("m").delay(0.2)
    started = time.monotonic()
    assert (await axon.send_message("m", "slow")).output == "echo: slow"
    assert time.monotonic() - started >= 0.4  # the run frame one way, the result the other
    assert axon.agent("m").restarts == 0


@pytest.mark.parametrize("fault", ["reset", "truncate"])
async def test_a_cut_link_costs_the_runs_on_that_worker_and_nothing_else(
    linked: tuple[Axon, FaultyLinks], fault: str
) -> None:
    axon, links = linked
    await axon.send_message("m", "first", conversation_id="c")
    (pid,) = worker_pids(axon, "m")
    assert pid is not None
    relay = links.relay("m")
    with capture_events() as events:
        relay.blackhole()  # hold the run frame (and the heartbeats) in the relay
        run = asyncio.ensure_future(axon.send_message("m", "second", conversation_id="c"))
        await relay.wait_seen(b"second")  # the run is in flight on this worker
        if fault == "reset":
            relay.reset()
        else:
            # Let the held bytes go, but only 5 of them: part of a frame header, then the cut.
            relay.restore()
            relay.truncate(5)
        with pytest.raises(AgentCrashed):
            await run
        await wait_until_serving(axon, "m", replaced=[pid])
        (exit_,) = events.find("worker.exit", agent="m", pid=pid)
        assert exit_.fields["cause"] in ("crashed", "connection_lost")
    assert user_prompts(await axon.history("c")) == ["first"]
    assert links.relay("m") is not relay  # the new worker has a clean link
    assert (await axon.send_message("m", "third", conversation_id="c")).output == "echo: third"
    assert user_prompts(await axon.history("c")) == ["first", "third"]
    assert axon.agent("other").restarts == 0


async def test_a_silent_link_is_a_hung_worker(linked: tuple[Axon, FaultyLinks]) -> None:
    axon, links = linked
    (pid,) = worker_pids(axon, "m")
    assert pid is not None
    with capture_events() as events:
        links.relay("m").blackhole()
        hung = await events.wait_for("worker.hung", agent="m", pid=pid, timeout=20)
        assert hung.fields["silent_s"] >= 1.5
        await wait_until_serving(axon, "m", replaced=[pid])
    assert (await axon.send_message("m", "back")).output == "echo: back"
    assert axon.agent("other").restarts == 0
