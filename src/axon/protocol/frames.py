"""Frame types of the orchestrator <-> worker protocol, version 2.

Every frame is a msgpack map tagged by its ``kind`` field; msgspec validates each frame against
these types when it is decoded, so an unknown kind or a missing/mistyped field is rejected before
any code acts on it. Frames that belong to a run carry its ``id`` (unique per connection, chosen
by the orchestrator), which is what lets many runs share one socket.

Orchestrator -> worker (:data:`ToWorker`): ``run``, ``cancel``, ``ping``, ``shutdown``, ``error``.
Worker -> orchestrator (:data:`ToOrchestrator`): ``hello``, ``ready``, ``event`` (a
:mod:`axon.stream` event: ``text_delta``, ``tool_call``, ``tool_result``), ``spans``, ``result``,
``error``, ``pong``.

A worker is untrusted input, so what it sends costs the orchestrator no more to decode than its
size on the wire: every field of a worker frame has a concrete type (strings, integers, bytes),
never "any msgpack"; what the agent produced (its output, a tool's arguments or result, its
usage) travels as JSON bytes that the orchestrator checks and relays without building Python
objects from them (it decodes them only when a caller of the Python API reads them); the two
payloads that must be decoded (an error's facts, a traced run's spans) are kept as raw msgpack
until the run they belong to is known, and are decoded only below a size bound. Unknown fields
are skipped without being built.
"""

from __future__ import annotations

from typing import Any

import msgspec

from axon.stream import TextDelta, ToolCall, ToolResult

__all__ = [
    "MAX_ERROR_BYTES",
    "MAX_SPANS_BYTES",
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
    "RunEvent",
    "Shutdown",
    "SpanEventRecord",
    "SpanRecord",
    "Spans",
    "ToOrchestrator",
    "ToWorker",
]

PROTOCOL_VERSION = 2
MAX_ERROR_BYTES = 65_536
"""Largest error payload (an ``AxonError``'s type, message and facts) that is decoded."""
MAX_SPANS_BYTES = 4 * 2**20
"""Largest ``spans`` payload that is decoded; a larger one is dropped (the run is not)."""


class _Frame(msgspec.Struct, tag_field="kind", forbid_unknown_fields=False, omit_defaults=True):
    """Base of every frame. Unknown *fields* are ignored (forward compatible); unknown *kinds*
    are errors."""


class Hello(_Frame, tag="hello"):
    """First frame a worker sends after connecting, before it imports its agent."""

    protocol: int
    pid: int


class Ready(_Frame, tag="ready"):
    """The worker imported its agent and can serve runs now (sent once)."""

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


RunEvent = TextDelta | ToolCall | ToolResult
"""What a worker streams of a run (the public events of :mod:`axon.stream`, as they are)."""


class Event(_Frame, tag="event"):
    """A streaming event of run ``id`` (streamed runs): a :data:`RunEvent`, tagged by its
    ``type``."""

    id: int
    event: RunEvent


class Result(_Frame, tag="result"):
    """Run ``id`` succeeded. ``messages`` are its new messages as pydantic-ai JSON; ``output``
    and ``usage`` are JSON too."""

    id: int
    output: bytes
    messages: bytes
    run_id: str | None = None
    usage: bytes = b"{}"


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


_spans_encoder = msgspec.msgpack.Encoder()
_spans_decoder = msgspec.msgpack.Decoder(list[SpanRecord])


class Spans(_Frame, tag="spans"):
    """The finished spans of traced run ``id``, sent just before its ``result`` or ``error``:
    a msgpack list of :class:`SpanRecord`, decoded by :meth:`records` once the run is known."""

    id: int
    spans: msgspec.Raw

    @classmethod
    def of(cls, run_id: int, records: list[SpanRecord]) -> Spans:
        return cls(id=run_id, spans=msgspec.Raw(_spans_encoder.encode(records)))

    def records(self) -> list[SpanRecord]:
        """The spans; ``ValueError`` if they are over :data:`MAX_SPANS_BYTES` or malformed."""
        if len(self.spans) > MAX_SPANS_BYTES:
            raise ValueError(f"{len(self.spans)} bytes of spans (limit {MAX_SPANS_BYTES})")
        try:
            return _spans_decoder.decode(self.spans)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise ValueError(f"malformed spans: {exc}") from None


ErrorFact = str | int | float | bool | None
_error_encoder = msgspec.msgpack.Encoder()
_error_decoder = msgspec.msgpack.Decoder(dict[str, ErrorFact])


class Error(_Frame, tag="error"):
    """Run ``id`` failed, or (``id`` is None) the peer rejected a frame or failed to start.

    ``error`` is an ``AxonError.to_dict()`` payload (``type``, ``message`` and facts, each a
    string, number, boolean or null) as raw msgpack, decoded by :meth:`payload`."""

    error: msgspec.Raw
    id: int | None = None

    @classmethod
    def of(cls, run_id: int | None, error: dict[str, Any]) -> Error:
        return cls(error=msgspec.Raw(_error_encoder.encode(error)), id=run_id)

    def payload(self) -> dict[str, ErrorFact]:
        """The error's fields; ``ValueError`` if they are over :data:`MAX_ERROR_BYTES` or are
        not a map of names to plain values."""
        if len(self.error) > MAX_ERROR_BYTES:
            raise ValueError(f"an error of {len(self.error)} bytes (limit {MAX_ERROR_BYTES})")
        try:
            return _error_decoder.decode(self.error)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise ValueError(f"malformed error payload: {exc}") from None


class Ping(_Frame, tag="ping"):
    """Heartbeat request; answered from the worker's event loop with ``pong`` of the same seq."""

    seq: int


class Pong(_Frame, tag="pong"):
    seq: int


class Shutdown(_Frame, tag="shutdown"):
    """Stop accepting runs, finish or cancel the ones in flight within ``grace`` s, exit 0."""

    grace: float = 5.0


ToWorker = Run | Cancel | Ping | Shutdown | Error
"""What the orchestrator sends."""
ToOrchestrator = Hello | Ready | Event | Spans | Result | Error | Pong
"""What a worker sends."""
Frame = ToWorker | ToOrchestrator
