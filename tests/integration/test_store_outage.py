"""The PostgreSQL store becomes unreachable under a running orchestrator, then comes back
(Guarantee 3, issue "Store faults").

The store URL points at a :class:`~axon.chaos.tcp_relay.TcpRelay` in front of the shared test
server; cutting the relay is the outage (the server itself is never touched). The store runs
with ``connect_timeout=1&command_timeout=1`` so that every wait on the database is bounded by
about a second. What the caller must see: ``StoreUnavailable`` (typed, never a hang, never an
``AgentTimeout`` of a long request deadline) while the database is gone, nothing acknowledged
lost, nothing unacknowledged committed, and service again without restarting the runtime once
it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from axon import AgentSpec, RuntimeSpec, StoreUnavailable
from axon.chaos.tcp_relay import TcpRelay
from axon.testing import EventLog, user_prompts

from ..conftest import MISBEHAVING, StartAxon

CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 1.0
SLACK = 2.0
REQUEST_TIMEOUT = 60.0  # far above the store's timeouts: a hang would show as AgentTimeout


@pytest.fixture
async def relay(postgres_url: str) -> AsyncIterator[TcpRelay]:
    async with TcpRelay.in_front_of(postgres_url) as relay:
        yield relay


async def test_outage_gives_typed_errors_loses_nothing_and_recovers(
    postgres_url: str, relay: TcpRelay, start_axon: StartAxon, events: EventLog
) -> None:
    url = (
        f"{relay.rewrite(postgres_url)}"
        f"&connect_timeout={CONNECT_TIMEOUT}&command_timeout={COMMAND_TIMEOUT}"
    )
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING, timeout=REQUEST_TIMEOUT),
        runtime=RuntimeSpec(store=url),
    )
    loop = asyncio.get_running_loop()

    async def send(prompt: str, conversation_id: str = "c") -> str:
        reply = await axon.send_message("m", prompt, conversation_id=conversation_id)
        return str(reply.output)

    assert await send("first") == "echo: first"  # acknowledged before the outage

    # 1. The database goes away while a run is in flight: the run finishes in the worker, its
    #    commit fails promptly with StoreUnavailable, and nothing of it is written.
    mark = events.mark()
    in_flight = asyncio.create_task(send("sleep:1"))
    await events.wait_for("run.routed", since=mark, conversation="c")
    await relay.cut()
    cut_at = loop.time()
    with pytest.raises(StoreUnavailable) as caught:
        await in_flight
    assert caught.value.store == "postgresql"
    assert caught.value.maybe_committed is False  # no COMMIT was sent: surely rolled back
    assert loop.time() - cut_at < 1.0 + SLACK  # the rest of the 1 s run, then at once
    await events.wait_for("run.finished", since=mark, outcome="store_unavailable")

    # 2. While it is gone, new requests fail fast (old and new conversations alike).
    for prompt, conversation in (("during", "c"), ("elsewhere", "c2")):
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await send(prompt, conversation)
        assert loop.time() - started < SLACK

    # 3. A silent network (packets dropped, nothing refused) is bounded by the store's
    #    timeouts too: StoreUnavailable, not a hang until the request's deadline.
    relay.restore()
    assert await send("between") == "echo: between"  # recovered, without a restart
    await relay.cut(blackhole=True)
    started = loop.time()
    with pytest.raises(StoreUnavailable, match="timed out"):
        await send("silent")
    assert loop.time() - started < CONNECT_TIMEOUT + COMMAND_TIMEOUT + SLACK

    # 4. Back again: the same runtime serves, and the history holds exactly the acknowledged
    #    exchanges, in order.
    relay.restore()
    assert await send("after") == "echo: after"
    assert await send("new", "c2") == "echo: new"
    assert user_prompts(await axon.history("c")) == ["first", "between", "after"]
    assert user_prompts(await axon.history("c2")) == ["new"]


async def test_a_commit_whose_confirmation_is_lost_says_it_may_have_been_applied(
    postgres_url: str, relay: TcpRelay, start_axon: StartAxon
) -> None:
    """The COMMIT reaches the server, the connection breaks before its answer comes back: the
    run IS in the history, and the caller's ``StoreUnavailable`` says that it may be
    (``maybe_committed``), where every other store failure promises nothing was written."""
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING),
        runtime=RuntimeSpec(store=f"{relay.rewrite(postgres_url)}&command_timeout=5"),
    )
    await axon.send_message("m", "first", conversation_id="c")
    relay.cut_after(b"COMMIT")
    with pytest.raises(StoreUnavailable) as caught:
        await axon.send_message("m", "second", conversation_id="c")
    await relay.wait_cut_after()
    assert caught.value.maybe_committed is True
    assert caught.value.to_dict()["maybe_committed"] is True  # what HTTP clients get
    assert "may have been applied" in caught.value.message
    # It was applied: reading the history (as the error advises) shows it, exactly once.
    assert user_prompts(await axon.history("c")) == ["first", "second"]
    reply = await axon.send_message("m", "third", conversation_id="c")  # and the store serves
    assert reply.output == "echo: third"
    assert user_prompts(await axon.history("c")) == ["first", "second", "third"]
