"""Conversation policies and the conversation API, with real workers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic_ai import ModelMessagesTypeAdapter

from axon import (
    AgentNotFound,
    AgentSpec,
    ConversationBusy,
    InvalidRequest,
    RunInterrupted,
)
from axon.testing import user_prompts, wait_until

from ..conftest import MISBEHAVING, StartAxon


async def test_reject_policy_fails_fast_and_leaves_the_running_one_alone(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING, conversation_policy="reject"))
    await axon.send_message("m", "first", conversation_id="c")
    running = asyncio.ensure_future(axon.send_message("m", "sleep:1", conversation_id="c"))
    await wait_until(axon, "m", lambda s: s.in_flight == 1)
    with pytest.raises(ConversationBusy) as caught:
        await axon.send_message("m", "rejected", conversation_id="c")
    assert caught.value.conversation_id == "c"
    assert caught.value.reason == "in_progress"
    assert (await running).output == "slept 1"
    # Other conversations are never affected by one conversation's run.
    assert (await axon.send_message("m", "other", conversation_id="d")).output == "echo: other"
    assert user_prompts(await axon.history("c")) == ["first", "sleep:1"]


async def test_interrupt_cancels_the_running_run_and_runs_the_new_one(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING))
    await axon.send_message("m", "first", conversation_id="c")
    pid = axon.agent("m").workers[0].pid
    running = asyncio.ensure_future(axon.send_message("m", "sleep:30", conversation_id="c"))
    await wait_until(axon, "m", lambda s: s.in_flight == 1)
    newer = await axon.send_message("m", "newer", conversation_id="c", policy="interrupt")
    assert newer.output == "echo: newer"
    with pytest.raises(RunInterrupted) as caught:
        await running
    assert caught.value.conversation_id == "c"
    # The interrupted run committed nothing; what was committed before stays; the worker
    # honoured the cancel (same pid, no restart).
    assert user_prompts(await axon.history("c")) == ["first", "newer"]
    assert axon.agent("m").workers[0].pid == pid
    assert axon.agent("m").restarts == 0


async def test_enqueue_is_the_default_and_a_per_message_policy_overrides_the_agents(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING, conversation_policy="reject"))
    running = asyncio.ensure_future(axon.send_message("m", "sleep:0.5", conversation_id="c"))
    await wait_until(axon, "m", lambda s: s.in_flight == 1)
    queued = await axon.send_message("m", "queued", conversation_id="c", policy="enqueue")
    assert queued.output == "echo: queued"
    await running
    assert user_prompts(await axon.history("c")) == ["sleep:0.5", "queued"]


async def test_an_unknown_policy_is_invalid_request(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING))
    with pytest.raises(InvalidRequest) as caught:
        await axon.send_message("m", "x", policy="shove")
    assert caught.value.field == "policy"


async def test_list_page_export_and_delete_conversations(start_axon: StartAxon) -> None:
    axon = await start_axon(
        AgentSpec(id="a", agent=MISBEHAVING), AgentSpec(id="b", agent=MISBEHAVING)
    )
    for cid in ("a-3", "a-1", "a-2"):
        await axon.send_message("a", f"hello {cid}", conversation_id=cid)
    await axon.send_message("a", "again", conversation_id="a-1")
    await axon.send_message("b", "hello b", conversation_id="b-1")

    listed = await axon.list_conversations("a")
    assert [c.conversation_id for c in listed] == ["a-1", "a-2", "a-3"]
    assert [c.revision for c in listed] == [2, 1, 1]
    assert all(c.agent_id == "a" for c in listed)
    page = await axon.list_conversations("a", limit=2, after="a-1")
    assert [c.conversation_id for c in page] == ["a-2", "a-3"]
    everything = await axon.list_conversations()
    assert [c.conversation_id for c in everything] == ["a-1", "a-2", "a-3", "b-1"]

    full = await axon.history("a-1")
    assert len(full) == 4  # two runs of request + response
    assert await axon.history("a-1", offset=2) == full[2:]
    assert await axon.history("a-1", offset=1, limit=2) == full[1:3]

    exported = await axon.export_conversation("a-1")
    assert ModelMessagesTypeAdapter.validate_json(exported) == full

    assert await axon.delete_conversation("a-1") is True
    assert await axon.delete_conversation("a-1") is False
    assert await axon.history("a-1") == []
    assert [c.conversation_id for c in await axon.list_conversations("a")] == ["a-2", "a-3"]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda axon: axon.history("c", offset=-1), "offset"),
        (lambda axon: axon.history("c", limit=0), "limit"),
        (lambda axon: axon.list_conversations(limit=5000), "limit"),
        (lambda axon: axon.list_conversations(after="../x"), "conversation_id"),
        (lambda axon: axon.export_conversation("a b"), "conversation_id"),
    ],
)
async def test_conversation_api_rejects_bad_arguments(
    start_axon: StartAxon, call, field: str
) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING))
    with pytest.raises(InvalidRequest) as caught:
        await call(axon)
    assert caught.value.field == field


async def test_listing_an_unknown_agent_is_agent_not_found(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="m", agent=MISBEHAVING))
    with pytest.raises(AgentNotFound):
        await axon.list_conversations("nope")
