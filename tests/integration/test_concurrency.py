"""Concurrency: many requests over many agents, many requests on one conversation, parallel
conversations, back-pressure and least-loaded routing, all against real worker processes.

The weather agent quotes the exact prompt in its answer, so a reply (or a committed history)
that belongs to another request is detected by content, not only by count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic_ai.messages import (
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from axon import AgentSpec, Axon, Overloaded, Reply
from axon.testing import user_prompts

from ..conftest import MISBEHAVING, WEATHER, StartAxon

# ------------------------------------------------------------------------------------ helpers


def quote(prompt: str) -> str:
    """What the weather agent's answer contains for ``prompt``."""
    return f'(you asked: "{prompt}")'


@dataclass
class RunRecord:
    """One run as committed in a history: its prompt, its tool calls, its final text."""

    prompt: str
    tool_calls: list[str]
    tool_returns: list[str]
    final_text: str


def split_runs(messages: Sequence[Any]) -> list[RunRecord]:
    """Split a weather history into runs, checking each run's shape on the way.

    Every run must be contiguous: a request holding exactly one user prompt, then only tool
    traffic, then a response whose text is the final answer, which ends the run.
    """
    runs: list[RunRecord] = []
    current: RunRecord | None = None
    for index, message in enumerate(messages):
        if isinstance(message, ModelRequest):
            prompts = [p.content for p in message.parts if isinstance(p, UserPromptPart)]
            returns = [p.tool_name for p in message.parts if isinstance(p, ToolReturnPart)]
            if prompts:
                assert len(prompts) == 1, f"message {index} holds several prompts: {prompts}"
                assert current is None or current.final_text, (
                    f"message {index}: prompt {prompts[0]!r} interleaved into the unfinished "
                    f"run of {current.prompt!r}"
                )
                assert not returns, f"message {index} mixes a prompt with tool returns"
                prompt = prompts[0]
                assert isinstance(prompt, str)
                current = RunRecord(prompt, [], [], "")
                runs.append(current)
            else:
                assert current is not None, f"message {index}: tool returns before any prompt"
                assert not current.final_text, f"message {index}: tool returns after an answer"
                current.tool_returns.extend(returns)
        else:
            assert isinstance(message, ModelResponse)
            assert current is not None, f"message {index}: a response before any prompt"
            assert not current.final_text, f"message {index}: a response after the answer"
            current.tool_calls.extend(
                p.tool_name for p in message.parts if isinstance(p, ToolCallPart)
            )
            text = "".join(p.content for p in message.parts if isinstance(p, TextPart))
            if text:
                current.final_text = text
    assert current is None or current.final_text, f"the last run {current} has no final answer"
    return runs


def assert_weather_run(run: RunRecord, prompt: str) -> None:
    assert run.prompt == prompt
    assert run.tool_calls == ["get_lat_lng", "get_weather"], run
    assert run.tool_returns == ["get_lat_lng", "get_weather"], run
    assert quote(prompt) in run.final_text, run


async def assert_history_is_exactly(axon: Axon, conversation_id: str, prompts: list[str]) -> None:
    runs = split_runs(await axon.history(conversation_id))
    assert [r.prompt for r in runs] == prompts, conversation_id
    for run, prompt in zip(runs, prompts, strict=True):
        assert_weather_run(run, prompt)


async def poll(
    predicate: Callable[[], bool],
    *,
    unfinished: Iterable[asyncio.Task[Any]] = (),
    timeout: float = 20.0,
    what: str = "condition",
) -> None:
    """Poll runtime state until ``predicate()`` holds (bounded by ``timeout``).

    Fails at once if one of ``unfinished`` ends first: the state can no longer be reached.
    """
    watched = list(unfinished)
    async with asyncio.timeout(timeout):
        while not predicate():
            ended = [t for t in watched if t.done()]
            if ended:
                raise AssertionError(f"a run ended before {what} was observed: {ended[0]!r}")
            await asyncio.sleep(0.01)


def weather_agents(*ids: str, **kw: Any) -> list[AgentSpec]:
    return [AgentSpec(id=agent_id, agent=WEATHER, **kw) for agent_id in ids]


# ------------------------------------------------------------------------ the seed's two tests


async def test_concurrent_requests_to_two_agents(start_axon: StartAxon) -> None:
    """Seed test 1: two agents x 10 concurrent requests; every reply is its own, with tools."""
    agent_ids = ["python_agent_1", "python_agent_2"]
    axon = await start_axon(*weather_agents(*agent_ids))
    requests = [
        (agent_id, f"What is the weather in {agent_id} on {n}?")
        for agent_id in agent_ids
        for n in range(10)
    ]
    replies = await asyncio.gather(*(axon.send_message(a, p) for a, p in requests))

    assert len({r.conversation_id for r in replies}) == len(requests)
    for (agent_id, prompt), reply in zip(requests, replies, strict=True):
        assert reply.agent_id == agent_id
        assert isinstance(reply.output, str)
        assert quote(prompt) in reply.output
        assert reply.output.startswith(f"The weather in {agent_id} is ")
        await assert_history_is_exactly(axon, reply.conversation_id, [prompt])


async def test_concurrent_requests_to_the_same_agent(start_axon: StartAxon) -> None:
    """Seed test 2: 10 concurrent requests to one agent."""
    axon = await start_axon(*weather_agents("python_agent_1"))
    prompts = [f"What is the weather in python_agent_1 on {n}?" for n in range(10)]
    replies = await asyncio.gather(*(axon.send_message("python_agent_1", p) for p in prompts))

    assert len({r.conversation_id for r in replies}) == len(prompts)
    assert len({r.run_id for r in replies}) == len(prompts)
    for prompt, reply in zip(prompts, replies, strict=True):
        assert quote(prompt) in reply.output
        await assert_history_is_exactly(axon, reply.conversation_id, [prompt])


# --------------------------------------------------------------------------------- at scale


async def test_500_requests_over_4_agents_without_cross_talk(start_axon: StartAxon) -> None:
    """400 one-turn conversations and 50 two-turn conversations (500 requests), all at once
    with at most 64 in flight: every request succeeds, every reply quotes its own prompt, and
    every conversation's history holds exactly its own prompts, in order."""
    agent_ids = [f"weather-{i}" for i in range(4)]
    axon = await start_axon(*weather_agents(*agent_ids))
    gate = asyncio.Semaphore(64)

    async def send(agent_id: str, prompt: str, cid: str) -> Reply:
        async with gate:
            return await axon.send_message(agent_id, prompt, conversation_id=cid)

    async def conversation(n: int, turns: int) -> tuple[str, list[str], list[Reply]]:
        agent_id = agent_ids[n % len(agent_ids)]
        cid = f"load-{n}"
        prompts = [f"What is the weather in City{n} on turn {t}?" for t in range(turns)]
        replies = [await send(agent_id, prompt, cid) for prompt in prompts]
        return agent_id, prompts, replies

    plans = [(n, 1) for n in range(400)] + [(n, 2) for n in range(400, 450)]
    assert sum(turns for _, turns in plans) == 500
    results = await asyncio.gather(*(conversation(n, turns) for n, turns in plans))

    for (n, _turns), (agent_id, prompts, replies) in zip(plans, results, strict=True):
        for prompt, reply in zip(prompts, replies, strict=True):
            assert reply.conversation_id == f"load-{n}"
            assert reply.agent_id == agent_id
            assert quote(prompt) in reply.output, (prompt, reply.output)
            assert reply.output.startswith(f"The weather in City{n} is ")
        await assert_history_is_exactly(axon, f"load-{n}", prompts)
    assert all(a.in_flight == 0 for a in axon.agents())


# ------------------------------------------------------------------------ one conversation


async def test_concurrent_sends_to_one_conversation_are_serialised_in_arrival_order(
    start_axon: StartAxon,
) -> None:
    """20 concurrent sends to one conversation (on 2 workers): each exchange is committed
    exactly once, contiguously, and in the order the calls arrived."""
    axon = await start_axon(*weather_agents("weather", workers=2))
    prompts = [f"What is the weather in Town{n} on {n}?" for n in range(20)]
    completed: list[int] = []

    async def send(n: int) -> Reply:
        reply = await axon.send_message("weather", prompts[n], conversation_id="shared")
        completed.append(n)
        return reply

    tasks: list[asyncio.Task[Reply]] = []
    for n in range(20):
        tasks.append(asyncio.create_task(send(n)))
        await asyncio.sleep(0)  # let task n reach the conversation's queue before n + 1 starts
    replies = await asyncio.gather(*tasks)

    for prompt, reply in zip(prompts, replies, strict=True):
        assert reply.conversation_id == "shared"
        assert quote(prompt) in reply.output
    runs = split_runs(await axon.history("shared"))
    history_order = [prompts.index(r.prompt) for r in runs]
    assert history_order == completed, "committed order differs from completion order"
    assert completed == list(range(20)), "runs did not complete in arrival order"
    for run, prompt in zip(runs, prompts, strict=True):
        assert_weather_run(run, prompt)
    assert user_prompts(await axon.history("shared")) == prompts


async def test_different_conversations_run_in_parallel_on_one_worker(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(AgentSpec(id="slow", agent=MISBEHAVING, max_concurrency=4))
    a = asyncio.create_task(axon.send_message("slow", "sleep:1", conversation_id="par-a"))
    b = asyncio.create_task(axon.send_message("slow", "sleep:1", conversation_id="par-b"))

    await poll(
        lambda: axon.agent("slow").in_flight == 2,
        unfinished=[a, b],
        what="both conversations running at once",
    )
    assert [w.in_flight for w in axon.agent("slow").workers] == [2]
    ra, rb = await asyncio.gather(a, b)
    assert ra.output == rb.output == "slept 1"
    assert user_prompts(await axon.history("par-a")) == ["sleep:1"]
    assert user_prompts(await axon.history("par-b")) == ["sleep:1"]


async def test_runs_of_one_conversation_never_overlap(start_axon: StartAxon) -> None:
    """The counterpart of the test above: the same two runs on ONE conversation are never in
    flight together, although the worker has room for both."""
    axon = await start_axon(AgentSpec(id="slow", agent=MISBEHAVING, max_concurrency=4))
    first = asyncio.create_task(axon.send_message("slow", "sleep:0.5", conversation_id="one"))
    await asyncio.sleep(0)  # task creation order: first reaches the conversation's queue first
    second = asyncio.create_task(axon.send_message("slow", "sleep:0.6", conversation_id="one"))
    observed: set[int] = set()
    async with asyncio.timeout(20):
        while not (first.done() and second.done()):
            observed.add(axon.agent("slow").in_flight)
            await asyncio.sleep(0.01)
    assert (await first).output == "slept 0.5"
    assert (await second).output == "slept 0.6"
    assert 1 in observed, observed
    assert max(observed) == 1, observed
    assert user_prompts(await axon.history("one")) == ["sleep:0.5", "sleep:0.6"]


# ------------------------------------------------------------------ back-pressure and routing


async def test_full_queue_is_overloaded_at_once_and_queued_runs_complete(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(
        AgentSpec(id="narrow", agent=MISBEHAVING, workers=1, max_concurrency=1, queue_size=2)
    )

    running = asyncio.create_task(axon.send_message("narrow", "sleep:2", conversation_id="bp-0"))
    await poll(lambda: axon.agent("narrow").in_flight == 1, unfinished=[running], what="run 1")
    queued = [
        asyncio.create_task(axon.send_message("narrow", f"queued {i}", conversation_id=f"bp-{i}"))
        for i in (1, 2)
    ]
    await poll(
        lambda: axon.agent("narrow").queued == 2, unfinished=[running, *queued], what="a full queue"
    )

    with pytest.raises(Overloaded) as caught:
        await axon.send_message("narrow", "one too many", conversation_id="bp-3")
    # Rejected while the slot is still held: it did not wait for room.
    assert not running.done()
    assert axon.agent("narrow").in_flight == 1
    facts = caught.value.to_dict()
    assert facts["retry_after"] > 0
    assert facts["queue_size"] == 2
    assert facts["agent_id"] == "narrow"
    assert facts["type"] == "overloaded"

    first, *rest = await asyncio.gather(running, *queued)
    assert first.output == "slept 2"
    assert [r.output for r in rest] == ["echo: queued 1", "echo: queued 2"]
    assert await axon.history("bp-3") == []
    assert axon.agent("narrow").queued == 0
    # The queue drained completely: a new request is admitted again.
    again = await axon.send_message("narrow", "after", conversation_id="bp-3")
    assert again.output == "echo: after"


async def test_concurrent_runs_go_to_the_least_loaded_worker(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="pool", agent=MISBEHAVING, workers=2, max_concurrency=4))
    runs = [
        asyncio.create_task(axon.send_message("pool", "sleep:1", conversation_id=f"ll-{i}"))
        for i in range(2)
    ]
    await poll(lambda: axon.agent("pool").in_flight == 2, unfinished=runs, what="two runs")
    assert sorted(w.in_flight for w in axon.agent("pool").workers) == [1, 1]
    assert [r.output for r in await asyncio.gather(*runs)] == ["slept 1", "slept 1"]
