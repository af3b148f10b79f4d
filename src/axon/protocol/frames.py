"""Frame types of the orchestrator <-> worker protocol, version 1.

Every frame is a msgpack map tagged by its ``kind`` field; msgspec validates each frame against
these types when it is decoded, so an unknown kind or a missing/mistyped field is rejected before
any code acts on it. Frames that belong to a run carry its ``id`` (unique per connection, chosen
by the orchestrator), which is what lets many runs share one socket.

Orchestrator -> worker: ``run``, ``cancel``, ``ping``, ``shutdown``.
Worker -> orchestrator: ``hello``, ``ready``, ``event``, ``spans``, ``result``, ``error``,
``pong``.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "PROTOCOL_VERSION",
    "Cancel",
    "Error",
    "Event",
    "Frame",
    "Hello",
    "Ping",
    "Pong",
    "Ready",
    "Result",
    "Run",
    "Shutdown",
    "SpanEventRecord",
    "SpanRecord",
    "Spans",
]

PROTOCOL_VERSION = 1


class _Frame(msgspec.Struct, tag_field="kind", forbid_unknown_fields=False, omit_defaults=True):
    """Base of every frame. Unknown *fields* are ignored (forward compatible); unknown *kinds*
    are errors."""


class Hello(_Frame, tag="hello"):
    """First frame a worker sends after connecting, before it imports its agent."""

    protocol: int
    pid: int


class Ready(_Frame, tag="ready"):
    """The worker imported its agent and can serve runs now."""

    protocol: int
    pid: int
    agent_name: str | None = None
    max_concurrency: int = 1


class Run(_Frame, tag="run"):
    """Start one agent run. ``history`` is the conversation so far as pydantic-ai JSON
    (``ModelMessagesTypeAdapter``); ``timeout`` is the seconds left before the caller's deadline."""

    id: int
    prompt: str
    history: bytes = b"[]"
    conversation_id: str | None = None
    timeout: float | None = None
    stream: bool = False
    trace: dict[str, str] | None = None
    """The orchestrator's span for this run, as W3C trace-context headers (``traceparent``,
    maybe ``tracestate``/``baggage``); None (and omitted) when tracing is off."""


class Cancel(_Frame, tag="cancel"):
    """Cancel run ``id``; the worker answers with an ``error`` frame of type ``cancelled``."""

    id: int


class Event(_Frame, tag="event"):
    """A streaming event of run ``id``: ``type`` is ``text_delta``, ``tool_call`` or
    ``tool_result``; ``data`` holds its fields."""

    id: int
    type: str
    data: dict[str, Any] = {}


class Result(_Frame, tag="result"):
    """Run ``id`` succeeded. ``messages`` are its new messages as pydantic-ai JSON."""

    id: int
    output: Any
    messages: bytes
    run_id: str | None = None
    usage: dict[str, Any] = {}


class SpanEventRecord(msgspec.Struct, omit_defaults=True):
    """One event of a :class:`SpanRecord` (e.g. a recorded exception)."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = {}


class SpanRecord(msgspec.Struct, omit_defaults=True):
    """One finished span of a worker, as plain data the orchestrator re-creates.

    ``parent_id`` is the span id of its parent in the worker's trace: a span of the same run,
    or, for the run's top span, the orchestrator's span named in the run's ``trace``. ``kind``
    is an OpenTelemetry ``SpanKind`` name in lower case, ``status`` one of ``unset``, ``ok``,
    ``error``; times are nanoseconds since the epoch."""

    name: str
    span_id: int
    start_ns: int
    end_ns: int
    parent_id: int | None = None
    kind: str = "internal"
    attributes: dict[str, Any] = {}
    events: list[SpanEventRecord] = []
    status: str = "unset"
    status_message: str | None = None
    scope: str = ""
    scope_version: str | None = None


class Spans(_Frame, tag="spans"):
    """The finished spans of traced run ``id``, sent just before its ``result`` or ``error``."""

    id: int
    spans: list[SpanRecord] = []


class Error(_Frame, tag="error"):
    """Run ``id`` failed, or (``id`` is None) the peer rejected a frame or failed to start.

    ``error`` is an ``AxonError.to_dict()`` payload (``type``, ``message`` and facts)."""

    error: dict[str, Any]
    id: int | None = None


class Ping(_Frame, tag="ping"):
    """Heartbeat request; answered from the worker's event loop with ``pong`` of the same seq."""

    seq: int


class Pong(_Frame, tag="pong"):
    seq: int


class Shutdown(_Frame, tag="shutdown"):
    """Stop accepting runs, finish or cancel the ones in flight within ``grace`` s, exit 0."""

    grace: float = 5.0


Frame = Hello | Ready | Run | Cancel | Event | Spans | Result | Error | Ping | Pong | Shutdown
