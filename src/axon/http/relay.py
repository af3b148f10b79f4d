"""One HTTP request's run, driven in a task of its own, so that what a client's disconnect does
to the run is the client's choice (``on_disconnect``: cancel it, or let it finish and commit)
and not an accident of when the server notices.

``RunRelay`` drives the runtime's event iterator and hands each event (or the error the run
ended with) to the request through a queue. ``watch_disconnect`` reads the ASGI ``receive``
channel (after the body has been read, the only message left is ``http.disconnect``) and tells
the relay when the client is gone.

The queue is bounded (``max_pending`` events): a stream client that reads slower than its run
produces (or not at all, while its connection stays open) would otherwise hold every event of
the run in memory. One event more than the bound and the client is cut as a client that left:
its run follows ``on_disconnect``, the event ``http.slow_consumer`` is logged, and the
connection is aborted (``cut_connection``) so that the response, blocked writing to a client
that does not read, ends too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Literal, cast

from starlette.types import Receive, Scope

from axon._tasks import TaskSet
from axon.observability.events import EventBus
from axon.stream import StreamEvent

__all__ = [
    "CUT_CONNECTION",
    "MAX_PENDING_EVENTS",
    "ClientGone",
    "RunRelay",
    "connection_cutter",
    "watch_disconnect",
]

OnDisconnect = Literal["cancel", "finish"]

MAX_PENDING_EVENTS = 1000
"""Events of a run that may wait for its client; one more and the client is cut."""
CUT_CONNECTION = "axon.connection"
"""The ASGI scope extension (``scope["extensions"][CUT_CONNECTION]["cut"]``) of a server that
can abort a request's connection: ``axon serve``'s protocol (:mod:`axon.http.connections`)."""


def connection_cutter(scope: Scope) -> Callable[[], None] | None:
    """The function that aborts the connection of the request of ``scope``, if the server
    offers one."""
    extension: object = scope.get("extensions", {}).get(CUT_CONNECTION)
    cut = cast(dict[str, object], extension).get("cut") if isinstance(extension, dict) else None
    return cast(Callable[[], None], cut) if callable(cut) else None


class ClientGone(Exception):
    """The client disconnected before the run ended; nothing more will be sent to it."""


class RunRelay:
    def __init__(
        self,
        events: AsyncIterator[StreamEvent],
        *,
        tasks: TaskSet,
        log: EventBus,
        on_disconnect: OnDisconnect,
        agent_id: str,
        conversation_id: str | None,
        max_pending: int = MAX_PENDING_EVENTS,
        cut_connection: Callable[[], None] | None = None,
    ) -> None:
        self._events = events
        self._log = log
        self._queue: asyncio.Queue[StreamEvent | BaseException] = asyncio.Queue()
        self._on_disconnect: OnDisconnect = on_disconnect
        self._agent_id = agent_id
        self._conversation_id = conversation_id
        self._max_pending = max_pending
        self._cut_connection = cut_connection
        self._gone = False
        # In the app's task set, not the request's: a run the client lets finish outlives the
        # request, and a graceful shutdown waits for it.
        self._task = tasks.create_task(self._drive())

    async def _drive(self) -> None:
        try:
            async for event in self._events:
                if self._gone:
                    continue  # on_disconnect=finish: the run goes on, nobody reads it
                if self._queue.qsize() >= self._max_pending:
                    self._too_slow()
                    if self._on_disconnect == "cancel":
                        return  # closing the iterator (below) cancels the run
                    continue
                self._queue.put_nowait(event)
        except Exception as exc:  # an AxonError, or a bug the edge reports as a bare 500
            if not self._gone:
                self._queue.put_nowait(exc)
        finally:
            # Closing the iterator is what cancels a run that has not ended (commits nothing).
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def next(self) -> StreamEvent:
        """The next event; raises the run's error, or ``ClientGone`` once the client left."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def drain(self) -> list[StreamEvent | BaseException]:
        """What the run produced that was not taken yet (events, or the error it ended with)."""
        items: list[StreamEvent | BaseException] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not isinstance(item, ClientGone):
                items.append(item)
        return items

    def _too_slow(self) -> None:
        """The client is ``max_pending`` events behind: cut it as one that left."""
        self._log.emit(
            "http.slow_consumer",
            logging.WARNING,
            agent=self._agent_id,
            conversation=self._conversation_id,
            pending=self._queue.qsize(),
            on_disconnect=self._on_disconnect,
        )
        self._gone = True
        while not self._queue.empty():  # what it did not read is dropped now
            self._queue.get_nowait()
        self._queue.put_nowait(ClientGone())
        if self._cut_connection is not None:
            # The response may be blocked writing to a client that reads nothing: only closing
            # the connection ends that write.
            self._cut_connection()

    def client_left(self) -> None:
        if self._gone or self._task.done():
            return
        self._gone = True
        self._log.emit(
            "http.disconnected",
            logging.INFO,
            agent=self._agent_id,
            conversation=self._conversation_id,
            on_disconnect=self._on_disconnect,
        )
        if self._on_disconnect == "cancel":
            self._task.cancel()
        self._queue.put_nowait(ClientGone())

    async def aclose(self) -> None:
        """The request is over (answered or failed): cancel the run unless it may finish."""
        if not self._gone or self._on_disconnect == "cancel":
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def watch_disconnect(receive: Receive, relay: RunRelay) -> AsyncGenerator[None]:
    """While inside, a client disconnect is reported to ``relay``."""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        relay.client_left()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
