"""Checks of what a worker produced, before anyone relies on it (docs/threat-model.md).

A worker is untrusted: the JSON it sends (a run's output and usage, a tool call's arguments, a
tool's result) is relayed as it is by the HTTP edge, so it must be JSON; a run's messages are
appended to the conversation's stored history and given to the next run, so they must be a
pydantic-ai message list exactly as ``ModelMessagesTypeAdapter`` loads it, in strict JSON (no
``NaN``, no trailing bytes, valid UTF-8): one malformed run must never break a conversation for
good. Each check returns why the payload is refused, or None.
"""

from __future__ import annotations

import msgspec

from axon.protocol.frames import Result, RunEvent
from axon.stream import ToolCall, ToolResult

__all__ = ["event_problem", "messages_problem", "result_problem"]


def event_problem(event: RunEvent) -> str | None:
    """Why a streaming event cannot be relayed (its JSON is malformed), or None."""
    if isinstance(event, ToolCall):
        return _json_problem(event.args_json, "tool call arguments")
    if isinstance(event, ToolResult):
        return _json_problem(event.content_json, "a tool result")
    return None


def result_problem(result: Result) -> str | None:
    """Why a result cannot be committed or returned, or None: its output and usage must be
    JSON, its messages a pydantic-ai message list (what the next run will be given)."""
    problem = _json_problem(result.output, "an output") or _json_problem(result.usage, "a usage")
    if problem is not None:
        return problem
    return messages_problem(result.messages)


_raw_json = msgspec.json.Decoder(msgspec.Raw)


def _json_problem(data: bytes, what: str) -> str | None:
    try:
        _raw_json.decode(data)  # a syntax check at C speed: nothing is built
        data.decode()
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return f"{what} that is not JSON ({exc})"
    return None


def messages_problem(messages: bytes) -> str | None:
    """Why ``messages`` is not a pydantic-ai message list (as ``ModelMessagesTypeAdapter``
    loads it) in strict JSON, or None."""
    from pydantic import ValidationError
    from pydantic_ai import ModelMessagesTypeAdapter

    problem = _json_problem(messages, "messages")
    if problem is not None:
        return problem
    try:
        ModelMessagesTypeAdapter.validate_json(messages)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"messages that are not a pydantic-ai message list ({where}: {first['msg']})"
    return None
