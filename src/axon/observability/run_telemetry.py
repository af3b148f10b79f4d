"""What one request records about itself: :class:`RunTelemetry` (its span when tracing is on,
its timings, the ``run.routed`` and ``run.finished`` events) so that ``Axon._execute`` carries
the request's steps and this object carries everything measured about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING

from axon.errors import AxonError
from axon.observability.events import EventBus

if TYPE_CHECKING:
    from axon.observability.tracing import RunSpan, RunTracer
    from axon.run_call import RunCall
    from axon.supervisor.spawner import WorkerHandle

__all__ = ["QUIET_OUTCOMES", "RunTelemetry"]

QUIET_OUTCOMES = frozenset({"ok", "cancelled", "conversation_busy", "run_interrupted"})
"""``run.finished`` outcomes logged at INFO: the run did what the caller asked for, or the
caller's own choice ended it. Every other outcome (a crash, timeout, failure, overload or outage)
is a WARNING."""


class RunTelemetry:
    """One request, from validation to its reply or error. Call :meth:`end` exactly once, in a
    ``finally``."""

    def __init__(
        self,
        events: EventBus,
        tracer: RunTracer | None,
        agent_id: str,
        conversation_id: str,
        stream: bool,
    ) -> None:
        self._events = events
        self.agent_id = agent_id
        self.conversation_id = conversation_id
        self.started = time.perf_counter()
        self._span: RunSpan | None = (
            None if tracer is None else tracer.start(agent_id, conversation_id, stream)
        )
        self._run_id: int | None = None
        self._pid: int | None = None
        self._ttft: float | None = None
        self._commit_s: float | None = None
        self._outcome = "error"
        self._failure: BaseException | None = None

    def carrier(self) -> dict[str, str] | None:
        """The request span's propagation headers for the ``run`` frame (tracing on)."""
        return None if self._span is None else self._span.carrier()

    def routed(self, worker: WorkerHandle, call: RunCall) -> None:
        """The run went to ``worker``."""
        self._run_id, self._pid = call.id, worker.pid
        if self._span is not None:
            self._span.routed(call.id, worker.pid)
            call.on_spans = self._span.replay
        self._events.emit(
            "run.routed",
            logging.DEBUG,
            agent=self.agent_id,
            worker=worker.index,
            pid=worker.pid,
            run=call.id,
            conversation=self.conversation_id,
        )

    def text(self) -> None:
        """A text delta went to the caller (the first one is the time to first token)."""
        if self._ttft is None:
            self._ttft = time.perf_counter() - self.started

    @contextlib.contextmanager
    def committing(self) -> Generator[None]:
        """Around the commit: how long it took, when it succeeds."""
        began = time.perf_counter()
        yield
        self._commit_s = time.perf_counter() - began

    def succeeded(self) -> None:
        """The reply is committed and about to go to the caller."""
        self._outcome = "ok"

    def failed(self, exc: BaseException) -> None:
        """The request ends with ``exc``: its error type is the outcome, cancellation (the
        caller left before its reply) is ``cancelled``."""
        if isinstance(exc, AxonError):
            self._outcome = exc.type
            self._failure = exc
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            if self._outcome != "ok":  # not a caller leaving after its reply
                self._outcome = "cancelled"
        else:
            self._failure = exc

    def end(self) -> None:
        """End the span and log ``run.finished``."""
        if self._span is not None:
            self._span.end(self._outcome, self._failure)
        self._events.emit(
            "run.finished",
            logging.INFO if self._outcome in QUIET_OUTCOMES else logging.WARNING,
            agent=self.agent_id,
            conversation=self.conversation_id,
            run=self._run_id,
            pid=self._pid,
            outcome=self._outcome,
            latency_s=round(time.perf_counter() - self.started, 6),
            ttft_s=None if self._ttft is None else round(self._ttft, 6),
            commit_s=None if self._commit_s is None else round(self._commit_s, 6),
        )
