"""What a worker produced is checked before anyone relies on it: its output and tool payloads
must be JSON, its messages a pydantic-ai message list (``axon.protocol.payloads``)."""

from __future__ import annotations

import pytest
from pydantic_ai import ModelMessagesTypeAdapter
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

from axon.protocol.frames import Result
from axon.protocol.payloads import event_problem, messages_problem, result_problem
from axon.store.base import join_json_arrays
from axon.stream import TextDelta, ToolCall, ToolResult

GOOD = ModelMessagesTypeAdapter.dump_json(
    [ModelRequest(parts=[UserPromptPart("hi")]), ModelResponse(parts=[TextPart("hello")])]
)


def test_a_real_message_list_passes() -> None:
    assert messages_problem(GOOD) is None
    assert messages_problem(b"[]") is None
    assert result_problem(Result(id=1, output=b'"hello"', messages=GOOD)) is None


@pytest.mark.parametrize(
    ("messages", "why"),
    [
        (b'{"x": 1}', "not a list"),
        (b'[{"kind": "gossip", "parts": []}]', "an unknown kind"),
        (b'[{"kind": "request"}]', "a request without parts"),
        (b"[1, 2]", "not objects"),
        (GOOD[:-1] + b', {"kind": "response", "parts": [], "x": NaN}]', "NaN is not JSON"),
        (GOOD + b" x", "trailing bytes"),
        (GOOD[:-1] + b', "\xff"]', "invalid UTF-8"),
        (b'[{"kind": "response", "parts": []}], "injected": {"a": [{"b": 1}]', "escapes"),
        (b"", "empty"),
    ],
)
def test_what_is_not_a_message_list_is_refused(messages: bytes, why: str) -> None:
    assert messages_problem(messages) is not None, why
    assert result_problem(Result(id=1, output=b"null", messages=messages)) is not None


def test_a_refused_array_could_have_escaped_the_stored_history() -> None:
    # Why the check matters: stored runs are joined as bytes into one JSON array.
    crafted = b'[{"kind": "response", "parts": []}], "injected": {"a": [{"b": 1}]'
    joined = join_json_arrays([GOOD, crafted])
    assert b'"injected"' in joined
    assert messages_problem(joined) is not None


@pytest.mark.parametrize(
    "result",
    [
        Result(id=1, output=b"{not json", messages=GOOD),
        Result(id=1, output=b'"x"', messages=GOOD, usage=b"{"),
        Result(id=1, output=b'"\xff"', messages=GOOD),
    ],
)
def test_an_output_or_usage_that_is_not_json_is_refused(result: Result) -> None:
    assert result_problem(result) is not None


def test_tool_payloads_must_be_json() -> None:
    assert event_problem(TextDelta("anything")) is None
    assert event_problem(ToolCall("t", b'{"a": 1}', "c")) is None
    assert event_problem(ToolCall("t", b"{", "c")) is not None
    assert event_problem(ToolResult("t", b"[1]", "c")) is None
    assert event_problem(ToolResult("t", b"NaN", "c")) is not None
