"""The store conformance suite (``axon.testing.store_conformance``), run by every backend:
in-memory, SQLite on a real file, and PostgreSQL on a real server (a fresh schema per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from axon.store import ConversationStore, InMemoryStore, open_store
from axon.store.sqlite import SqliteStore
from axon.testing.store_conformance import StoreConformance


class TestInMemoryStore(StoreConformance):
    persistent = False

    @pytest.fixture
    async def store(self) -> AsyncIterator[ConversationStore]:
        store = InMemoryStore()
        await store.open()
        yield store
        await store.close()


class TestSqliteStore(StoreConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[ConversationStore]:
        store = open_store(f"sqlite:///{tmp_path}/conformance.db")
        assert isinstance(store, SqliteStore)
        await store.open()
        yield store
        await store.close()

    async def reopen(self, store: ConversationStore) -> ConversationStore:
        """Close, then open the same file with a NEW store object (as a restarted
        orchestrator would); the old object is closed for good."""
        assert isinstance(store, SqliteStore)
        await store.close()
        fresh = SqliteStore(store.path)
        await fresh.open()
        self._extra = fresh
        return fresh

    @pytest.fixture(autouse=True)
    async def _close_reopened(self) -> AsyncIterator[None]:
        self._extra: SqliteStore | None = None
        yield
        if self._extra is not None:
            await self._extra.close()


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[ConversationStore]:
        store = open_store(postgres_url)
        await store.open()
        yield store
        await store.close()
