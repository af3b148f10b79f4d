"""Per-conversation ordering without processes: arrival order, isolation, bounded memory."""

from __future__ import annotations

import asyncio

from axon.conversation_locks import ConversationLocks


async def test_turns_of_one_conversation_are_taken_in_arrival_order() -> None:
    locks = ConversationLocks()
    order: list[int] = []
    gate = asyncio.Event()

    async def turn(i: int) -> None:
        async with locks.hold("c"):
            if i == 0:
                await gate.wait()
            order.append(i)

    tasks = []
    for i in range(10):
        tasks.append(asyncio.ensure_future(turn(i)))
        await asyncio.sleep(0)  # let task i queue before task i+1 is created
    assert locks.busy("c")
    gate.set()
    await asyncio.gather(*tasks)
    assert order == list(range(10))
    assert len(locks) == 0


async def test_different_conversations_never_wait_on_each_other() -> None:
    locks = ConversationLocks()
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold_a() -> None:
        async with locks.hold("a"):
            held.set()
            await release.wait()

    task = asyncio.ensure_future(hold_a())
    await held.wait()
    async with asyncio.timeout(1):
        async with locks.hold("b"):
            assert locks.busy("a")
    release.set()
    await task


async def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    locks = ConversationLocks()
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("c"):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("c"):
            raise AssertionError("a cancelled waiter must never get the turn")

    first = asyncio.ensure_future(holder())
    await held.wait()
    second = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)
    second.cancel()
    release.set()
    await first
    assert second.cancelled()
    assert len(locks) == 0
