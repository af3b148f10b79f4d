"""A run on its way to a worker and back: :class:`RunRequest`, what a run is sent with, and
:class:`RunCall`, one run in flight on a worker, as the router, a worker's process and its
session all see them. :class:`WorkerGone`: a run could not be sent, nothing reached the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from axon.errors import AxonError
from axon.protocol.frames import Result, RunEvent, SpanRecord

__all__ = ["RunCall", "RunRequest", "WorkerGone"]


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What a run is sent with. ``history``: the conversation's messages as pydantic-ai JSON.
    ``deadline``: the request's, on the event loop's clock (``loop.time()``), or None for none;
    the worker is told the time left when the run is sent, after any wait for a slot.
    ``trace``: the request span's propagation headers (tracing on), else None."""

    prompt: str
    history: bytes
    conversation_id: str | None
    deadline: float | None
    stream: bool
    trace: dict[str, str] | None = None

    def time_left(self) -> float | None:
        """Seconds to the deadline from now (at least a millisecond), or None."""
        if self.deadline is None:
            return None
        return max(self.deadline - asyncio.get_running_loop().time(), 0.001)


class WorkerGone(Exception):
    """The run could not be sent: the worker's connection is already closed. Nothing reached
    the worker, so the router may safely send the run elsewhere."""


class RunCall:
    """One run in flight on a worker: a stream of events ending in ``Result``."""

    __slots__ = ("_queue", "done", "id", "on_spans", "started")

    def __init__(self, run_id: int) -> None:
        self.id = run_id
        self.started = time.perf_counter()
        self.done = False
        self.on_spans: Callable[[list[SpanRecord]], None] | None = None
        """Called with the run's ``spans`` frame (a traced run), as it arrives: before the
        run's result or error is delivered, or after the caller gave up on the run."""
        self._queue: asyncio.Queue[RunEvent | Result | AxonError] = asyncio.Queue()

    def deliver(self, item: RunEvent | Result | AxonError) -> None:
        """Hand the next frame (or the run's error) to whoever awaits ``next()``."""
        self._queue.put_nowait(item)

    async def next(self) -> RunEvent | Result:
        """The next event or the final result; raises the run's ``AxonError`` if it failed."""
        item = await self._queue.get()
        if isinstance(item, AxonError):
            raise item
        return item
