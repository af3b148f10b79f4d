"""Helpers for writing scripted :class:`~pydantic_ai.models.function.FunctionModel` agents.

Shared by the offline example agents (:mod:`axon.examples.weather` and
:mod:`axon.examples.misbehaving`), whose model functions decide each step from the current turn
of the conversation: a step is either a tool call (:class:`ToolCallPart`) or the answer text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import DeltaToolCall, DeltaToolCalls

__all__ = [
    "current_turn",
    "prompt_text",
    "seconds_arg",
    "step_response",
    "tool_call",
    "tool_call_delta",
]


def prompt_text(part: UserPromptPart) -> str:
    """The text of a user prompt: its string content, or its string items joined."""
    if isinstance(part.content, str):
        return part.content
    return "".join(item for item in part.content if isinstance(item, str))


def current_turn(messages: Sequence[ModelMessage]) -> tuple[str, list[ToolReturnPart]]:
    """The last user prompt of the conversation and the tool returns that came after it.

    The prompt is returned as written (not stripped); it is ``""`` if there is none.
    """
    prompt = ""
    start = 0
    for index, message in enumerate(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart):
                    prompt = prompt_text(part)
                    start = index
    returns = [
        part
        for message in messages[start:]
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]
    return prompt, returns


def tool_call(tool_name: str, args: dict[str, Any]) -> ToolCallPart:
    """A call of ``tool_name`` with ``args`` and a fresh random id ``call_<16 hex digits>``."""
    return ToolCallPart(tool_name, args, tool_call_id=f"call_{uuid.uuid4().hex[:16]}")


def step_response(step: ToolCallPart | str) -> ModelResponse:
    """The (non-streamed) model response for a step: the tool call, or the answer text."""
    if isinstance(step, ToolCallPart):
        return ModelResponse(parts=[step])
    return ModelResponse(parts=[TextPart(step)])


def tool_call_delta(call: ToolCallPart) -> DeltaToolCalls:
    """The whole tool call as a single streamed delta (at index ``0``)."""
    return {
        0: DeltaToolCall(
            name=call.tool_name,
            json_args=call.args_as_json_str(),
            tool_call_id=call.tool_call_id,
        )
    }


def seconds_arg(text: str) -> float | None:
    """``text`` as a non-negative number of seconds, or None (a malformed command argument)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None
