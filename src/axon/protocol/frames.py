"""Frame types of the orchestrator <-> worker protocol, version 1.

Every frame is a msgpack map tagged by its ``kind`` field; msgspec validates each frame against
these types when it is decoded, so an unknown kind or a missing/mistyped field is rejected before
any code acts on it. Frames that belong to a run carry its ``id`` (unique per connection, chosen
by the orchestrator), which is what lets many runs share one socket.

Orchestrator -> worker: ``run``, ``cancel``, ``ping``, ``shutdown``.
Worker -> orchestrator: ``hello``, ``ready``, ``event``, ``result``, ``error``, ``pong``.
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


Frame = Hello | Ready | Run | Cancel | Event | Result | Error | Ping | Pong | Shutdown
