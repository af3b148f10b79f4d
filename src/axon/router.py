"""Admission and routing of runs to one agent's workers.

A run goes to the least-loaded worker that is serving and below ``max_concurrency``. When every
worker is busy the request waits its turn in a bounded FIFO queue (``queue_size``); a full queue
is ``Overloaded`` at once, and an agent with no serving worker is ``AgentUnavailable`` at once
(with a ``retry_after`` from the supervisor), so nothing waits unboundedly.

Cancellation contract: ``start_run`` may be cancelled while it waits in the queue (the caller's
deadline); it then leaves the queue and passes any wake-up it received to the next waiter.
"""

from __future__ import annotations

import asyncio
from collections import deque

from axon.errors import AgentUnavailable, Overloaded
from axon.run_call import RunCall, RunRequest, WorkerGone
from axon.supervisor.spawner import WorkerHandle
from axon.supervisor.supervisor import AgentSupervisor

__all__ = ["AgentRouter"]

_OVERLOAD_RETRY_AFTER = 1.0


class AgentRouter:
    """Routes runs of one agent (see module docstring)."""

    def __init__(self, supervisor: AgentSupervisor) -> None:
        self.supervisor = supervisor
        self.spec = supervisor.spec
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queue_depth(self) -> int:
        return len(self._waiters)

    def notify(self) -> None:
        """Capacity may have changed (a run ended, a worker became ready or died)."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    def _pick(self) -> WorkerHandle | None:
        best: WorkerHandle | None = None
        for worker in self.supervisor.workers():
            if worker.in_flight < self.spec.max_concurrency and (
                best is None or worker.in_flight < best.in_flight
            ):
                best = worker
        return best

    def check_available(self) -> None:
        """Raise ``AgentUnavailable`` (with a ``retry_after``) unless a worker is serving."""
        if not self.supervisor.workers():
            raise self._unavailable()

    def _unavailable(self) -> AgentUnavailable:
        return AgentUnavailable(
            self.spec.id,
            state=self.supervisor.state.state.value,
            retry_after=round(self.supervisor.retry_after(), 3),
        )

    async def start_run(self, request: RunRequest) -> tuple[WorkerHandle, RunCall]:
        """Send the run to a worker, waiting in the queue for a free slot if need be."""
        worker = None if self._waiters else self._pick()
        while worker is None:
            if not self.supervisor.workers():
                raise self._unavailable()
            if len(self._waiters) >= self.spec.queue_size:
                raise Overloaded(
                    self.spec.id, queue_size=len(self._waiters), retry_after=_OVERLOAD_RETRY_AFTER
                )
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._waiters.remove(waiter)
                if waiter.done() and not waiter.cancelled():
                    self.notify()  # pass on the wake-up we can no longer use
                raise
            self._waiters.remove(waiter)
            worker = self._pick()
        try:
            call = worker.start_run(request)
        except WorkerGone:
            # Its connection closed a moment ago and nothing was sent: try another worker.
            return await self.start_run(request)
        if self._waiters and self._pick() is not None:
            self.notify()
        return worker, call
