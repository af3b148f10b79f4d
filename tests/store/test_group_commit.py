"""Group commit on the real stores (a SQLite file, a schema of the test PostgreSQL server):
concurrent commits share one transaction, and each run still gets its own revision guard, its
own outcome and its own error."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from axon.errors import StoreConflict, StoreUnavailable
from axon.store.postgres import PostgresStore
from axon.store.sqlite import SqliteStore
from axon.testing.store_conformance import exchange, prompts_of, to_json

from ..conftest import POSTGRES_DSN, sqlite_write_lock

Store = SqliteStore | PostgresStore


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "axon.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore.from_url(postgres_url)
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


async def commit(store: Store, cid: str, at: int, prompt: str) -> int:
    return await store.commit(
        cid, agent_id="a", expected_revision=at, messages=to_json(exchange(prompt))
    )


async def insert_run_behind_the_stores_back(store: Store, cid: str, seq: int) -> None:
    """A run row the conversation's revision does not know of (a hand-edited table)."""
    if isinstance(store, SqliteStore):
        conn = sqlite3.connect(store.path)
        with conn:
            conn.execute(
                "INSERT INTO runs (conversation_id, seq, messages, committed_at)"
                " VALUES (?, ?, ?, 0)",
                (cid, seq, b"[]"),
            )
        conn.close()
        return
    admin: Any = await asyncpg.connect(
        POSTGRES_DSN, server_settings={"search_path": f'"{store.schema}"'}
    )
    try:
        await admin.execute(
            "INSERT INTO axon_runs (conversation_id, seq, messages, committed_at)"
            " VALUES ($1, $2, $3, 0)",
            cid,
            seq,
            b"[]",
        )
    finally:
        await admin.close()


async def test_concurrent_commits_share_one_transaction_each_with_its_own_guard(
    store: Store,
) -> None:
    ids = [f"c{i:02}" for i in range(40)]
    await asyncio.gather(*(commit(store, cid, 0, f"{cid} first") for cid in ids))
    before = (store.group_commit.batches, store.group_commit.runs)

    # Even conversations commit at their revision, odd ones at a stale one, all at once.
    outcomes = await asyncio.gather(
        *(commit(store, cid, 1 - i % 2, f"{cid} second") for i, cid in enumerate(ids)),
        return_exceptions=True,
    )

    assert (store.group_commit.batches, store.group_commit.runs) == (
        before[0] + 1,
        before[1] + 40,
    ), "the 40 commits, queued together, went in one transaction"
    for i, (cid, outcome) in enumerate(zip(ids, outcomes, strict=True)):
        history = await store.load(cid)
        if i % 2 == 0:
            assert outcome == 2
            assert prompts_of(history.messages) == [f"{cid} first", f"{cid} second"]
        else:
            assert isinstance(outcome, StoreConflict), outcome
            assert (outcome.expected, outcome.actual) == (0, 1)
            assert prompts_of(history.messages) == [f"{cid} first"]
        assert history.revision == len(prompts_of(history.messages))


async def test_a_conversation_is_never_twice_in_one_batch(store: Store) -> None:
    outcomes = await asyncio.gather(
        commit(store, "one", 0, "first try"),
        commit(store, "two", 0, "other"),
        commit(store, "one", 0, "second try"),
        return_exceptions=True,
    )

    assert outcomes[:2] == [1, 1]
    assert isinstance(outcomes[2], StoreConflict)
    assert store.group_commit.batches == 2, "the second 'one' waited for the next batch"
    assert prompts_of((await store.load("one")).messages) == ["first try"]


async def test_batches_keep_to_their_limits(store: Store) -> None:
    store.group_commit.max_runs = 4
    await asyncio.gather(*(commit(store, f"r{i}", 0, "x") for i in range(10)))
    assert (store.group_commit.batches, store.group_commit.runs) == (3, 10)  # 4 + 4 + 2

    store.group_commit.max_runs = 128
    store.group_commit.max_bytes = 1  # every run is over it: one run per batch
    await asyncio.gather(*(commit(store, f"b{i}", 0, "x") for i in range(3)))
    assert (store.group_commit.batches, store.group_commit.runs) == (6, 13)


async def test_a_run_that_breaks_its_batch_is_retried_alone_and_spares_the_others(
    store: Store,
) -> None:
    ids = [f"c{i}" for i in range(8)]
    for cid in ids:
        await commit(store, cid, 0, f"{cid} first")
    await insert_run_behind_the_stores_back(store, "c3", seq=2)

    outcomes = await asyncio.gather(
        *(commit(store, cid, 1, f"{cid} second") for cid in ids), return_exceptions=True
    )

    for cid, outcome in zip(ids, outcomes, strict=True):
        if cid == "c3":  # its seq 2 exists: a conflict (Postgres) or an integrity error (SQLite)
            assert isinstance(outcome, StoreConflict | sqlite3.IntegrityError), outcome
            [info] = [c for c in await store.list_conversations() if c.conversation_id == cid]
            assert info.revision == 1, "its failed commit changed nothing"
        else:
            assert outcome == 2, (cid, outcome)
            assert prompts_of((await store.load(cid)).messages)[-1] == f"{cid} second"


async def test_a_failed_batch_fails_each_run_with_its_own_error_and_writes_nothing(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "axon.db", busy_timeout=0.3)
    await store.open()
    try:
        async with sqlite_write_lock(store.path):
            outcomes = await asyncio.gather(
                *(commit(store, f"c{i}", 0, "x") for i in range(5)), return_exceptions=True
            )
        assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
        assert len({id(o) for o in outcomes}) == 5, "each caller raises its own error object"
        assert not any(o.maybe_committed for o in outcomes if isinstance(o, StoreUnavailable))
        assert await store.list_conversations() == []
        assert await commit(store, "c0", 0, "after") == 1  # and the store recovers
    finally:
        await store.close()


async def test_a_caller_cancelled_while_queued_is_never_committed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "axon.db", busy_timeout=30)
    await store.open()
    group = store.group_commit
    try:
        async with sqlite_write_lock(store.path):
            # "held" is in flight (its transaction waits for the lock); two more queue behind it.
            held = asyncio.create_task(commit(store, "held", 0, "x"))
            await _until(lambda: group.active and group.queued == 0)
            kept = asyncio.create_task(commit(store, "kept", 0, "x"))
            dropped = asyncio.create_task(commit(store, "dropped", 0, "x"))
            await _until(lambda: group.queued == 2)
            dropped.cancel()
            with pytest.raises(asyncio.CancelledError):
                await dropped
            assert group.queued == 1
        assert await held == 1
        assert await kept == 1
        assert (await store.load("dropped")).revision == 0
        assert [c.conversation_id for c in await store.list_conversations()] == ["held", "kept"]
        assert (group.batches, group.runs) == (2, 2)
    finally:
        await store.close()


async def _until(condition: Any) -> None:
    """Yield to the loop until ``condition()`` holds (state that changes without an event)."""
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0)
