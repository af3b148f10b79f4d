"""The per-conversation policies (enqueue / reject / interrupt) against a simple model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axon.conversation_locks import ConversationLocks, ConversationPolicy, Turn
from axon.errors import ConversationBusy


@dataclass
class Request:
    policy: ConversationPolicy
    acquired: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    turn: Turn | None = None
    rejected: bool = False
    task: asyncio.Task[None] | None = None


async def settle() -> None:
    """Let every task that can run take its next step (ordering, not timing)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def requester(locks: ConversationLocks, request: Request) -> None:
    try:
        async with locks.hold("c", request.policy) as turn:
            request.turn = turn
            request.acquired.set()
            await request.release.wait()
    except ConversationBusy:
        request.rejected = True


Op = tuple[str, ConversationPolicy | None]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.sampled_from(list(ConversationPolicy))),
        st.tuples(st.just("finish"), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_policies_match_the_model(sequence: list[Op]) -> None:
    asyncio.run(_run(sequence))


async def _run(sequence: list[Op]) -> None:
    locks = ConversationLocks()
    requests: list[Request] = []
    # The model: who holds the turn, who waits (in order), who was interrupted or rejected.
    holder: int | None = None
    queue: list[int] = []
    interrupted: set[int] = set()
    rejected: set[int] = set()
    for op, policy in sequence:
        if op == "arrive":
            assert policy is not None
            index = len(requests)
            request = Request(policy)
            requests.append(request)
            busy = holder is not None or bool(queue)
            if policy is ConversationPolicy.REJECT and busy:
                rejected.add(index)
            else:
                if policy is ConversationPolicy.INTERRUPT and holder is not None:
                    interrupted.add(holder)
                if holder is None:
                    holder = index
                else:
                    queue.append(index)
            request.task = asyncio.ensure_future(requester(locks, request))
        elif holder is not None:
            requests[holder].release.set()
            holder = queue.pop(0) if queue else None
        await settle()
        # The implementation agrees with the model at every step.
        holding = [
            i for i, r in enumerate(requests) if r.acquired.is_set() and not r.release.is_set()
        ]
        assert holding == ([] if holder is None else [holder])
        assert {i for i, r in enumerate(requests) if r.rejected} == rejected
        for i, r in enumerate(requests):
            if r.turn is not None:
                assert r.turn.interrupted == (i in interrupted), i
        assert locks.busy("c") == (holder is not None)
    for request in requests:
        request.release.set()
    await asyncio.gather(*(r.task for r in requests if r.task is not None))
    assert len(locks) == 0


async def test_interrupt_reaches_the_holders_callback_even_if_registered_late() -> None:
    locks = ConversationLocks()
    first = Request(ConversationPolicy.ENQUEUE)
    first.task = asyncio.ensure_future(requester(locks, first))
    await first.acquired.wait()
    second = Request(ConversationPolicy.INTERRUPT)
    second.task = asyncio.ensure_future(requester(locks, second))
    await settle()
    calls: list[str] = []
    assert first.turn is not None
    first.turn.on_interrupt(lambda: calls.append("cancel run"))
    assert calls == ["cancel run"]
    first.release.set()
    await second.acquired.wait()
    assert second.turn is not None
    assert not second.turn.interrupted
    second.release.set()
    await asyncio.gather(first.task, second.task)


@pytest.mark.parametrize("policy", list(ConversationPolicy))
async def test_an_idle_conversation_admits_every_policy(policy: ConversationPolicy) -> None:
    locks = ConversationLocks()
    async with locks.hold("c", policy) as turn:
        assert not turn.interrupted
    assert len(locks) == 0
