"""In-process tests of the example agents (only the commands that are safe inside pytest)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pydantic_ai.models
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
)
from pydantic_ai.models.function import FunctionModel

from axon.examples import weather
from axon.examples.misbehaving import (
    crash_at_startup,
    flaky_startup,
    make_misbehaving_agent,
    misbehaving_agent,
    raise_at_startup,
)
from axon.examples.weather import get_lat_lng, get_weather, make_weather_agent, weather_agent


@pytest.fixture(autouse=True)
def no_real_models() -> Iterator[None]:
    """Any request to a real (network) model fails; FunctionModel is exempt."""
    with pydantic_ai.models.override_allow_model_requests(False):
        assert pydantic_ai.models.ALLOW_MODEL_REQUESTS is False
        yield


@pytest.fixture(autouse=True)
def no_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AXON_EXAMPLE_LATENCY", raising=False)
    monkeypatch.delenv("AXON_STARTUP_FAILURES_FILE", raising=False)


def tool_calls(messages: list[ModelMessage]) -> list[str]:
    return [
        part.tool_name
        for message in messages
        if isinstance(message, ModelResponse)
        for part in message.parts
        if isinstance(part, ToolCallPart)
    ]


async def stream(agent: Agent[None, str], prompt: str) -> tuple[list[object], list[str]]:
    """All events of a streamed run, and the text pieces (start + deltas) in order."""
    events: list[object] = []
    texts: list[str] = []
    async with agent.run_stream_events(prompt) as run:
        async for event in run:
            events.append(event)
            if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                texts.append(event.part.content)
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                texts.append(event.delta.content_delta)
    return events, texts


# ------------------------------------------------------------------------------------ basics


def test_real_model_requests_are_blocked() -> None:
    with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
        pydantic_ai.models.check_allow_model_requests()


def test_exports() -> None:
    assert isinstance(weather_agent, Agent)
    assert weather_agent.name == "weather"
    assert isinstance(weather_agent.model, FunctionModel)
    assert isinstance(misbehaving_agent, Agent)
    assert misbehaving_agent.name == "misbehaving"
    assert isinstance(misbehaving_agent.model, FunctionModel)
    fresh = make_weather_agent()
    assert isinstance(fresh, Agent)
    assert fresh is not weather_agent
    assert make_misbehaving_agent() is not misbehaving_agent
    assert callable(crash_at_startup)  # calling it would kill pytest


def test_tools_are_deterministic() -> None:
    a, b = get_lat_lng("Paris"), get_lat_lng("Paris")
    assert a == b
    assert -90 <= a["lat"] <= 90
    assert -180 <= a["lng"] <= 180
    assert get_lat_lng("London") != a
    w = get_weather(a["lat"], a["lng"])
    assert w == get_weather(a["lat"], a["lng"])
    assert isinstance(w["temperature"], int)
    assert isinstance(w["description"], str)


# ----------------------------------------------------------------------------------- weather


async def test_weather_run_quotes_prompt_and_calls_tools() -> None:
    prompt = "What is the weather in python_agent_1 on 417?"
    result = await weather_agent.run(prompt)
    assert f'"{prompt}"' in result.output
    assert result.output.startswith("The weather in python_agent_1 is ")
    assert tool_calls(result.all_messages()) == ["get_lat_lng", "get_weather"]
    first_call = next(
        part
        for message in result.all_messages()
        if isinstance(message, ModelResponse)
        for part in message.parts
        if isinstance(part, ToolCallPart)
    )
    assert first_call.args_as_dict() == {"location_description": "python_agent_1"}
    expected = get_weather(**get_lat_lng("python_agent_1"))
    assert f"{expected['temperature']}°C and {expected['description']}" in result.output
    assert result.usage.requests == 3


@pytest.mark.parametrize(
    ("prompt", "location"),
    [
        ("What is the weather in Paris?", "Paris"),
        ("weather in London", "London"),
        ("Tell me about Tokyo", "Tell me about Tokyo"),
    ],
)
async def test_weather_location_extraction(prompt: str, location: str) -> None:
    result = await weather_agent.run(prompt)
    assert result.output.startswith(f"The weather in {location} is ")
    assert result.output.endswith(f'(you asked: "{prompt}")')


async def test_weather_answers_latest_prompt_with_history() -> None:
    first = await weather_agent.run("What is the weather in Paris?")
    second = await weather_agent.run(
        "What is the weather in Berlin on 2?", message_history=first.all_messages()
    )
    assert '"What is the weather in Berlin on 2?"' in second.output
    assert "Paris" not in second.output
    assert tool_calls(second.new_messages()) == ["get_lat_lng", "get_weather"]
    assert tool_calls(second.all_messages()) == ["get_lat_lng", "get_weather"] * 2


async def test_weather_streaming_events() -> None:
    prompt = "What is the weather in python_agent_2 on 5?"
    events, texts = await stream(weather_agent, prompt)
    calls = [e.part.tool_name for e in events if isinstance(e, FunctionToolCallEvent)]
    results = [e.part.tool_name for e in events if isinstance(e, FunctionToolResultEvent)]
    assert calls == ["get_lat_lng", "get_weather"]
    assert results == ["get_lat_lng", "get_weather"]
    assert len(texts) > 2
    assert sum(isinstance(e, PartDeltaEvent) for e in events) > 1
    text = "".join(texts)
    assert text == (await weather_agent.run(prompt)).output


async def test_weather_latency_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep
    delays: list[float] = []

    async def recording_sleep(delay: float, result: object = None) -> object:
        delays.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(weather.asyncio, "sleep", recording_sleep)
    monkeypatch.setenv("AXON_EXAMPLE_LATENCY", "0.25")
    await weather_agent.run("What is the weather in Oslo?")
    assert delays.count(0.25) == 3  # one per model request

    delays.clear()
    await stream(weather_agent, "What is the weather in Oslo?")
    assert delays.count(0.25) == 3

    delays.clear()
    monkeypatch.setenv("AXON_EXAMPLE_LATENCY", "0")
    await weather_agent.run("What is the weather in Oslo?")
    assert 0.25 not in delays


# ------------------------------------------------------------------------------- misbehaving


async def test_misbehaving_echo() -> None:
    result = await misbehaving_agent.run("hello there")
    assert result.output == "echo: hello there"
    result = await misbehaving_agent.run("sleep:not-a-number")
    assert result.output == "echo: sleep:not-a-number"


async def test_misbehaving_sleep_and_hang() -> None:
    assert (await misbehaving_agent.run("sleep:0.01")).output == "slept 0.01"
    assert (await misbehaving_agent.run("hang:0.01")).output == "hung 0.01"
    assert (await misbehaving_agent.run("ignore-cancel:0.01")).output == "ignored-cancel 0.01"


async def test_misbehaving_sleep_is_cancellable() -> None:
    task = asyncio.create_task(misbehaving_agent.run("sleep:30"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_misbehaving_ignore_cancel_delays_cancellation() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(misbehaving_agent.run("ignore-cancel:0.4"))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.1)
    assert not task.done()  # the cancellation was swallowed
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert loop.time() - started >= 0.35


async def test_misbehaving_stream_non_streamed() -> None:
    result = await misbehaving_agent.run("stream:3:0")
    assert result.output == "chunk-0 chunk-1 chunk-2 "


async def test_misbehaving_stream_streamed() -> None:
    _, texts = await stream(misbehaving_agent, "stream:4:0.01")
    assert texts == ["chunk-0 ", "chunk-1 ", "chunk-2 ", "chunk-3 "]


async def test_misbehaving_tool() -> None:
    result = await misbehaving_agent.run("tool")
    assert result.output == "echo_tool: tool"
    assert tool_calls(result.all_messages()) == ["echo_tool"]
    events, texts = await stream(misbehaving_agent, "tool")
    assert [e.part.tool_name for e in events if isinstance(e, FunctionToolCallEvent)] == [
        "echo_tool"
    ]
    assert "".join(texts) == "echo_tool: tool"


async def test_misbehaving_raise() -> None:
    with pytest.raises(RuntimeError, match=r"^boom$"):
        await misbehaving_agent.run("raise:boom")
    with pytest.raises(RuntimeError, match=r"^with: colons$"):
        await stream(misbehaving_agent, "raise:with: colons")


async def test_misbehaving_uses_latest_prompt() -> None:
    first = await misbehaving_agent.run("tool")
    second = await misbehaving_agent.run("again", message_history=first.all_messages())
    assert second.output == "echo: again"


# ----------------------------------------------------------------------- start-up factories


def test_raise_at_startup() -> None:
    with pytest.raises(RuntimeError, match=r"^simulated start-up failure$"):
        raise_at_startup()


def test_flaky_startup_counts_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = tmp_path / "failures"
    counter.write_text("2")
    monkeypatch.setenv("AXON_STARTUP_FAILURES_FILE", str(counter))
    with pytest.raises(RuntimeError, match=r"\(2 left\)"):
        flaky_startup()
    assert counter.read_text().strip() == "1"
    with pytest.raises(RuntimeError, match=r"\(1 left\)"):
        flaky_startup()
    assert counter.read_text().strip() == "0"
    agent = flaky_startup()
    assert isinstance(agent, Agent)
    assert agent.name == "misbehaving"
    assert counter.read_text().strip() == "0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failures", "failures.lock"]


def test_flaky_startup_without_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(flaky_startup(), Agent)
    monkeypatch.setenv("AXON_STARTUP_FAILURES_FILE", str(tmp_path / "missing"))
    assert isinstance(flaky_startup(), Agent)
