"""Capturing Axon's structured log events in tests: look them up, or wait for one.

```python
from axon.testing import capture_events

with capture_events() as events:
    mark = events.mark()
    ...  # make something happen
    crash = await events.wait_for("worker.exit", since=mark, agent="m")
    assert crash.fields["exit_code"] == 13
    assert events.find("agent.restart", since=mark, agent="m")
```

Event names and their fields are listed in :mod:`axon.observability.events`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from axon.observability.events import LOGGER_NAME

__all__ = ["EventLog", "LoggedEvent", "capture_events"]

Where = Callable[[dict[str, Any]], bool]
"""An extra test on an event's fields."""


@dataclass(frozen=True, eq=False)
class LoggedEvent:
    """One structured event as an :class:`EventLog` recorded it."""

    name: str
    """The event's name, e.g. ``"worker.exit"``."""
    fields: dict[str, Any]
    """Its facts (agent, worker, pid, ...)."""
    levelno: int
    """Its logging level, e.g. ``logging.WARNING``."""
    monotonic: float
    """``time.monotonic()`` when it was recorded: compare it with your own monotonic stamps."""
    record: logging.LogRecord
    """The log record it came from."""


class EventLog(logging.Handler):
    """A logging handler that records Axon's structured events and lets a test await one.

    Attach it with :func:`capture_events`. Records that are not structured events (no ``event``
    attribute) are ignored. Events are recorded in order; :meth:`mark` gives a position in that
    order to pass as ``since`` so that only later events count.

    Matching, everywhere: the event's name equals ``name``, each keyword argument equals the
    field of that name, and ``where`` (if given) returns true for the fields.
    """

    def __init__(self, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.records: list[LoggedEvent] = []
        """Every event recorded so far, oldest first."""
        self._futures: list[tuple[Callable[[LoggedEvent], bool], asyncio.Future[LoggedEvent]]] = []
        self._flags: list[
            tuple[Callable[[LoggedEvent], bool], asyncio.Event, asyncio.AbstractEventLoop | None]
        ] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Record ``record`` if it is a structured event and wake whoever waits for it."""
        name = getattr(record, "event", None)
        if name is None:
            return
        fields: dict[str, Any] = getattr(record, "fields", None) or {}
        event = LoggedEvent(name, fields, record.levelno, time.monotonic(), record)
        self.records.append(event)
        for matches, future in list(self._futures):
            if future.done():
                continue
            try:
                if matches(event):
                    _call_on_loop(future.get_loop(), _resolve, future, event, None)
            except Exception as error:  # a failing ``where`` fails the wait, not the emitter
                _call_on_loop(future.get_loop(), _resolve, future, None, error)
        for entry in list(self._flags):
            matches, flag, loop = entry
            try:
                matched = matches(event)
            except Exception:  # a failing ``where`` is no match for a flag
                matched = False
            if matched:
                self._flags.remove(entry)
                if loop is None:
                    flag.set()
                else:
                    _call_on_loop(loop, flag.set)

    def mark(self) -> int:
        """A position in the log: pass it as ``since`` to look only at events recorded later."""
        return len(self.records)

    def find(
        self,
        name: str,
        *,
        since: int = 0,
        where: Where | None = None,
        **fields: Any,
    ) -> list[LoggedEvent]:
        """The events called ``name``, recorded at or after ``since``, that match; oldest
        first."""
        matches = _matcher(name, where, fields)
        return [event for event in self.records[since:] if matches(event)]

    def index(self, event: LoggedEvent) -> int:
        """The position of ``event`` (one this log recorded) in the log: compare two to check
        their order."""
        for position, recorded in enumerate(self.records):
            if recorded is event:
                return position
        raise ValueError(f"{event.name!r} event was not recorded by this log")

    async def wait_for(
        self,
        name: str,
        *,
        since: int = 0,
        where: Where | None = None,
        timeout: float = 30.0,
        **fields: Any,
    ) -> LoggedEvent:
        """The first matching event recorded at or after ``since``, waiting for it if need be;
        ``TimeoutError`` after ``timeout`` seconds."""
        found = self.find(name, since=since, where=where, **fields)
        if found:
            return found[0]
        future: asyncio.Future[LoggedEvent] = asyncio.get_running_loop().create_future()
        entry = (_matcher(name, where, fields), future)
        self._futures.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._futures.remove(entry)

    def waiter(
        self,
        name: str,
        *,
        since: int = 0,
        where: Where | None = None,
        **fields: Any,
    ) -> asyncio.Event:
        """An ``asyncio.Event`` set once a matching event is recorded (at once if one was,
        at or after ``since``): poll ``is_set()`` or ``await wait()`` while doing other work.

        Call it on the loop that will wait on the flag (events logged from another thread then
        set the flag through that loop).
        """
        flag = asyncio.Event()
        if self.find(name, since=since, where=where, **fields):
            flag.set()
        else:
            self._flags.append((_matcher(name, where, fields), flag, _running_loop()))
        return flag


@contextmanager
def capture_events() -> Generator[EventLog, None, None]:
    """Record every structured event of the ``axon`` logger (DEBUG and up) inside the block.

    Attaches an :class:`EventLog` to the ``axon`` logger and sets the logger to DEBUG; on the
    way out, puts back the logger's level and handlers as they were before the block.
    """
    logger = logging.getLogger(LOGGER_NAME)
    previous_level = logger.level
    previous_handlers = list(logger.handlers)
    log = EventLog()
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    try:
        yield log
    finally:
        for handler in list(logger.handlers):
            if handler not in previous_handlers:
                logger.removeHandler(handler)
        for handler in previous_handlers:
            logger.addHandler(handler)  # no-op for those still attached
        logger.setLevel(previous_level)


def _matcher(
    name: str, where: Where | None, fields: dict[str, Any]
) -> Callable[[LoggedEvent], bool]:
    def matches(event: LoggedEvent) -> bool:
        return (
            event.name == name
            and all(key in event.fields and event.fields[key] == v for key, v in fields.items())
            and (where is None or where(event.fields))
        )

    return matches


def _resolve(
    future: asyncio.Future[LoggedEvent], event: LoggedEvent | None, error: Exception | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    elif event is not None:
        future.set_result(event)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _call_on_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any
) -> None:
    """Run ``callback(*args)`` on ``loop``: now if this is its thread, else soon (thread-safe)."""
    if _running_loop() is loop:
        callback(*args)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(callback, *args)
