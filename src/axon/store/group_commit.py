"""Group commit: concurrent ``commit`` calls share one store transaction.

A durable commit costs the same whether it writes one run or fifty: a Postgres commit is a few
network round trips and a WAL flush, a SQLite commit a write-lock and a WAL write on the store's
one thread. So while one batch is being committed, the commits that arrive queue up, and the
next batch takes them all at once. An idle store adds no delay: a commit that finds nothing in
flight is sent at once, alone. Under load, batches grow by themselves, and throughput with them.

What each run keeps (the guarantees of :mod:`axon.store.base`):

* **Its own revision guard.** A backend's batch checks every run against its own expected
  revision: a stale run gets ``StoreConflict`` and writes nothing, while the others commit.
* **Its own acknowledgement.** A caller's ``commit`` returns only after the transaction holding
  its run is confirmed; a failed batch fails each of its runs with the same typed error.
* **Order.** A batch holds at most one run per conversation (a second one waits for the next
  batch), so two commits of one conversation are never decided in the same transaction.
* **Isolation from its neighbours.** If a batch of several runs fails with anything other than
  ``StoreUnavailable`` (a bug, a constraint, a deadlock with another orchestrator's batch), each
  of its runs is committed again alone, so one bad run never fails the others.

Cancellation: a caller cancelled before its run was taken into a batch is dropped from the
queue; once taken, the batch goes on without it (its run is committed or not, as with any
cancelled commit: see :mod:`axon.store.base`).
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from axon.errors import StoreUnavailable

__all__ = ["CommitBatch", "GroupCommit", "PendingCommit", "group_commit_of"]


@dataclass(frozen=True, slots=True)
class PendingCommit:
    """One run's commit, as ``ConversationStore.commit`` was asked for it."""

    conversation_id: str
    agent_id: str
    expected_revision: int
    messages: bytes

    def __post_init__(self) -> None:
        if self.expected_revision < 0:
            raise ValueError(f"expected_revision must be >= 0, not {self.expected_revision}")


CommitBatch = Callable[[Sequence[PendingCommit]], Awaitable[list[int | Exception]]]
"""Commit runs (distinct conversations) in one transaction: for each, its new revision or the
exception it gets (``StoreConflict``). Raises if the transaction as a whole failed."""


class GroupCommit:
    """Queue commits and hand them to ``commit_batch`` in batches of at most ``max_runs`` runs
    and ``max_bytes`` of messages (one run is always taken, however large).

    ``batches`` and ``runs`` count the batches and runs decided so far (``runs / batches`` is
    the mean batch size).
    """

    def __init__(
        self, commit_batch: CommitBatch, *, max_runs: int = 128, max_bytes: int = 4 << 20
    ) -> None:
        if max_runs < 1 or max_bytes < 1:
            raise ValueError(f"max_runs and max_bytes must be >= 1, not {max_runs}, {max_bytes}")
        self._commit_batch = commit_batch
        self.max_runs = max_runs
        self.max_bytes = max_bytes
        self._queue: deque[tuple[PendingCommit, asyncio.Future[int]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.runs = 0

    async def commit(self, pending: PendingCommit) -> int:
        """The run's new revision, once the batch holding it is committed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((pending, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name="axon-group-commit"
            )
        return await future  # a cancelled caller cancels the future: the flusher skips it

    @property
    def queued(self) -> int:
        """Commits waiting for a batch (the batch in flight is not counted)."""
        return sum(1 for _, future in self._queue if not future.done())

    @property
    def active(self) -> bool:
        """Whether commits are being batched now (``False``: idle, the next goes at once)."""
        return self._flusher is not None

    async def drain(self) -> None:
        """Wait until every queued commit has been decided."""
        while (flusher := self._flusher) is not None:
            await asyncio.shield(flusher)

    async def _flush(self) -> None:
        try:
            while batch := self._take():
                await self._decide(batch)
        finally:
            self._flusher = None
            for _, future in self._queue:  # only when the flusher itself was cancelled
                future.cancel()
            self._queue.clear()

    def _take(self) -> list[tuple[PendingCommit, asyncio.Future[int]]]:
        """The next batch, in arrival order: distinct conversations, within the limits."""
        batch: list[tuple[PendingCommit, asyncio.Future[int]]] = []
        later: list[tuple[PendingCommit, asyncio.Future[int]]] = []
        conversations: set[str] = set()
        size = 0
        while self._queue and len(batch) < self.max_runs:
            pending, future = self._queue.popleft()
            if future.done():  # its caller was cancelled before it was sent
                continue
            if batch and size + len(pending.messages) > self.max_bytes:
                self._queue.appendleft((pending, future))
                break
            if pending.conversation_id in conversations:
                later.append((pending, future))
                continue
            batch.append((pending, future))
            conversations.add(pending.conversation_id)
            size += len(pending.messages)
        self._queue.extendleft(reversed(later))
        return batch

    async def _decide(self, batch: list[tuple[PendingCommit, asyncio.Future[int]]]) -> None:
        try:
            outcomes = await self._commit_batch([pending for pending, _ in batch])
        except asyncio.CancelledError:  # the loop is shutting down: nobody waits any more
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, StoreUnavailable):
                for one in batch:  # one bad run must not fail the others
                    await self._decide([one])
                return
            outcomes = [exc if i == 0 else _copy(exc) for i in range(len(batch))]
        self.batches += 1
        self.runs += len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _copy(exc: Exception) -> Exception:
    """The same error for another caller (each raise extends its exception's traceback)."""
    twin = copy.copy(exc)
    twin.__cause__ = exc.__cause__
    return twin


def group_commit_of(store: object) -> GroupCommit | None:
    """The store's :class:`GroupCommit` (``store.group_commit``), if it groups its commits."""
    group = getattr(store, "group_commit", None)
    return group if isinstance(group, GroupCommit) else None
