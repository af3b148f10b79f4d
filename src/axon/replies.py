"""What a run gives back: the final :class:`Reply` and the typed events of a stream.

What the agent produced (its output and usage, a tool's arguments and result) arrives from the
worker as JSON and is kept as JSON (``output_json``, ``args_json``, ...): the HTTP edge relays it
as it is, and the Python values (``output``, ``args``, ...) are decoded the first time they are
read. So a worker's output costs the orchestrator its size, never more, unless a caller of the
Python API asks for the objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgspec

__all__ = ["FinalResult", "Reply", "StreamEvent", "TextDelta", "ToolCall", "ToolResult"]

_decode = msgspec.json.decode


@dataclass(frozen=True)
class Reply:
    """The result of a successful run, already committed to the conversation's history."""

    conversation_id: str
    run_id: str | None
    agent_id: str = ""
    output_json: bytes = b"null"
    """The agent's output as JSON."""
    usage_json: bytes = b"{}"
    """The run's usage (tokens, requests) as JSON."""

    @cached_property
    def output(self) -> Any:
        """The agent's output, as JSON-ready data (a ``str`` for text agents)."""
        return _decode(self.output_json)

    @cached_property
    def usage(self) -> dict[str, Any]:
        """Token and request counts of the run."""
        return _decode(self.usage_json)


@dataclass(frozen=True)
class TextDelta:
    """A chunk of the answer's text, in order."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """The agent called a tool."""

    tool_name: str
    args_json: bytes
    """The call's arguments as JSON."""
    tool_call_id: str

    @cached_property
    def args(self) -> Any:
        """The call's arguments (a dict when the model sent valid JSON arguments)."""
        return _decode(self.args_json)


@dataclass(frozen=True)
class ToolResult:
    """A tool returned."""

    tool_name: str
    content_json: bytes
    """What the tool returned, as JSON."""
    tool_call_id: str

    @cached_property
    def content(self) -> Any:
        """What the tool returned."""
        return _decode(self.content_json)


@dataclass(frozen=True)
class FinalResult:
    """The last event of every successful stream: the committed reply."""

    reply: Reply


StreamEvent = TextDelta | ToolCall | ToolResult | FinalResult
