"""What the SQLite store adds to the conformance suite: URLs, durability settings, locks held by
another process, unusable paths, and versioned migrations. Real files throughout."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from axon.errors import ConfigError, StoreConflict, StoreUnavailable
from axon.store import open_store
from axon.store.migrations import Migration
from axon.store.sqlite import MIGRATIONS, SqliteStore
from axon.testing.store_conformance import exchange, prompts_of, to_json

from ..conftest import sqlite_write_lock


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "axon.db", busy_timeout=0.3)
    await store.open()
    yield store
    await store.close()


def sqlite_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("axon-sqlite")]


def rows(path: str | Path, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` run on a separate plain sqlite3 connection (another reader of the file)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def commit(store: SqliteStore, cid: str, at: int, prompt: str) -> int:
    return await store.commit(
        cid, agent_id="a", expected_revision=at, messages=to_json(exchange(prompt))
    )


# ------------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("url", "path", "busy_timeout"),
    [
        ("sqlite:///relative.db", "relative.db", 5.0),
        ("sqlite:///data/axon.db", "data/axon.db", 5.0),
        ("sqlite:////abs/path.db", "/abs/path.db", 5.0),
        ("sqlite:////abs/path.db?busy_timeout=0.25", "/abs/path.db", 0.25),
        ("sqlite:///:memory:", ":memory:", 5.0),
    ],
)
def test_url_names_the_file(url: str, path: str, busy_timeout: float) -> None:
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    assert (store.path, store.busy_timeout) == (path, busy_timeout)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("sqlite://relative.db", "not a SQLite URL"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///a.db?busy_timeout=-1", "busy_timeout"),
        ("sqlite:///a.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///a.db?journal=off", "unknown SQLite option 'journal'"),
    ],
)
def test_bad_url_is_a_config_error(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as caught:
        SqliteStore.from_url(url)
    assert caught.value.key == "runtime.store"


# ----------------------------------------------------------------------- durability settings


async def test_wal_mode_synchronous_normal_foreign_keys_and_busy_timeout(
    store: SqliteStore,
) -> None:
    assert rows(store.path, "PRAGMA journal_mode") == [("wal",)]  # stored in the file itself

    def pragmas() -> list[Any]:
        conn = store._connection()  # the store's own connection, on its own thread
        return [
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("synchronous", "foreign_keys", "busy_timeout")
        ]

    assert await store._run(pragmas) == [1, 1, 300]  # NORMAL, ON, 300 ms


async def test_two_stores_on_one_file_never_interleave(tmp_path: Path) -> None:
    """Two connections (as two orchestrator processes would have) writing one conversation
    through the file's write lock: each run lands exactly once, whole."""
    stores = [SqliteStore(tmp_path / "shared.db"), SqliteStore(tmp_path / "shared.db")]
    for s in stores:
        await s.open()
    try:
        runs = {f"w{i}": exchange(f"w{i}") for i in range(16)}

        async def writer(s: SqliteStore, prompt: str) -> None:
            while True:
                at = (await s.load("c1")).revision
                try:
                    await s.commit(
                        "c1", agent_id="a", expected_revision=at, messages=to_json(runs[prompt])
                    )
                    return
                except StoreConflict:
                    await asyncio.sleep(0)

        await asyncio.gather(*(writer(stores[i % 2], p) for i, p in enumerate(runs)))
        history = await stores[1].load("c1")
        assert history.revision == 16
        assert sorted(prompts_of(history.messages)) == sorted(runs)
    finally:
        for s in stores:
            await s.close()


# ------------------------------------------------------------------------ locks and faults


async def test_locked_database_gives_store_unavailable_then_recovers(store: SqliteStore) -> None:
    await commit(store, "c1", 0, "before")
    async with sqlite_write_lock(store.path):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked") as caught:
            await commit(store, "c1", 1, "while locked")
        waited = time.monotonic() - started
        assert caught.value.store == "sqlite"
        assert caught.value.retry_after > 0
        assert 0.2 <= waited < 10, waited  # it waited for the lock (busy_timeout 0.3s), no more
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.delete("c1")
        # Readers are not blocked (WAL), and nothing of the failed commit was written.
        history = await store.load("c1")
        assert (history.revision, prompts_of(history.messages)) == (1, ["before"])

    # Recovery: the same store object commits again, at the revision it was at.
    assert await commit(store, "c1", 1, "after") == 2
    assert prompts_of((await store.load("c1")).messages) == ["before", "after"]
    assert rows(store.path, "SELECT seq FROM runs ORDER BY seq") == [(1,), (2,)]


@pytest.mark.parametrize("case", ["missing directory", "a directory", "not a database"])
async def test_unusable_path_is_store_unavailable_at_open(tmp_path: Path, case: str) -> None:
    if case == "missing directory":
        path = tmp_path / "no" / "such" / "dir" / "axon.db"
    elif case == "a directory":
        path = tmp_path / "dir.db"
        path.mkdir()
    else:
        path = tmp_path / "junk.db"
        path.write_bytes(b"this is not an SQLite file, just some bytes " * 100)
    store = SqliteStore(path)
    with pytest.raises(StoreUnavailable, match="cannot open") as caught:
        await store.open()
    assert str(path) in caught.value.reason
    assert not sqlite_threads()  # nothing left running
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.load("c1")
    if case == "missing directory":  # the problem fixed, the same store opens
        path.parent.mkdir(parents=True)
        await store.open()
        assert await commit(store, "c1", 0, "works") == 1
        await store.close()


async def test_a_closed_store_refuses_operations_and_leaves_no_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "axon.db")
    await store.open()
    assert len(sqlite_threads()) == 1
    await store.close()
    await store.close()
    assert not sqlite_threads()
    with pytest.raises(StoreUnavailable, match="not open"):
        await commit(store, "c1", 0, "late")
    assert rows(store.path, "SELECT count(*) FROM runs") == [(0,)]


async def test_close_waits_for_operations_already_submitted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "axon.db")
    await store.open()
    commits = [asyncio.create_task(commit(store, f"c{i}", 0, f"p{i}")) for i in range(20)]
    await asyncio.sleep(0)  # every commit submitted to the store's thread
    await store.close()
    assert await asyncio.gather(*commits) == [1] * 20
    assert rows(store.path, "SELECT count(*) FROM runs") == [(20,)]


# ----------------------------------------------------------------------------- migrations


def schema_versions(path: str | Path) -> list[int]:
    return [v for (v,) in rows(path, "SELECT version FROM axon_schema ORDER BY version")]


class WithV2(SqliteStore):
    """This store one release later: a second migration."""

    migrations = (
        *MIGRATIONS,
        Migration(2, "conversation titles", ("ALTER TABLE conversations ADD COLUMN title TEXT",)),
    )


class WithBrokenV2(SqliteStore):
    migrations = (
        *MIGRATIONS,
        Migration(
            2,
            "fails half way",
            ("ALTER TABLE conversations ADD COLUMN title TEXT", "THIS IS NOT SQL"),
        ),
    )


def columns(path: Path, table: str) -> list[str]:
    return [row[1] for row in rows(path, f"PRAGMA table_info({table})")]


async def test_schema_version_is_recorded_once(store: SqliteStore) -> None:
    assert schema_versions(store.path) == [len(MIGRATIONS)]
    await store.close()
    await store.open()
    assert schema_versions(store.path) == [len(MIGRATIONS)]


async def test_migration_from_the_previous_version_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "axon.db"
    old = SqliteStore(path)
    await old.open()
    await commit(old, "c1", 0, "written by v1")
    await old.close()
    assert schema_versions(path) == [1]

    new = WithV2(path)
    await new.open()
    try:
        assert schema_versions(path) == [1, 2]
        assert "title" in columns(path, "conversations")
        history = await new.load("c1")
        assert (history.revision, prompts_of(history.messages)) == (1, ["written by v1"])
        assert await commit(new, "c1", 1, "written by v2") == 2
    finally:
        await new.close()


async def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "axon.db"
    old = SqliteStore(path)
    await old.open()
    await commit(old, "c1", 0, "kept")
    await old.close()

    with pytest.raises(StoreUnavailable, match="syntax error"):
        await WithBrokenV2(path).open()
    assert schema_versions(path) == [1]
    assert "title" not in columns(path, "conversations")  # the first statement rolled back too
    assert not sqlite_threads()

    await old.open()
    try:
        assert prompts_of((await old.load("c1")).messages) == ["kept"]
    finally:
        await old.close()


async def test_a_database_from_a_newer_axon_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "axon.db"
    newer = WithV2(path)
    await newer.open()
    await commit(newer, "c1", 0, "from the future")
    await newer.close()
    before = path.read_bytes()

    store = SqliteStore(path)
    with pytest.raises(ConfigError, match=r"schema version 2.*versions up to 1") as caught:
        await store.open()
    assert caught.value.key == "runtime.store"
    assert path.read_bytes() == before
    assert schema_versions(path) == [1, 2]
    assert not sqlite_threads()
