"""Streaming: event order, the final result, commit, cancellation by closing the iterator, and
concurrent streams, against real worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, cast

from pydantic_ai.messages import ModelResponse, TextPart

from axon import AgentSpec, FinalResult, StreamEvent, TextDelta, ToolCall, ToolResult
from axon.testing import user_prompts, wait_until

from ..conftest import MISBEHAVING, WEATHER, StartAxon


def args_of(call: ToolCall) -> Any:
    """A tool call's arguments: always parsed data, whatever form the model streamed them in."""
    assert isinstance(call.args, dict), f"tool args not parsed: {call.args!r}"
    return call.args


def chunks(n: int) -> list[str]:
    return [f"chunk-{i} " for i in range(n)]


def shape(messages: Sequence[Any]) -> list[tuple[str, list[str]]]:
    """A history's structure: message kinds and their part kinds."""
    return [(m.kind, [p.part_kind for p in m.parts]) for m in messages]


def final_text(messages: Sequence[Any]) -> str:
    last = messages[-1]
    assert isinstance(last, ModelResponse)
    return "".join(p.content for p in last.parts if isinstance(p, TextPart))


def deltas(events: Sequence[StreamEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def final(events: Sequence[StreamEvent]) -> FinalResult:
    finals = [e for e in events if isinstance(e, FinalResult)]
    assert len(finals) == 1, f"{len(finals)} FinalResult events"
    assert events[-1] is finals[0], "FinalResult is not the last event"
    return finals[0]


async def collect(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


async def test_stream_yields_tools_then_text_then_one_final_result(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="weather", agent=WEATHER))
    prompt = "What is the weather in Lisbon?"
    events = await collect(axon.stream_message("weather", prompt, conversation_id="s-1"))

    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    tool_events = [e for e in events if isinstance(e, ToolCall | ToolResult)]
    assert all(not isinstance(e, ToolCall | ToolResult) for e in events[first_text:])
    assert tool_events == events[:first_text], "something other than tools before the text"
    assert [(type(e).__name__, e.tool_name) for e in tool_events] == [
        ("ToolCall", "get_lat_lng"),
        ("ToolResult", "get_lat_lng"),
        ("ToolCall", "get_weather"),
        ("ToolResult", "get_weather"),
    ]
    assert tool_events[0].tool_call_id == tool_events[1].tool_call_id
    assert tool_events[2].tool_call_id == tool_events[3].tool_call_id
    assert tool_events[0].tool_call_id != tool_events[2].tool_call_id
    assert isinstance(tool_events[0], ToolCall)
    assert isinstance(tool_events[2], ToolCall)
    assert args_of(tool_events[0]) == {"location_description": "Lisbon"}
    assert set(args_of(tool_events[2])) == {"lat", "lng"}

    result = final(events)
    text = deltas(events)
    assert len(text) > 1, "the answer was not streamed in pieces"
    assert result.reply.output == "".join(text)
    assert result.reply.output.endswith(f'(you asked: "{prompt}")')
    assert result.reply.conversation_id == "s-1"
    assert axon.agent("weather").in_flight == 0


async def test_streamed_run_is_committed_like_a_plain_run(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="weather", agent=WEATHER))
    prompt = "What is the weather in Oslo?"
    events = await collect(axon.stream_message("weather", prompt, conversation_id="streamed"))
    plain = await axon.send_message("weather", prompt, conversation_id="plain")

    streamed_history = await axon.history("streamed")
    plain_history = await axon.history("plain")
    assert user_prompts(streamed_history) == [prompt]
    assert shape(streamed_history) == shape(plain_history)
    assert len(streamed_history) == 6  # prompt, 2 x (tool call, tool return), answer
    assert final_text(streamed_history) == final(events).reply.output == plain.output

    # The streamed turn is a real part of the conversation: a next turn builds on it.
    follow_up = "What is the weather in Bergen?"
    events = await collect(axon.stream_message("weather", follow_up, conversation_id="streamed"))
    assert follow_up in final(events).reply.output
    history = await axon.history("streamed")
    assert user_prompts(history) == [prompt, follow_up]
    assert history[:6] == streamed_history
    assert final_text(history) == final(events).reply.output


async def test_text_deltas_arrive_while_the_run_is_still_in_flight(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="mis", agent=MISBEHAVING))
    events: list[StreamEvent] = []
    in_flight_at: list[int] = []
    async for event in axon.stream_message("mis", "stream:5:0.2", conversation_id="slow-stream"):
        events.append(event)
        in_flight_at.append(axon.agent("mis").in_flight)

    assert [type(e) for e in events] == [TextDelta] * 5 + [FinalResult]
    assert deltas(events) == chunks(5)
    # The first delta was delivered while the run was still going (0.8 s of chunks to come),
    # the final only once it had ended. (Later deltas are not checked: the last one and the
    # result leave the worker back to back.)
    assert in_flight_at[0] == 1
    assert in_flight_at[-1] == 0
    assert final(events).reply.output == "".join(chunks(5))
    assert user_prompts(await axon.history("slow-stream")) == ["stream:5:0.2"]


async def test_closing_the_stream_early_cancels_the_run_and_commits_nothing(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(AgentSpec(id="mis", agent=MISBEHAVING))
    pid = axon.agent("mis").workers[0].pid
    gen = cast(
        AsyncGenerator[StreamEvent],
        # Far longer than the wait below: only a cancelled run can end in time.
        axon.stream_message("mis", "stream:600:0.1", conversation_id="closed"),
    )
    first = await anext(gen)
    assert first == TextDelta("chunk-0 ")
    assert axon.agent("mis").in_flight == 1
    await gen.aclose()

    status = await wait_until(axon, "mis", lambda s: s.in_flight == 0, timeout=15)
    # The worker honoured the cancel: it was not killed and replaced.
    assert status.restarts == 0
    assert [w.pid for w in status.workers] == [pid]
    assert await axon.history("closed") == []

    # The conversation is free again and only the new run is committed.
    reply = await axon.send_message("mis", "after close", conversation_id="closed")
    assert reply.output == "echo: after close"
    assert user_prompts(await axon.history("closed")) == ["after close"]
    assert axon.agent("mis").workers[0].pid == pid


async def test_two_streams_on_different_conversations_interleave(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="mis", agent=MISBEHAVING, max_concurrency=4))
    log: list[tuple[str, StreamEvent, int]] = []
    long_started = asyncio.Event()

    async def consume(name: str, prompt: str) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        async for event in axon.stream_message("mis", prompt, conversation_id=f"conv-{name}"):
            events.append(event)
            log.append((name, event, axon.agent("mis").in_flight))
            long_started.set()
        return events

    long_task = asyncio.create_task(consume("long", "stream:20:0.2"))
    await long_started.wait()
    short_events = await consume("short", "stream:4:0.1")
    long_events = await long_task

    assert deltas(long_events) == chunks(20)
    assert deltas(short_events) == chunks(4)
    assert final(long_events).reply.output == "".join(chunks(20))
    assert final(short_events).reply.output == "".join(chunks(4))
    assert final(long_events).reply.conversation_id == "conv-long"
    assert final(short_events).reply.conversation_id == "conv-short"

    # The short stream ran entirely inside the long one: its chunks came between the long
    # stream's, with both runs in flight on the worker.
    names = [name for name, _, _ in log]
    first_short, last_short = names.index("short"), len(names) - 1 - names[::-1].index("short")
    assert "long" in names[:first_short]
    assert "long" in names[last_short + 1 :]
    short_in_flight = [n for name, e, n in log if name == "short" and isinstance(e, TextDelta)]
    assert short_in_flight[0] == 2, "the short stream did not run alongside the long one"

    assert user_prompts(await axon.history("conv-long")) == ["stream:20:0.2"]
    assert user_prompts(await axon.history("conv-short")) == ["stream:4:0.1"]


async def test_concurrent_weather_streams_each_get_only_their_own_events(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(
        AgentSpec(id="weather", agent=WEATHER, env={"AXON_EXAMPLE_LATENCY": "0.05"})
    )
    cities = [f"City{i}" for i in range(8)]
    prompts = [f"What is the weather in {city}?" for city in cities]
    streams = await asyncio.gather(
        *(
            collect(axon.stream_message("weather", p, conversation_id=f"w-{i}"))
            for i, p in enumerate(prompts)
        )
    )
    for i, (city, prompt, events) in enumerate(zip(cities, prompts, streams, strict=True)):
        calls = [e for e in events if isinstance(e, ToolCall)]
        assert [c.tool_name for c in calls] == ["get_lat_lng", "get_weather"]
        assert args_of(calls[0]) == {"location_description": city}
        result = final(events).reply
        assert result.conversation_id == f"w-{i}"
        assert result.output == "".join(deltas(events))
        assert result.output.startswith(f"The weather in {city} is ")
        assert result.output.endswith(f'(you asked: "{prompt}")')
        assert final_text(await axon.history(f"w-{i}")) == result.output
