"""Per-conversation ordering: runs of one conversation go one at a time.

A message to a conversation that already has a run in progress is handled by a policy:

``enqueue`` (default)
    wait for its turn, in arrival order (``asyncio.Lock`` wakes waiters first come, first served).
``reject``
    fail at once with ``ConversationBusy``.
``interrupt``
    interrupt the run in progress (it ends with ``RunInterrupted`` and commits nothing; what the
    conversation committed before stays), then wait for the turn like ``enqueue``. Only the run
    in progress is interrupted; messages already waiting keep their place ahead of this one.

Different conversations have different locks and never wait on each other. Locks are
reference-counted and dropped when nobody holds or waits for them, so memory stays bounded by
the conversations in flight.

Cancellation contract: ``hold`` is cancel-safe; a cancelled waiter never gets the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from axon.errors import ConversationBusy

__all__ = ["ConversationLocks", "ConversationPolicy", "Turn"]


class ConversationPolicy(StrEnum):
    ENQUEUE = "enqueue"
    REJECT = "reject"
    INTERRUPT = "interrupt"


class Turn:
    """The holder's side of a conversation's turn: how an interrupt reaches its run."""

    __slots__ = ("_on_interrupt", "interrupted")

    def __init__(self) -> None:
        self.interrupted = False
        self._on_interrupt: Callable[[], None] | None = None

    def on_interrupt(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when interrupted (at once if that already happened)."""
        self._on_interrupt = callback
        if self.interrupted:
            callback()

    def interrupt(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            if self._on_interrupt is not None:
                self._on_interrupt()


@dataclass(eq=False)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    holder: Turn | None = None


class ConversationLocks:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def busy(self, conversation_id: str) -> bool:
        entry = self._entries.get(conversation_id)
        return entry is not None and entry.lock.locked()

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def hold(
        self, conversation_id: str, policy: ConversationPolicy = ConversationPolicy.ENQUEUE
    ) -> AsyncGenerator[Turn]:
        """Hold the conversation's turn under ``policy`` (see module docstring)."""
        entry = self._entries.get(conversation_id)
        if entry is not None and entry.users > 0:
            if policy is ConversationPolicy.REJECT:
                raise ConversationBusy(conversation_id)
            if policy is ConversationPolicy.INTERRUPT and entry.holder is not None:
                entry.holder.interrupt()
        if entry is None:
            entry = self._entries[conversation_id] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                turn = entry.holder = Turn()
                try:
                    yield turn
                finally:
                    entry.holder = None
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[conversation_id]
