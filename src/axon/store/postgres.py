"""The PostgreSQL store (``store = "postgresql://user@host:port/db"``): several orchestrators
can share one database, and a conversation's history stays exact while they race.

URL. ``postgresql://`` or ``postgres://``, as libpq and asyncpg understand it, plus these query
parameters, which Axon takes out of the URL before handing the rest to asyncpg:

``schema=NAME``
    keep Axon's tables in schema ``NAME`` (created on ``open()`` if missing): every connection
    gets ``search_path`` ``NAME`` and nothing else. Default: the server's ``search_path``.
``pool_min_size=N`` / ``pool_max_size=N``
    connections kept open / opened at most (defaults 1 and 10).
``connect_timeout=SECONDS``
    bound on establishing one connection (default 5).
``command_timeout=SECONDS``
    bound on each statement, and on returning a connection to the pool (default 10).

Waiting for a free pooled connection is bounded by ``connect_timeout + command_timeout``.
Every other query parameter (``sslmode``, ``application_name``, ...) goes to asyncpg unchanged
(asyncpg sends unknown ones to the server as settings, so a misspelt one fails at ``open()``).

Tables (migration 1): ``axon_conversations(id, agent_id, revision, created_at, updated_at)``,
one row per conversation, and ``axon_runs(conversation_id, seq, messages, committed_at)``, one
row per committed run, ``seq`` = the revision the run created. ``messages`` is ``bytea``: the
run's pydantic-ai JSON array exactly as the worker produced it. ``jsonb`` would parse and
re-serialise it on every write (reordering keys, changing whitespace) and cost a parse on both
sides, for queries into messages that Axon never makes; ``bytea`` keeps the bytes exact and a
load is a plain concatenation (:func:`~axon.store.base.join_json_arrays`). Ids use the ``"C"``
collation so paging order is code-point order, as in every other store.

Commit. Commits are grouped (:mod:`axon.store.group_commit`): the runs that arrive while a
commit is in flight are committed together by the next one, in one transaction (READ COMMITTED)
of one statement, ``_COMMIT_BATCH``, whose input is the batch as arrays (``unnest``), sorted by
conversation id so that batches lock rows in one order. For each run of the batch:

* revision 0 (a new conversation): ``INSERT INTO axon_conversations ... ON CONFLICT (id) DO
  NOTHING RETURNING``. Of two concurrent inserts of one id, the second waits for the first to
  finish and then inserts nothing: it gets no row.
* revision r > 0: ``UPDATE axon_conversations SET revision = revision + 1 ... WHERE id = ...
  AND revision = r RETURNING``. The UPDATE takes the row's lock; a concurrent commit of the
  same conversation waits for it, then re-checks ``revision = r`` against the committed row
  and matches nothing.
* then ``INSERT INTO axon_runs`` with ``seq = r + 1`` for each run that got a row; its primary
  key ``(conversation_id, seq)`` is a second guard (a duplicate fails the statement, and each
  run is then committed alone, where the duplicate is a conflict).

A run that got no row back lost to another writer: ``StoreConflict`` with nothing of it
written, while the rest of its batch commits. So of any number of writers (tasks, pools,
orchestrator processes) that loaded revision r, exactly one commits revision r + 1: runs are
never interleaved, lost or duplicated. A batch is three round trips (``BEGIN``, the statement,
``COMMIT``) and one WAL flush, whatever its size.

Load. One statement, so one snapshot: the conversation's revision and ``ARRAY(SELECT messages
... ORDER BY seq)``; revision and runs always agree.

Migrations. On ``open()``, :func:`axon.store.migrations.migrate_async` applies the pending
:data:`MIGRATIONS` in order, each in one transaction holding ``pg_advisory_xact_lock`` on a key
derived from the schema name, re-reading ``axon_schema`` under the lock: orchestrators that
start together apply each migration exactly once. A database at a newer version than this Axon
knows is refused with ``ConfigError`` and left untouched.

Faults. A server that is down, unreachable, restarting, out of connections or slower than the
timeouts raises ``StoreUnavailable("postgresql", reason)``: nothing hangs beyond the timeouts,
and nothing of the failed call was committed, except for a commit whose ``COMMIT`` was sent but
not confirmed: its outcome is unknown, and its ``StoreUnavailable`` says so
(``maybe_committed=True``; the run is not acknowledged, but may be in the history). The pool
drops dead connections and opens new ones on demand, so the store recovers by itself once the
server is reachable again.

Cancellation contract: cancelling an operation rolls back its transaction (asyncpg rolls back a
transaction left open before the pool reuses the connection); a cancelled ``commit`` committed
fully or not at all.

Round trips. A load is one statement, a batch of commits three (``BEGIN``, the statement,
``COMMIT``). Releasing a connection to the pool sends nothing more: Axon keeps no session state,
so the pool's default reset query (``RESET ALL``, ``UNLISTEN *``, ...) is replaced by a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # pyright: ignore[reportMissingTypeStubs]
import asyncpg.exceptions  # pyright: ignore[reportMissingTypeStubs]

from axon.errors import ConfigError, StoreConflict, StoreUnavailable
from axon.store.base import ConversationInfo, History, join_json_arrays
from axon.store.group_commit import GroupCommit, PendingCommit
from axon.store.migrations import Migration, migrate_async

__all__ = ["MIGRATIONS", "PostgresStore"]

STORE = "postgresql"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations and their runs",
        (
            """
            CREATE TABLE axon_conversations (
                id         text COLLATE "C" PRIMARY KEY,
                agent_id   text NOT NULL,
                revision   integer NOT NULL CHECK (revision >= 1),
                created_at double precision NOT NULL,
                updated_at double precision NOT NULL
            )""",
            "CREATE INDEX axon_conversations_by_agent ON axon_conversations (agent_id, id)",
            # One row per committed run: its new messages as one pydantic-ai JSON array.
            """
            CREATE TABLE axon_runs (
                conversation_id text COLLATE "C" NOT NULL
                    REFERENCES axon_conversations (id) ON DELETE CASCADE,
                seq             integer NOT NULL CHECK (seq >= 1),
                messages        bytea NOT NULL,
                committed_at    double precision NOT NULL,
                PRIMARY KEY (conversation_id, seq)
            )""",
        ),
    ),
)
"""The schema, one versioned step at a time (see :mod:`axon.store.migrations`)."""

_SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS axon_schema (
    version     integer PRIMARY KEY,
    applied_at  double precision NOT NULL,
    description text NOT NULL
)"""

# Errors that mean "the database cannot be used right now", as opposed to a bug or a refusal.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, DNS
    TimeoutError,  # connect_timeout, command_timeout, waiting for a pooled connection
    asyncpg.PostgresConnectionError,  # class 08: the connection broke
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutting down, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a standby during failover
    asyncpg.exceptions.LockNotAvailableError,  # 55P03
)

_OPTIONS = ("schema", "pool_min_size", "pool_max_size", "connect_timeout", "command_timeout")

_LOAD = """
SELECT c.revision,
       ARRAY(SELECT r.messages FROM axon_runs r WHERE r.conversation_id = c.id ORDER BY r.seq)
FROM axon_conversations c
WHERE c.id = $1"""

_COMMIT_BATCH = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::bytea[])
        AS b (id, agent_id, expected, messages)
), created AS (
    INSERT INTO axon_conversations (id, agent_id, revision, created_at, updated_at)
    SELECT id, agent_id, 1, $5, $5 FROM batch WHERE expected = 0
    ON CONFLICT (id) DO NOTHING
    RETURNING id, revision
), advanced AS (
    UPDATE axon_conversations c SET revision = c.revision + 1, updated_at = $5
    FROM batch b
    WHERE c.id = b.id AND b.expected > 0 AND c.revision = b.expected
    RETURNING c.id, c.revision
), added AS (
    INSERT INTO axon_runs (conversation_id, seq, messages, committed_at)
    SELECT w.id, w.revision, b.messages, $5
    FROM (SELECT * FROM created UNION ALL SELECT * FROM advanced) w JOIN batch b USING (id)
    RETURNING conversation_id, seq
)
SELECT conversation_id, seq FROM added"""

_REVISIONS = "SELECT id, revision FROM axon_conversations WHERE id = ANY($1::text[])"

_LIST_COLUMNS = "SELECT id, agent_id, revision, created_at, updated_at FROM axon_conversations"


class PostgresStore:
    """A :class:`~axon.store.base.ConversationStore` in a PostgreSQL database (asyncpg pool).

    ``PostgresStore.from_url("postgresql://user@host/db?schema=axon")``, or the constructor
    with ``dsn`` (a URL without Axon's options) and the options as keyword arguments.
    """

    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        if schema is not None and not schema:
            raise ValueError("schema must be a non-empty name or None")
        if pool_min_size < 0 or pool_max_size < 1 or pool_min_size > pool_max_size:
            raise ValueError(
                f"need 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1, "
                f"not {pool_min_size} and {pool_max_size}"
            )
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("command_timeout", command_timeout),
        ):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number of seconds > 0, not {value!r}")
        self.dsn = dsn
        self.schema = schema
        self.pool_min_size = pool_min_size
        self.pool_max_size = pool_max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._lifecycle = asyncio.Lock()
        self.group_commit = GroupCommit(self._commit_batch)
        """How commits are grouped into transactions (its ``batches`` and ``runs`` count them)."""

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """A store for a ``postgresql://`` (or ``postgres://``) URL; see the module docstring
        for Axon's query parameters. Raises ``ConfigError`` for a malformed one."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError("runtime.store", f"{_redact(url)!r} is not a postgresql:// URL")
        try:
            query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise ConfigError(
                "runtime.store", f"malformed query in {_redact(url)!r}: {exc}"
            ) from None
        options: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for key, value in query:
            if key in _OPTIONS:
                options[key] = value
            else:
                rest.append((key, value))
        kwargs: dict[str, Any] = {}
        if "schema" in options:
            if not options["schema"]:
                raise ConfigError("runtime.store", "schema= needs a schema name")
            kwargs["schema"] = options["schema"]
        for key in ("pool_min_size", "pool_max_size"):
            if key in options:
                try:
                    kwargs[key] = int(options[key])
                except ValueError:
                    raise ConfigError(
                        "runtime.store", f"{key} must be an integer, not {options[key]!r}"
                    ) from None
        for key in ("connect_timeout", "command_timeout"):
            if key in options:
                try:
                    kwargs[key] = float(options[key])
                except ValueError:
                    raise ConfigError(
                        "runtime.store",
                        f"{key} must be a number of seconds, not {options[key]!r}",
                    ) from None
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        try:
            return cls(dsn, **kwargs)
        except ValueError as exc:
            raise ConfigError("runtime.store", str(exc)) from None

    def __repr__(self) -> str:
        schema = f", schema={self.schema!r}" if self.schema else ""
        return f"PostgresStore({_redact(self.dsn)!r}{schema})"

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool and bring the schema up to date; idempotent.

        Raises ``StoreUnavailable`` if the server cannot be reached and ``ConfigError`` if it
        refuses us (unknown database, authentication, privileges, unknown setting) or its
        schema is newer than this Axon's. After a failure nothing is left open.
        """
        async with self._lifecycle:
            if self._pool is not None:
                return
            server_settings = {"application_name": "axon"}
            if self.schema is not None:
                server_settings["search_path"] = _quote_ident(self.schema)
            if "application_name" in dict(parse_qsl(urlsplit(self.dsn).query)):
                del server_settings["application_name"]  # the URL's own wins
            try:
                pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=self.pool_min_size,
                    max_size=self.pool_max_size,
                    timeout=self.connect_timeout,
                    command_timeout=self.command_timeout,
                    server_settings=server_settings,
                    reset=_keep_session,
                )
            except _UNAVAILABLE as exc:
                raise _unavailable(exc, self) from exc
            except asyncpg.PostgresError as exc:
                raise ConfigError(
                    "runtime.store", f"PostgreSQL refused the connection: {exc}"
                ) from exc
            try:
                async with pool.acquire(timeout=self._acquire_timeout) as conn:
                    await self._migrate(conn)
            except BaseException as exc:
                await _close_pool(pool, self.command_timeout)
                if isinstance(exc, _UNAVAILABLE):
                    raise _unavailable(exc, self) from exc
                if isinstance(exc, asyncpg.PostgresError):
                    raise ConfigError(
                        "runtime.store", f"cannot set up the PostgreSQL schema: {exc}"
                    ) from exc
                raise
            self._pool = pool

    async def close(self) -> None:
        """Close the pool (waiting at most ``command_timeout`` for connections in use, then
        terminating them); idempotent. ``open()`` may be called again afterwards."""
        async with self._lifecycle:
            await self.group_commit.drain()
            pool, self._pool = self._pool, None
            if pool is not None:
                await _close_pool(pool, self.command_timeout)

    @property
    def _acquire_timeout(self) -> float:
        return self.connect_timeout + self.command_timeout

    async def _migrate(self, conn: Any) -> None:
        if self.schema is not None:
            schema = self.schema
        else:
            schema = await conn.fetchval("SELECT current_schema()") or ""
        lock_key = int.from_bytes(
            hashlib.blake2b(f"axon_schema:{schema}".encode(), digest_size=8).digest(),
            "big",
            signed=True,
        )

        async def current_version() -> int:
            return await _schema_version(conn)

        async def apply(migration: Migration) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
                if self.schema is not None:
                    exists = await conn.fetchval(
                        "SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema
                    )
                    if exists is None:
                        await conn.execute(f"CREATE SCHEMA {_quote_ident(self.schema)}")
                await conn.execute(_SCHEMA_TABLE)
                if await _schema_version(conn) >= migration.version:
                    return  # another orchestrator applied it meanwhile
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO axon_schema (version, applied_at, description)"
                    " VALUES ($1, $2, $3)",
                    migration.version,
                    time.time(),
                    migration.description,
                )

        await migrate_async(
            self.migrations, store=STORE, current_version=current_version, apply=apply
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncGenerator[Any]:
        """A pooled connection; connection trouble becomes ``StoreUnavailable``."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(STORE, "the store is not open")
        try:
            conn = await pool.acquire(timeout=self._acquire_timeout)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc, self) from exc
        try:
            yield conn
        except _UNAVAILABLE as exc:
            # The connection's state is unknown (a statement may still be running on the
            # server): drop it rather than wait for a cancel and a reset that may hang too.
            with contextlib.suppress(Exception):  # already closed and back in the pool
                conn.terminate()
            raise _unavailable(exc, self) from exc
        finally:
            # Bounded by the acquire timeout. A connection that cannot be reset is terminated
            # by the pool (a fresh one replaces it later); that is no failure of the operation,
            # which has already succeeded or failed on its own.
            with contextlib.suppress(Exception):
                await pool.release(conn)

    # -- operations -------------------------------------------------------------------------

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def load(self, conversation_id: str) -> History:
        async with self._connection() as conn:
            row = await conn.fetchrow(_LOAD, conversation_id)
        if row is None:
            return History(b"[]", 0)
        revision: int = row[0]
        runs: list[bytes] = row[1]
        if len(runs) != revision:  # impossible unless the tables were edited by hand
            raise RuntimeError(
                f"conversation {conversation_id!r} is at revision {revision} "
                f"but has {len(runs)} runs"
            )
        return History(join_json_arrays(runs), revision)

    async def commit(
        self, conversation_id: str, *, agent_id: str, expected_revision: int, messages: bytes
    ) -> int:
        pending = PendingCommit(conversation_id, agent_id, expected_revision, bytes(messages))
        return await self.group_commit.commit(pending)

    async def _commit_batch(self, batch: Sequence[PendingCommit]) -> list[int | Exception]:
        """Every run of ``batch`` in one transaction of one statement (see the module docstring)."""
        ordered = sorted(batch, key=lambda p: p.conversation_id)  # rows locked in one order
        columns = (
            [p.conversation_id for p in ordered],
            [p.agent_id for p in ordered],
            [p.expected_revision for p in ordered],
            [p.messages for p in ordered],
        )
        committed: dict[str, int] | None = None
        sending_commit = False
        try:
            async with self._connection() as conn:
                try:
                    async with conn.transaction():
                        rows = await conn.fetch(_COMMIT_BATCH, *columns, time.time())
                        # Leaving the block sends COMMIT: from here until it is confirmed, a
                        # broken connection leaves the outcome unknown.
                        sending_commit = bool(rows)
                    sending_commit = False
                except asyncpg.UniqueViolationError:
                    if len(batch) > 1:
                        raise  # group commit retries each run alone
                    rows = []  # rolled back: a run with this seq exists already
                committed = {row[0]: row[1] for row in rows}
                stale = [p.conversation_id for p in batch if p.conversation_id not in committed]
                actual: dict[str, int] = {}
                if stale:
                    actual = dict(await conn.fetch(_REVISIONS, stale))
        except StoreUnavailable as exc:
            if committed is None:
                if not sending_commit:
                    raise  # the server never got a COMMIT: it rolled the transaction back
                raise StoreUnavailable(STORE, exc.reason, maybe_committed=True) from exc.__cause__
            # Committed; only reading the stale runs' revisions failed, and they wrote nothing.
            return [committed.get(p.conversation_id, exc) for p in batch]
        return [
            committed.get(p.conversation_id)
            or StoreConflict(
                p.conversation_id,
                expected=p.expected_revision,
                actual=actual.get(p.conversation_id, 0),
            )
            for p in batch
        ]

    async def delete(self, conversation_id: str) -> bool:
        async with self._connection() as conn:
            status: str = await conn.execute(
                "DELETE FROM axon_conversations WHERE id = $1", conversation_id
            )
        return status != "DELETE 0"

    async def list_conversations(
        self, agent_id: str | None = None, *, limit: int = 100, after: str | None = None
    ) -> list[ConversationInfo]:
        if limit <= 0:
            return []
        conditions: list[str] = []
        args: list[Any] = []
        if agent_id is not None:
            args.append(agent_id)
            conditions.append(f"agent_id = ${len(args)}")
        if after is not None:
            args.append(after)
            conditions.append(f"id > ${len(args)}")
        args.append(limit)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"{_LIST_COLUMNS}{where} ORDER BY id LIMIT ${len(args)}"
        async with self._connection() as conn:
            rows = await conn.fetch(sql, *args)
        return [ConversationInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def _keep_session(conn: Any) -> None:
    """The pool's reset of a released connection: nothing to do. asyncpg has already rolled back
    a transaction left open, and Axon sets no other session state (no ``SET``, ``LISTEN``,
    cursor or session-level advisory lock: the migrations' lock is transaction-scoped), so the
    default reset query (``RESET ALL``, ``UNLISTEN *``, ...) would be a round trip per operation
    for nothing."""


async def _schema_version(conn: Any) -> int:
    if await conn.fetchval("SELECT to_regclass('axon_schema')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM axon_schema"))


async def _close_pool(pool: Any, timeout: float) -> None:
    """Close gracefully within ``timeout`` seconds, else terminate; never raises (but
    re-raises a cancellation after terminating)."""
    try:
        async with asyncio.timeout(timeout):
            await pool.close()
    except asyncio.CancelledError:
        pool.terminate()
        raise
    except Exception:
        pool.terminate()


def _unavailable(exc: BaseException, store: PostgresStore) -> StoreUnavailable:
    if isinstance(exc, TimeoutError) and not str(exc):
        reason = (
            f"timed out (connect_timeout={store.connect_timeout:g}s, "
            f"command_timeout={store.command_timeout:g}s)"
        )
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return StoreUnavailable(STORE, reason)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _redact(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
