"""The SQLite store: the embedded default (``store = "sqlite:///axon.db"``), one file, no server.

Threading. SQLite wants one connection used by one thread at a time, and its calls block. So
the store owns ONE ``sqlite3`` connection, created, used and closed by ONE dedicated thread: a
single-thread ``ThreadPoolExecutor`` driven with ``loop.run_in_executor``. Every operation is a
short blocking function run on that thread, in submission order; the event loop never blocks.
We use the standard library rather than aiosqlite because aiosqlite is exactly this (a thread
per connection and a queue) with an extra dependency and a less explicit transaction model;
here each operation is one plain function holding one whole transaction.

Durability. The database is in WAL mode (readers never block the writer or each other) with
``synchronous=NORMAL``: a commit is written to the WAL file before ``commit`` returns, so it
survives the orchestrator process dying at any point (``kill -9`` included): the operating
system still holds the written pages. A power loss or kernel crash may lose the last commits
before the next WAL checkpoint (the database stays consistent: it rolls back to an earlier
commit, never to a half-written one). Use ``synchronous=FULL`` semantics (a Postgres store) if
acknowledged replies must survive power loss.

Atomicity. Commits are grouped (:mod:`axon.store.group_commit`): the runs that arrive while
the store's thread is busy are committed together, in one ``BEGIN IMMEDIATE`` transaction that
takes the write lock, checks each run's revision (a stale run gets ``StoreConflict`` and writes
nothing; the others go on), inserts each run's row and updates its conversation's row, and
commits; on any error it rolls back, so nothing is ever half-written. An idle store commits a
run alone, at once.

Faults. A database that is locked by another process for longer than ``busy_timeout`` seconds,
cannot be opened, or fails with an I/O error raises ``StoreUnavailable("sqlite", reason)``;
nothing was written, and the next operation tries again (the store recovers by itself once the
database is usable). A database written by a newer Axon (a newer schema version) is refused at
``open()`` with ``ConfigError``.

Cancellation contract: cancelling an operation that has not started on the store's thread
means it never runs; one that has started finishes (a ``commit`` fully or not at all) and its
outcome is dropped. ``close()`` always closes the connection, even if the caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, TypeVar
from urllib.parse import parse_qsl

from axon.errors import ConfigError, StoreConflict, StoreUnavailable
from axon.store.base import ConversationInfo, History, join_json_arrays
from axon.store.group_commit import GroupCommit, PendingCommit
from axon.store.migrations import Migration, migrate

__all__ = ["SqliteStore"]

T = TypeVar("T")

_URL_PREFIX = "sqlite:///"

_SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS axon_schema (
    version     INTEGER PRIMARY KEY,
    applied_at  REAL NOT NULL,
    description TEXT NOT NULL
)"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations and their runs",
        (
            """
            CREATE TABLE conversations (
                id         TEXT PRIMARY KEY,
                agent_id   TEXT NOT NULL,
                revision   INTEGER NOT NULL CHECK (revision >= 1),
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            "CREATE INDEX conversations_by_agent ON conversations (agent_id, id)",
            # One row per committed run: its new messages as one pydantic-ai JSON array.
            """
            CREATE TABLE runs (
                conversation_id TEXT NOT NULL
                    REFERENCES conversations (id) ON DELETE CASCADE,
                seq             INTEGER NOT NULL CHECK (seq >= 1),
                messages        BLOB NOT NULL,
                committed_at    REAL NOT NULL,
                PRIMARY KEY (conversation_id, seq)
            )""",
        ),
    ),
)
"""The schema, one versioned step at a time (see :mod:`axon.store.migrations`)."""


class SqliteStore:
    """A :class:`~axon.store.base.ConversationStore` in one SQLite file.

    ``SqliteStore("axon.db")`` or ``SqliteStore.from_url("sqlite:///axon.db")``; a relative
    path is relative to the working directory at ``open()``. ``busy_timeout`` is how many
    seconds an operation waits for another process's lock before ``StoreUnavailable``.
    """

    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        if not math.isfinite(busy_timeout) or busy_timeout < 0:
            raise ValueError(f"busy_timeout must be a finite number >= 0, not {busy_timeout!r}")
        self.path: str = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # only ever touched on the executor thread
        self._lifecycle = asyncio.Lock()
        self.group_commit = GroupCommit(self._commit_batch)
        """How commits are grouped into transactions (its ``batches`` and ``runs`` count them)."""

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """``sqlite:///relative.db`` -> ``relative.db``; ``sqlite:////abs/a.db`` -> ``/abs/a.db``.

        One option may follow the path: ``?busy_timeout=SECONDS``. Raises ``ConfigError``.
        """
        if not url.startswith(_URL_PREFIX):
            raise ConfigError(
                "runtime.store",
                f"{url!r} is not a SQLite URL: use sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db",
            )
        path, _, query = url.removeprefix(_URL_PREFIX).partition("?")
        if not path:
            raise ConfigError("runtime.store", f"{url!r} names no database file")
        busy_timeout = 5.0
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key != "busy_timeout":
                raise ConfigError(
                    "runtime.store", f"unknown SQLite option {key!r} (known: busy_timeout)"
                )
            try:
                busy_timeout = float(value)
            except ValueError:
                busy_timeout = -1.0
            if not math.isfinite(busy_timeout) or busy_timeout < 0:
                raise ConfigError(
                    "runtime.store", f"busy_timeout must be a number of seconds >= 0: {value!r}"
                )
        return cls(path, busy_timeout=busy_timeout)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (created if missing), set WAL mode and migrate the schema; idempotent.

        Raises ``StoreUnavailable`` if the file cannot be opened or written (missing directory,
        no permission, not a database, locked) and ``ConfigError`` if its schema is newer than
        this Axon's. After a failure nothing is left open and ``open()`` may be retried.
        """
        async with self._lifecycle:
            if self._executor is not None:
                return
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="axon-sqlite")
            self._executor = executor
            try:
                await self._run(self._open_sync, opening=True)
            except BaseException:
                self._executor = None
                await _finish(executor, self._close_sync)
                raise

    async def close(self) -> None:
        """Close the connection (after every operation already submitted) and stop the
        store's thread; idempotent. ``open()`` may be called again afterwards."""
        async with self._lifecycle:
            await self.group_commit.drain()
            executor, self._executor = self._executor, None
            if executor is not None:
                await _finish(executor, self._close_sync)

    # -- the store interface ----------------------------------------------------------------

    async def ping(self) -> None:
        await self._run(self._ping_sync)

    async def load(self, conversation_id: str) -> History:
        return await self._run(self._load_sync, conversation_id)

    async def commit(
        self, conversation_id: str, *, agent_id: str, expected_revision: int, messages: bytes
    ) -> int:
        pending = PendingCommit(conversation_id, agent_id, expected_revision, bytes(messages))
        return await self.group_commit.commit(pending)

    async def _commit_batch(self, batch: Sequence[PendingCommit]) -> list[int | Exception]:
        return await self._run(self._commit_batch_sync, batch)

    async def delete(self, conversation_id: str) -> bool:
        return await self._run(self._delete_sync, conversation_id)

    async def list_conversations(
        self, agent_id: str | None = None, *, limit: int = 100, after: str | None = None
    ) -> list[ConversationInfo]:
        if limit <= 0:
            return []
        return await self._run(self._list_sync, agent_id, limit, after)

    # -- plumbing -----------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: object, opening: bool = False) -> T:
        """Run ``fn(*args)`` on the store's thread, turning database failures into
        ``StoreUnavailable``."""
        executor = self._executor
        if executor is None:
            raise StoreUnavailable("sqlite", f"the store for {self.path!r} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except (sqlite3.OperationalError, sqlite3.InternalError) as exc:
            raise self._unavailable(exc, opening) from exc
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # IntegrityError, ProgrammingError: bugs
                raise
            raise self._unavailable(exc, opening) from exc  # "file is not a database", ...

    def _unavailable(self, exc: sqlite3.Error, opening: bool) -> StoreUnavailable:
        what = "cannot open" if opening else "error on"
        reason = f"{what} {self.path!r}: {exc}"
        if "locked" in str(exc) or "busy" in str(exc):
            reason += f" (another connection held the lock for over {self.busy_timeout:g}s)"
        return StoreUnavailable("sqlite", reason, retry_after=max(self.busy_timeout, 1.0))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:  # an operation queued behind an open() that failed
            raise sqlite3.OperationalError("the store is not open")
        return self._conn

    # -- blocking operations: run on the store's thread only --------------------------------

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {round(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(
                self.migrations,
                store="sqlite",
                current_version=lambda: _schema_version(conn),
                apply=lambda migration: _apply(conn, migration),
            )
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _ping_sync(self) -> None:
        self._connection().execute("SELECT 1").fetchone()

    def _load_sync(self, conversation_id: str) -> History:
        conn = self._connection()
        with _transaction(conn, "BEGIN"):  # one snapshot for both reads
            row = conn.execute(
                "SELECT revision FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if row is None:
                return History(b"[]", 0)
            runs = conn.execute(
                "SELECT messages FROM runs WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            ).fetchall()
        return History(join_json_arrays([bytes(r[0]) for r in runs]), int(row[0]))

    def _commit_batch_sync(self, batch: Sequence[PendingCommit]) -> list[int | Exception]:
        """Every run of ``batch`` in one transaction, each against its own revision."""
        conn = self._connection()
        now = time.time()
        with _transaction(conn, "BEGIN IMMEDIATE"):  # the write lock, before reading
            return [_commit_one(conn, pending, now) for pending in batch]

    def _delete_sync(self, conversation_id: str) -> bool:
        conn = self._connection()
        with _transaction(conn, "BEGIN IMMEDIATE"):
            conn.execute("DELETE FROM runs WHERE conversation_id = ?", (conversation_id,))
            deleted = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return deleted.rowcount > 0

    def _list_sync(
        self, agent_id: str | None, limit: int, after: str | None
    ) -> list[ConversationInfo]:
        where: list[str] = []
        params: list[object] = []
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if after is not None:
            where.append("id > ?")
            params.append(after)
        sql = "SELECT id, agent_id, revision, created_at, updated_at FROM conversations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._connection().execute(f"{sql} ORDER BY id LIMIT ?", (*params, limit)).fetchall()
        return [
            ConversationInfo(str(cid), str(agent), int(rev), float(created), float(updated))
            for cid, agent, rev, created, updated in rows
        ]


def _commit_one(conn: sqlite3.Connection, pending: PendingCommit, now: float) -> int | Exception:
    """Add one run inside the caller's transaction: its new revision, or ``StoreConflict`` (and
    nothing written) if its conversation is not at the revision it expects."""
    conversation_id = pending.conversation_id
    row = conn.execute(
        "SELECT revision FROM conversations WHERE id = ?", (conversation_id,)
    ).fetchone()
    actual = 0 if row is None else int(row[0])
    if actual != pending.expected_revision:
        return StoreConflict(conversation_id, expected=pending.expected_revision, actual=actual)
    revision = actual + 1
    if row is None:
        conn.execute(
            "INSERT INTO conversations (id, agent_id, revision, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (conversation_id, pending.agent_id, revision, now, now),
        )
    else:
        conn.execute(
            "UPDATE conversations SET revision = ?, updated_at = ? WHERE id = ?",
            (revision, now, conversation_id),
        )
    conn.execute(
        "INSERT INTO runs (conversation_id, seq, messages, committed_at) VALUES (?, ?, ?, ?)",
        (conversation_id, revision, pending.messages, now),
    )
    return revision


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Generator[None]:
    """``begin`` ... ``COMMIT``; ``ROLLBACK`` if the body (or the commit) raises."""
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'axon_schema'"
    ).fetchone()
    if exists is None:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM axon_schema").fetchone()[0])


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    """One migration in one transaction; skipped if another process applied it meanwhile."""
    with _transaction(conn, "BEGIN IMMEDIATE"):
        conn.execute(_SCHEMA_TABLE)
        if _schema_version(conn) >= migration.version:
            return
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO axon_schema (version, applied_at, description) VALUES (?, ?, ?)",
            (migration.version, time.time(), migration.description),
        )


async def _finish(executor: ThreadPoolExecutor, close: Callable[[], None]) -> None:
    """Run ``close`` on the store's thread after everything already queued, then let the
    thread end; ``close`` runs even if the caller is cancelled meanwhile."""
    done = asyncio.wrap_future(executor.submit(close))
    executor.shutdown(wait=False)
    with contextlib.suppress(sqlite3.Error):  # nothing a caller could act on
        await asyncio.shield(done)
    executor.shutdown(wait=True)  # the thread is idle now: this only joins it
