"""The typed vocabulary of a run: what ``stream_message`` yields, what crosses the wire from a
worker, what the HTTP API streams as Server-Sent Events and what :class:`~axon.client.AxonClient`
yields back. One definition each, here; adding an event is adding a class to
:data:`STREAM_EVENTS` (and to the worker that sends it).

Every event is a ``msgspec.Struct`` tagged by ``type`` (its SSE event name). What the agent
produced (a tool's arguments or result, a reply's output and usage) is kept as the JSON text the
worker made of it (``args_json``, ``output_json``, ...): the orchestrator checks it and relays it
as it is, and the Python value (``args``, ``output``, ...) is decoded when it is read.

On the wire (msgpack) that JSON travels as bytes. In a Server-Sent Event (:func:`to_sse`) it is
inlined as JSON: ``event: tool_call`` / ``data: {"type": "tool_call", "tool_name": "...",
"args": {...}, "tool_call_id": "..."}``; :func:`from_sse` reads it back.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any

import msgspec

__all__ = [
    "SSE_EVENT_NAMES",
    "STREAM_EVENTS",
    "ErrorEvent",
    "FinalResult",
    "JsonText",
    "Reply",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "event_name",
    "from_sse",
    "reply_json",
    "sse_data",
    "sse_json_schemas",
    "to_sse",
]

_JSON_TEXT = msgspec.Meta(description="JSON text, inlined as JSON outside the wire")
JsonText = Annotated[bytes, _JSON_TEXT]
"""A field holding JSON text: bytes on the wire, inlined JSON in a Server-Sent Event."""
_decode_json = msgspec.json.decode


class Reply(msgspec.Struct, frozen=True):
    """The result of a successful run, already committed to the conversation's history."""

    conversation_id: str
    run_id: str | None
    agent_id: str = ""
    output_json: JsonText = msgspec.field(name="output", default=b"null")
    """The agent's output as JSON."""
    usage_json: JsonText = msgspec.field(name="usage", default=b"{}")
    """The run's usage (tokens, requests) as JSON."""

    @property
    def output(self) -> Any:
        """The agent's output, as JSON-ready data (a ``str`` for text agents)."""
        return _decode_json(self.output_json)

    @property
    def usage(self) -> dict[str, Any]:
        """Token and request counts of the run."""
        return _decode_json(self.usage_json)


class StreamEvent(msgspec.Struct, tag_field="type", frozen=True):
    """One event of a run's stream (the base of each kind)."""

    def sse_fields(self) -> dict[str, Any]:
        """The event's fields as a Server-Sent Event carries them (JSON text inlined)."""
        return _fields_of(self)


class TextDelta(StreamEvent, tag="text_delta", frozen=True):
    """A chunk of the answer's text, in order."""

    text: str


class ToolCall(StreamEvent, tag="tool_call", frozen=True):
    """The agent called a tool."""

    tool_name: str
    args_json: JsonText = msgspec.field(name="args")
    """The call's arguments as JSON."""
    tool_call_id: str = ""

    @property
    def args(self) -> Any:
        """The call's arguments (a dict when the model sent valid JSON arguments)."""
        return _decode_json(self.args_json)


class ToolResult(StreamEvent, tag="tool_result", frozen=True):
    """A tool returned."""

    tool_name: str
    content_json: JsonText = msgspec.field(name="content")
    """What the tool returned, as JSON."""
    tool_call_id: str = ""

    @property
    def content(self) -> Any:
        """What the tool returned."""
        return _decode_json(self.content_json)


class FinalResult(StreamEvent, tag="final", frozen=True):
    """The last event of every successful stream: the committed reply. Its Server-Sent Event's
    data is the reply itself."""

    reply: Reply

    def sse_fields(self) -> dict[str, Any]:
        return _fields_of(self.reply)


class ErrorEvent(StreamEvent, tag="error", frozen=True):
    """The last event of a stream that failed (Server-Sent Events only: the Python API raises
    the error instead): the error envelope's object, ``{"type", "message", ...facts}``, with the
    HTTP ``status`` it stands for."""

    error: dict[str, Any]

    def sse_fields(self) -> dict[str, Any]:
        return {"error": self.error}


STREAM_EVENTS: tuple[type[StreamEvent], ...] = (
    TextDelta,
    ToolCall,
    ToolResult,
    FinalResult,
    ErrorEvent,
)
"""Every kind of event, in the order a stream may carry them."""


def _tag(cls: type[StreamEvent]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


SSE_EVENT_NAMES: tuple[str, ...] = tuple(_tag(cls) for cls in STREAM_EVENTS)
"""The ``event:`` names of a run's Server-Sent Events."""


def _json_fields(cls: type[msgspec.Struct]) -> frozenset[str]:
    """The fields of ``cls`` that hold JSON text."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return frozenset(
        field.name
        for field in msgspec.structs.fields(cls)
        if typing.get_origin(hints[field.name]) is Annotated
        and _JSON_TEXT in typing.get_args(hints[field.name])
    )


def _fields_of(obj: msgspec.Struct) -> dict[str, Any]:
    inline = _json_fields(type(obj))
    return {
        field.encode_name: (
            msgspec.Raw(getattr(obj, field.name))
            if field.name in inline
            else getattr(obj, field.name)
        )
        for field in msgspec.structs.fields(obj)
    }


_to_json = msgspec.json.Encoder()


def event_name(event: StreamEvent) -> str:
    """The event's Server-Sent Event name (its ``type``)."""
    return _tag(type(event))


def sse_data(event: StreamEvent) -> bytes:
    """The JSON ``data`` of the event's Server-Sent Event."""
    data: dict[str, Any] = event.sse_fields()
    if not isinstance(event, FinalResult | ErrorEvent):
        data = {"type": event_name(event), **data}
    return _to_json.encode(data)


def to_sse(event: StreamEvent) -> bytes:
    """``event: NAME`` and one ``data:`` line of JSON, as a Server-Sent Event."""
    return b"event: " + event_name(event).encode() + b"\ndata: " + sse_data(event) + b"\n\n"


def _twin(cls: type[msgspec.Struct], *, schema: bool = False) -> type[msgspec.Struct]:
    """A struct that reads ``cls`` from its JSON form, under its encoded names, with the same
    defaults: its JSON-text fields as ``msgspec.Raw`` (or, for a ``schema``, any JSON)."""
    inline = _json_fields(cls)
    fields: list[Any] = []
    for field in msgspec.structs.fields(cls):
        kind: Any = field.type
        default = field.default
        if field.name in inline:
            kind = Any if schema else msgspec.Raw
            if not field.required:
                default = _decode_json(default) if schema else msgspec.Raw(default)
        if field.required:
            fields.append((field.encode_name, kind))
        else:
            fields.append((field.encode_name, kind, default))
    return msgspec.defstruct(f"{cls.__name__}Json", fields)


def _build(cls: type[msgspec.Struct], read: msgspec.Struct) -> Any:
    """A ``cls`` from what its twin read."""
    inline = _json_fields(cls)
    return cls(
        **{
            field.name: (
                bytes(getattr(read, field.encode_name))
                if field.name in inline
                else getattr(read, field.encode_name)
            )
            for field in msgspec.structs.fields(cls)
        }
    )


_REPLY_JSON = _twin(Reply)
_EVENT_JSON: dict[type[StreamEvent], type[msgspec.Struct]] = {
    cls: _twin(cls) for cls in STREAM_EVENTS if cls is not FinalResult
}
_READERS = {
    _tag(cls): msgspec.json.Decoder(_REPLY_JSON if cls is FinalResult else _EVENT_JSON[cls])
    for cls in STREAM_EVENTS
}


def from_sse(name: str, data: str | bytes) -> StreamEvent | None:
    """The event a Server-Sent Event named ``name`` carries; None for a name this version does
    not know (a newer server's event: skip it). ``msgspec.DecodeError`` (a ``ValueError``) if
    its data does not match."""
    reader = _READERS.get(name)
    if reader is None:
        return None
    read = reader.decode(data)
    if name == _tag(FinalResult):
        return FinalResult(_build(Reply, read))
    cls = next(c for c in STREAM_EVENTS if _tag(c) == name)
    return _build(cls, read)


def reply_json(reply: Reply) -> bytes:
    """A reply as JSON: the body of ``POST .../messages`` and the data of a ``final`` event."""
    return _to_json.encode(_fields_of(reply))


def sse_json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON schema of each event's ``data``, by event name (for the OpenAPI document)."""
    schemas: dict[str, dict[str, Any]] = {}
    for cls in STREAM_EVENTS:
        document = msgspec.json.schema(_twin(Reply if cls is FinalResult else cls, schema=True))
        (schema,) = document["$defs"].values()
        schema.pop("title", None)
        if cls not in (FinalResult, ErrorEvent):
            schema["properties"] = {"type": {"const": _tag(cls)}, **schema["properties"]}
        schemas[_tag(cls)] = schema
    return schemas
