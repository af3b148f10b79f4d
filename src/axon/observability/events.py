"""Structured log events: one named event per thing that happens, with its facts as fields.

Each runtime has one :class:`EventBus`; every event goes through its :meth:`EventBus.emit`:

- to the ``axon`` logger, as a record whose ``event`` attribute names it and whose ``fields``
  attribute holds the facts (agent, worker pid, run id, conversation id, ...), which
  :mod:`axon.observability.logging` renders as text or JSON lines; and
- to every sink subscribed to the bus, whatever the log level: the Prometheus metrics, the
  dashboard's timeline and event feed are views of the same events.

Event names, levels and fields are stable (operators and tests rely on them); the catalogue is
:data:`EVENTS`, and docs/logging.md lists it for people.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EVENTS", "LOGGER_NAME", "EventBus", "EventKind", "EventSink"]

LOGGER_NAME = "axon"
_logger = logging.getLogger(LOGGER_NAME)
# A library stays quiet until the application configures logging (``configure_logging`` or
# its own handlers); without this, Python's last-resort handler prints bare event names.
_logger.addHandler(logging.NullHandler())

_D, _I, _W, _E = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR


@dataclass(frozen=True)
class EventKind:
    """What one event name means, at which level(s) it is logged, and its fields."""

    levels: tuple[int, ...]
    """Every level it is logged at (most have one; a few depend on what happened)."""
    fields: tuple[str, ...]
    """Exactly the fields it carries, in order."""
    meaning: str


_WORKER = ("agent", "worker", "pid")

EVENTS: dict[str, EventKind] = {
    "worker.start": EventKind(
        (_I,), ("agent", "worker", "generation"), "a worker process is being spawned"
    ),
    "worker.ready": EventKind(
        (_I,),
        (*_WORKER, "startup_s", "start"),
        "the worker built its agent and can serve; `start`: `fork` (from its agent's zygote) "
        "or `cold` (a new interpreter)",
    ),
    "worker.startup_failed": EventKind(
        (_E,), (*_WORKER, "message"), "the agent could not be imported or built in the worker"
    ),
    "worker.exit": EventKind(
        (_I, _W),
        (*_WORKER, "exit_code", "signal", "reason", "cause", "was_ready"),
        "a worker process ended; WARNING unless the exit was asked for. `cause`: requested, "
        "crashed, exited, startup_failed, spawn_failed, hung, ignored_cancel, startup_timeout, "
        "protocol, unresponsive, connection_lost",
    ),
    "worker.hung": EventKind(
        (_E,), (*_WORKER, "silent_s"), "no heartbeat answer for `silent_s`: it will be killed"
    ),
    "worker.kill": EventKind((_W,), (*_WORKER, "reason"), "Axon SIGKILLs the worker's group"),
    "worker.output": EventKind(
        (_I, _W),
        (*_WORKER, "stream", "line"),
        "one line the worker printed; WARNING for stderr",
    ),
    "worker.output_dropped": EventKind(
        (_W,),
        (*_WORKER, "stream", "lines"),
        "`lines` lines the worker printed were not logged (it printed faster than the log's "
        "rate limit); they were read all the same",
    ),
    "zygote.ready": EventKind(
        (_I,),
        ("agent", "pid", "startup_s"),
        "a zygote can fork: the root (`agent` null) imported pydantic-ai, or an agent's "
        "zygote imported the agent's modules",
    ),
    "zygote.refused": EventKind(
        (_W,),
        ("agent", "reason"),
        "a zygote cannot fork (its import failed or started a thread): those workers start cold",
    ),
    "zygote.exit": EventKind(
        (_I, _W),
        ("agent", "pid", "exit_code", "signal"),
        "a zygote ended (WARNING unless asked to); workers it forked keep running",
    ),
    "zygote.output": EventKind(
        (_I, _W),
        ("agent", "pid", "stream", "line"),
        "one line a zygote printed; WARNING for stderr",
    ),
    "zygote.output_dropped": EventKind(
        (_W,),
        ("agent", "pid", "stream", "lines"),
        "`lines` lines a zygote printed were not logged (over the log's rate limit)",
    ),
    "agent.restart": EventKind(
        (_W,),
        ("agent", "worker", "attempt", "delay_s", "cause"),
        "the supervisor restarts a worker after `delay_s` (backoff)",
    ),
    "agent.failed": EventKind(
        (_E,),
        ("agent", "restarts", "window_s", "cooldown_s"),
        "the restart intensity was exceeded: the agent is FAILED for `cooldown_s`",
    ),
    "agent.state": EventKind(
        (_I,), ("agent", "previous", "state"), "the agent's supervisor changed state"
    ),
    "run.routed": EventKind((_D,), (*_WORKER, "run", "conversation"), "a run was sent to a worker"),
    "run.finished": EventKind(
        (_I, _W),
        ("agent", "conversation", "run", "pid", "outcome", "latency_s", "ttft_s", "commit_s"),
        "a request ended: `outcome` is ok, the error type, or cancelled (the caller left); "
        "WARNING for a crash, timeout, failure, overload or outage",
    ),
    "run.timeout": EventKind(
        (_W,), ("agent", "conversation", "timeout_s"), "a request reached its deadline"
    ),
    "protocol.error": EventKind(
        (_E,),
        (*_WORKER, "message"),
        "a worker broke the protocol (a malformed frame, a result that is not a message list, "
        "a pong to no ping, ...); past a small budget of these it is killed",
    ),
    "task.failed": EventKind(
        (_E,), ("owner", "task", "error"), "a background task raised (a bug in Axon)"
    ),
    "http.listening": EventKind(
        (_I,), ("url", "auth"), "`axon serve` accepts requests (`auth`: a token is required)"
    ),
    "http.shutdown": EventKind(
        (_I,), ("grace_s",), "stopped accepting; in-flight requests get `grace_s` to finish"
    ),
    "http.disconnected": EventKind(
        (_I,),
        ("agent", "conversation", "on_disconnect"),
        "a client left mid-run; its run is cancelled or finishes (`on_disconnect`)",
    ),
    "http.slow_consumer": EventKind(
        (_W,),
        ("agent", "conversation", "pending", "on_disconnect"),
        "a stream's client fell `pending` events behind (it reads too slowly, or not at all): "
        "it is cut like a client that left, and its run is cancelled or finishes "
        "(`on_disconnect`)",
    ),
    "http.cut": EventKind(
        (_W,), ("method", "path"), "a request still running when the shutdown grace ended"
    ),
    "http.internal_error": EventKind(
        (_E,),
        ("method", "path", "error"),
        "an unexpected exception, answered with a bare 500 (a bug in Axon)",
    ),
}
"""Every event Axon emits."""

EventSink = Callable[[str, int, Mapping[str, Any]], None]
"""Receives ``(event, level, fields)`` for every event, synchronously, on the emitting thread.
It must be quick and must not raise (a sink that raises is logged and skipped)."""


class EventBus:
    """One runtime's events: logged, and handed to every subscribed :data:`EventSink`."""

    def __init__(self) -> None:
        self._sinks: tuple[EventSink, ...] = ()

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        """Send every later event to ``sink``; returns a function that unsubscribes it."""
        self._sinks = (*self._sinks, sink)

        def unsubscribe() -> None:
            self._sinks = tuple(s for s in self._sinks if s is not sink)

        return unsubscribe

    def emit(self, event: str, level: int = logging.INFO, /, **fields: Any) -> None:
        """Log one structured event (cheap when the level is disabled) and hand it to the
        sinks."""
        if _logger.isEnabledFor(level):
            _logger.log(level, event, extra={"event": event, "fields": fields})
        for sink in self._sinks:
            try:
                sink(event, level, fields)
            except Exception:  # a broken view must not break the runtime
                _logger.exception("event sink %r failed on %s", sink, event)
