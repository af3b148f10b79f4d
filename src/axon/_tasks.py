"""An owned set of background tasks: nothing is ever an orphan ``create_task``.

We use this rather than ``asyncio.TaskGroup`` because a supervisor must outlive the failure of
any one of its tasks: a TaskGroup cancels every sibling when one task raises, which would let a
bug in one agent's supervision stop every agent. Here a failed task is logged and the rest go on;
``aclose()`` cancels and awaits whatever is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from axon.observability.events import EventBus

__all__ = ["TaskSet"]

T = TypeVar("T")


class TaskSet:
    def __init__(self, name: str, events: EventBus | None = None) -> None:
        self._name = name
        self._events = events or EventBus()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def create_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"task set {self._name!r} is closed")
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._events.emit(
                "task.failed",
                logging.ERROR,
                owner=self._name,
                task=task.get_name(),
                error=f"{type(exc).__name__}: {exc}",
            )

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self, grace: float = 0.0) -> None:
        """Let the tasks still running finish for up to ``grace`` seconds, then cancel the rest
        and wait for all of them. No task can be added afterwards."""
        self._closed = True
        if grace > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
