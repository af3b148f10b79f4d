"""What a run gives back: the final :class:`Reply` and the typed events of a stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FinalResult", "Reply", "StreamEvent", "TextDelta", "ToolCall", "ToolResult"]


@dataclass(frozen=True)
class Reply:
    """The result of a successful run, already committed to the conversation's history."""

    output: Any
    """The agent's output, as JSON-ready data (a ``str`` for text agents)."""
    conversation_id: str
    run_id: str | None
    usage: dict[str, Any] = field(default_factory=dict)
    agent_id: str = ""


@dataclass(frozen=True)
class TextDelta:
    """A chunk of the answer's text, in order."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """The agent called a tool."""

    tool_name: str
    args: Any
    tool_call_id: str


@dataclass(frozen=True)
class ToolResult:
    """A tool returned."""

    tool_name: str
    content: Any
    tool_call_id: str


@dataclass(frozen=True)
class FinalResult:
    """The last event of every successful stream: the committed reply."""

    reply: Reply


StreamEvent = TextDelta | ToolCall | ToolResult | FinalResult
