"""The conformance suite every conversation store passes: Axon's own three and yours.

Subclass :class:`StoreConformance` in a test module (its name must start with ``Test`` for pytest
to collect it) and give it a ``store`` fixture that yields an OPENED store on an empty database
and closes it afterwards. The tests need ``pytest`` and ``pytest-asyncio`` (the tests are marked
``asyncio``; an async fixture needs ``asyncio_mode = "auto"`` or ``@pytest_asyncio.fixture``)::

    import pytest
    from axon.testing.store_conformance import StoreConformance

    from myapp.store import RedisStore

    class TestRedisStore(StoreConformance):
        @pytest.fixture
        async def store(self, redis_url):
            store = RedisStore(redis_url)
            await store.open()
            yield store
            await store.close()

A store whose data does not outlive ``close()`` sets ``persistent = False``. The suite reopens a
persistent store with ``close()`` then ``open()`` on the same object; override :meth:`reopen` if
yours needs a new object instead.

This module imports pytest and pydantic-ai; ``axon.testing`` does not import it, so the other
helpers work without pytest.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import ClassVar

import pytest
from pydantic_ai import ModelMessagesTypeAdapter
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from axon.errors import AxonError, StoreConflict, StoreUnavailable
from axon.store.base import ConversationStore

__all__ = ["StoreConformance", "exchange", "prompts_of", "to_json"]


def exchange(prompt: str, reply: str | None = None, *, tool: bool = False) -> list[ModelMessage]:
    """The messages of one run: a user prompt and a text answer (with a tool round trip first
    if ``tool``), like pydantic-ai's ``result.new_messages()``."""
    answer = reply if reply is not None else f"answer to {prompt}"
    if not tool:
        return [
            ModelRequest(parts=[UserPromptPart(prompt)]),
            ModelResponse(parts=[TextPart(answer)], model_name="conformance"),
        ]
    call_id = f"call-{prompt}"
    return [
        ModelRequest(parts=[SystemPromptPart("You are a test."), UserPromptPart(prompt)]),
        ModelResponse(
            parts=[ToolCallPart("lookup", {"query": prompt, "n": 3}, tool_call_id=call_id)],
            model_name="conformance",
        ),
        ModelRequest(parts=[ToolReturnPart("lookup", {"found": [1, 2, 3]}, tool_call_id=call_id)]),
        ModelResponse(parts=[TextPart(answer)], model_name="conformance"),
    ]


def to_json(messages: Sequence[ModelMessage]) -> bytes:
    """Messages as the pydantic-ai JSON array a store is given."""
    return ModelMessagesTypeAdapter.dump_json(list(messages))


def prompts_of(messages: bytes) -> list[str]:
    """The user prompts of a stored JSON history, in order."""
    return [
        part.content
        for message in ModelMessagesTypeAdapter.validate_json(messages)
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart) and isinstance(part.content, str)
    ]


def _parsed(messages: bytes) -> list[ModelMessage]:
    return list(ModelMessagesTypeAdapter.validate_json(messages))


@pytest.mark.asyncio
class StoreConformance:
    """The contract of :class:`~axon.store.base.ConversationStore`, as tests."""

    persistent: ClassVar[bool] = True
    """Whether the data outlives ``close()`` (False for an in-memory store)."""

    @pytest.fixture
    def store(self) -> ConversationStore:
        raise NotImplementedError("subclasses provide a `store` fixture yielding an opened store")

    async def reopen(self, store: ConversationStore) -> ConversationStore:
        """The same database, closed and opened again."""
        await store.close()
        await store.open()
        return store

    # -- reading and writing ----------------------------------------------------------------

    async def test_unknown_conversation_is_empty_at_revision_0(
        self, store: ConversationStore
    ) -> None:
        history = await store.load("never-written")
        assert json.loads(history.messages) == []
        assert history.revision == 0
        assert await store.list_conversations() == []

    async def test_ping_answers_when_open_and_refuses_when_closed(
        self, store: ConversationStore
    ) -> None:
        await store.ping()
        if self.persistent:  # a closed database store cannot answer
            await store.close()
            with pytest.raises(StoreUnavailable):
                await store.ping()
            await store.open()
            await store.ping()

    async def test_commit_then_load_round_trips_pydantic_ai_messages(
        self, store: ConversationStore
    ) -> None:
        run = exchange("weather in Paris?", tool=True)
        revision = await store.commit(
            "c1", agent_id="a", expected_revision=0, messages=to_json(run)
        )
        assert revision == 1
        history = await store.load("c1")
        assert history.revision == 1
        assert _parsed(history.messages) == run

    async def test_histories_concatenate_in_commit_order(self, store: ConversationStore) -> None:
        runs = [exchange("one"), exchange("two", tool=True), exchange("three")]
        for expected, run in enumerate(runs):
            new = await store.commit(
                "c1", agent_id="a", expected_revision=expected, messages=to_json(run)
            )
            assert new == expected + 1
        history = await store.load("c1")
        assert history.revision == 3
        assert _parsed(history.messages) == runs[0] + runs[1] + runs[2]
        assert prompts_of(history.messages) == ["one", "two", "three"]

    async def test_stale_revision_conflicts_and_writes_nothing(
        self, store: ConversationStore
    ) -> None:
        first = exchange("first")
        await store.commit("c1", agent_id="a", expected_revision=0, messages=to_json(first))
        for wrong in (0, 2, 7):
            with pytest.raises(StoreConflict) as caught:
                await store.commit(
                    "c1", agent_id="a", expected_revision=wrong, messages=to_json(exchange("x"))
                )
            assert isinstance(caught.value, AxonError)
            assert caught.value.facts == {"conversation_id": "c1", "expected": wrong, "actual": 1}
        history = await store.load("c1")
        assert (history.revision, _parsed(history.messages)) == (1, first)
        # A conversation that does not exist is at revision 0: committing at 1 creates nothing.
        with pytest.raises(StoreConflict):
            await store.commit("c2", agent_id="a", expected_revision=1, messages=to_json(first))
        assert (await store.load("c2")).revision == 0
        assert [c.conversation_id for c in await store.list_conversations()] == ["c1"]

    async def test_concurrent_first_commits_exactly_one_wins(
        self, store: ConversationStore
    ) -> None:
        runs = [exchange(f"writer-{i}") for i in range(5)]
        outcomes = await asyncio.gather(
            *(
                store.commit("c1", agent_id="a", expected_revision=0, messages=to_json(run))
                for run in runs
            ),
            return_exceptions=True,
        )
        winners = [i for i, outcome in enumerate(outcomes) if outcome == 1]
        assert len(winners) == 1, outcomes
        losers = [o for i, o in enumerate(outcomes) if i not in winners]
        assert all(isinstance(o, StoreConflict) for o in losers), outcomes
        history = await store.load("c1")
        assert (history.revision, _parsed(history.messages)) == (1, runs[winners[0]])

    async def test_concurrent_writers_retrying_on_conflict_lose_nothing(
        self, store: ConversationStore
    ) -> None:
        """Many writers of ONE conversation, each retrying load + commit until it lands: every
        run is in the history exactly once, whole, with no interleaving."""

        runs = {f"w{i}": exchange(f"w{i}") for i in range(12)}

        async def writer(prompt: str) -> None:
            while True:
                at = (await store.load("c1")).revision
                try:
                    await store.commit(
                        "c1", agent_id="a", expected_revision=at, messages=to_json(runs[prompt])
                    )
                    return
                except StoreConflict:
                    await asyncio.sleep(0)

        await asyncio.gather(*(writer(prompt) for prompt in runs))
        history = await store.load("c1")
        assert history.revision == 12
        prompts = prompts_of(history.messages)
        assert sorted(prompts) == sorted(runs)
        assert _parsed(history.messages) == [m for p in prompts for m in runs[p]]

    async def test_many_conversations_commit_in_parallel(self, store: ConversationStore) -> None:
        ids = [f"conv-{i:02d}" for i in range(50)]
        revisions = await asyncio.gather(
            *(
                store.commit(
                    cid, agent_id="a", expected_revision=0, messages=to_json(exchange(cid))
                )
                for cid in ids
            )
        )
        assert revisions == [1] * 50
        histories = await asyncio.gather(*(store.load(cid) for cid in ids))
        assert [prompts_of(h.messages) for h in histories] == [[cid] for cid in ids]
        assert [c.conversation_id for c in await store.list_conversations(limit=100)] == ids

    # -- delete and list ----------------------------------------------------------------------

    async def test_delete_forgets_the_conversation(self, store: ConversationStore) -> None:
        for at in range(2):
            await store.commit(
                "c1", agent_id="a", expected_revision=at, messages=to_json(exchange(f"p{at}"))
            )
        await store.commit("c2", agent_id="a", expected_revision=0, messages=to_json(exchange("q")))
        assert await store.delete("c1") is True
        gone = await store.load("c1")
        assert (json.loads(gone.messages), gone.revision) == ([], 0)
        assert await store.delete("c1") is False
        assert [c.conversation_id for c in await store.list_conversations()] == ["c2"]
        assert prompts_of((await store.load("c2")).messages) == ["q"]
        # The id can be used again: a new conversation, without the old messages.
        again = exchange("fresh")
        assert await store.commit("c1", agent_id="b", expected_revision=0, messages=to_json(again))
        reborn = await store.load("c1")
        assert (reborn.revision, _parsed(reborn.messages)) == (1, again)

    async def test_list_conversations_filters_orders_and_pages(
        self, store: ConversationStore
    ) -> None:
        owners = {"m": "a", "c": "b", "x": "a", "b": "a", "k": "b", "a": "a", "z": "a"}
        for cid, agent in owners.items():  # committed out of id order
            await store.commit(
                cid, agent_id=agent, expected_revision=0, messages=to_json(exchange(cid))
            )
        await store.commit("m", agent_id="a", expected_revision=1, messages=to_json(exchange("m2")))

        everything = await store.list_conversations()
        assert [c.conversation_id for c in everything] == sorted(owners)
        of_a = await store.list_conversations("a")
        assert [c.conversation_id for c in of_a] == ["a", "b", "m", "x", "z"]
        assert all(c.agent_id == "a" for c in of_a)
        assert [c.conversation_id for c in await store.list_conversations("b")] == ["c", "k"]
        assert await store.list_conversations("nobody") == []

        info = {c.conversation_id: c for c in everything}
        assert (info["m"].revision, info["a"].revision) == (2, 1)
        assert info["m"].created_at <= info["m"].updated_at
        assert info["m"].updated_at >= info["z"].created_at  # m's 2nd commit came after z's 1st
        assert all(c.created_at > 0 for c in everything)

        pages: list[list[str]] = []
        after: str | None = None
        while page := await store.list_conversations("a", limit=2, after=after):
            pages.append([c.conversation_id for c in page])
            after = page[-1].conversation_id
        assert pages == [["a", "b"], ["m", "x"], ["z"]]
        assert [c.conversation_id for c in await store.list_conversations(after="k")] == [
            "m",
            "x",
            "z",
        ]
        assert [c.conversation_id for c in await store.list_conversations(limit=1)] == ["a"]

    # -- life cycle ---------------------------------------------------------------------------

    async def test_open_twice_is_harmless(self, store: ConversationStore) -> None:
        await store.commit("c1", agent_id="a", expected_revision=0, messages=to_json(exchange("p")))
        await store.open()
        history = await store.load("c1")
        assert (history.revision, prompts_of(history.messages)) == (1, ["p"])
        assert await store.commit(
            "c1", agent_id="a", expected_revision=1, messages=to_json(exchange("q"))
        )

    async def test_reopened_store_has_everything(self, store: ConversationStore) -> None:
        if not self.persistent:
            # A non-persistent store must say so honestly: after close() it starts empty.
            await store.commit(
                "c1", agent_id="a", expected_revision=0, messages=to_json(exchange("p"))
            )
            store = await self.reopen(store)
            assert (await store.load("c1")).revision == 0
            assert await store.list_conversations() == []
            return
        runs = [exchange("one", tool=True), exchange("two")]
        for at, run in enumerate(runs):
            await store.commit("c1", agent_id="a", expected_revision=at, messages=to_json(run))
        await store.commit("c2", agent_id="b", expected_revision=0, messages=to_json(runs[1]))
        listed = await store.list_conversations()

        store = await self.reopen(store)
        history = await store.load("c1")
        assert (history.revision, _parsed(history.messages)) == (2, runs[0] + runs[1])
        assert await store.list_conversations() == listed
        assert await store.commit(
            "c1", agent_id="a", expected_revision=2, messages=to_json(exchange("three"))
        )
        assert prompts_of((await store.load("c1")).messages) == ["one", "two", "three"]

    # -- content ------------------------------------------------------------------------------

    async def test_unicode_and_control_characters_survive(self, store: ConversationStore) -> None:
        texts = [
            "Grüße, ça va? 日本語のテキスト 🚀🧪 עברית",
            'quotes " \\ backslash \n newline \t tab',
            "a NUL \x00 in the middle, \x1f and \u2028 too",
        ]
        run: list[ModelMessage] = []
        for text in texts:
            run += exchange(text, reply=text[::-1])
        await store.commit("c-ü", agent_id="agent-ß", expected_revision=0, messages=to_json(run))
        assert _parsed((await store.load("c-ü")).messages) == run
        [info] = await store.list_conversations("agent-ß")
        assert info.conversation_id == "c-ü"

    async def test_large_messages_survive(self, store: ConversationStore) -> None:
        big = "".join(chr(0x20 + i % 90) for i in range(1_000_000)) + "é" * 1000
        runs = [exchange(big, reply=big[::-1]), exchange("after the big one")]
        for at, run in enumerate(runs):
            await store.commit("c1", agent_id="a", expected_revision=at, messages=to_json(run))
        history = await store.load("c1")
        assert len(history.messages) > 2_000_000
        assert _parsed(history.messages) == runs[0] + runs[1]
