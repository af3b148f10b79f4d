"""PostgreSQL-specific behaviour of ``PostgresStore`` (the shared contract is in the conformance
suite): URL options, migrations under concurrent start-up, refusing a newer schema, heavy
contention on one conversation, and outages simulated with a TCP relay in front of the real
server (the shared server itself is never stopped)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from axon.chaos.tcp_relay import TcpRelay
from axon.errors import ConfigError, StoreConflict, StoreUnavailable
from axon.store import open_store
from axon.store.base import join_json_arrays
from axon.store.postgres import MIGRATIONS, PostgresStore

from ..conftest import POSTGRES_DSN

MakeStore = Callable[..., Awaitable[PostgresStore]]

# Small timeouts so that outage tests are quick; "prompt" below means within these plus slack.
CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 1.0
SLACK = 2.0


def schema_of(url: str) -> str:
    return urlsplit(url).query.removeprefix("schema=")


def with_options(url: str, **options: object) -> str:
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}&{extra}" if extra else url


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[Any]:
    """A plain connection to the test database, with the test's schema on its search_path."""
    conn = await asyncpg.connect(
        POSTGRES_DSN, server_settings={"search_path": f'"{schema_of(postgres_url)}"'}
    )
    yield conn
    await conn.close()


@pytest.fixture
async def make_store() -> AsyncIterator[MakeStore]:
    """``await make_store(url)`` -> a PostgresStore for ``url``, opened unless ``open=False``;
    every one is closed at teardown."""
    stores: list[PostgresStore] = []

    async def make(url: str, *, open: bool = True) -> PostgresStore:
        store = PostgresStore.from_url(url)
        stores.append(store)
        if open:
            await store.open()
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def relay(postgres_url: str) -> AsyncIterator[TcpRelay]:
    async with TcpRelay.in_front_of(postgres_url) as relay:
        yield relay


def run(n: int) -> bytes:
    """One run's messages: two JSON values, so an interleaving would show."""
    return json.dumps([{"run": n, "part": 0}, {"run": n, "part": 1}]).encode()


# ----------------------------------------------------------------------------------- the URL


def test_from_url_takes_axon_options_out_and_passes_the_rest_to_asyncpg() -> None:
    store = PostgresStore.from_url(
        "postgres://u:secret@db.example:6432/app?sslmode=disable&schema=Tenant%201"
        "&pool_min_size=0&pool_max_size=3&connect_timeout=0.5&command_timeout=2.5"
        "&application_name=me"
    )
    assert (
        store.dsn == "postgres://u:secret@db.example:6432/app?sslmode=disable&application_name=me"
    )
    assert store.schema == "Tenant 1"
    assert (store.pool_min_size, store.pool_max_size) == (0, 3)
    assert (store.connect_timeout, store.command_timeout) == (0.5, 2.5)
    assert "secret" not in repr(store)
    defaults = open_store("postgresql://u@h/db")
    assert isinstance(defaults, PostgresStore)
    assert defaults.dsn == "postgresql://u@h/db"
    assert defaults.schema is None
    assert (defaults.pool_min_size, defaults.pool_max_size) == (1, 10)
    assert (defaults.connect_timeout, defaults.command_timeout) == (5.0, 10.0)


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("schema=", "schema"),
        ("pool_max_size=many", "pool_max_size"),
        ("pool_min_size=5&pool_max_size=2", "pool_min_size"),
        ("pool_max_size=0", "pool_max_size"),
        ("command_timeout=soon", "command_timeout"),
        ("connect_timeout=0", "connect_timeout"),
        ("command_timeout=inf", "command_timeout"),
    ],
)
def test_from_url_rejects_bad_options(query: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names) as caught:
        PostgresStore.from_url(f"postgresql://u@h/db?{query}")
    assert caught.value.key == "runtime.store"


async def test_a_misspelt_url_parameter_fails_at_open_not_silently(
    postgres_url: str, make_store: MakeStore
) -> None:
    store = await make_store(with_options(postgres_url, command_timout=1), open=False)
    with pytest.raises(ConfigError, match="command_timout"):
        await store.open()


# ------------------------------------------------------------------------------- migrations


async def test_open_migrates_once_and_reopening_keeps_data(
    postgres_url: str, make_store: MakeStore, admin: Any
) -> None:
    first = await make_store(postgres_url)
    await first.open()  # idempotent on the same object
    await first.commit("c1", agent_id="a", expected_revision=0, messages=run(1))
    await first.close()
    second = await make_store(postgres_url)  # as a restarted orchestrator would
    versions = await admin.fetch("SELECT version, description FROM axon_schema ORDER BY version")
    assert [(v["version"], v["description"]) for v in versions] == [
        (m.version, m.description) for m in MIGRATIONS
    ]
    tables = await admin.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1"
        " ORDER BY table_name",
        schema_of(postgres_url),
    )
    assert [t["table_name"] for t in tables] == ["axon_conversations", "axon_runs", "axon_schema"]
    history = await second.load("c1")
    assert (history.revision, history.messages) == (1, run(1))


async def test_concurrent_open_of_a_fresh_schema_migrates_exactly_once(
    postgres_url: str, make_store: MakeStore, admin: Any
) -> None:
    """Orchestrators starting together on an empty database: the advisory lock lets exactly
    one create the schema and apply each migration; the others find it done."""
    fresh = f"{schema_of(postgres_url)}_fresh"  # does not exist yet: open() creates it
    url = postgres_url.replace(schema_of(postgres_url), fresh)
    stores = [await make_store(url, open=False) for _ in range(4)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        versions = await admin.fetch(f'SELECT version FROM "{fresh}".axon_schema ORDER BY 1')
        assert [v["version"] for v in versions] == [m.version for m in MIGRATIONS]
        # Every store works on the one schema.
        for n, store in enumerate(stores):
            assert await store.commit("c", agent_id="a", expected_revision=n, messages=run(n))
        assert (await stores[0].load("c")).revision == len(stores)
    finally:
        for store in stores:
            await store.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{fresh}" CASCADE')


async def test_an_odd_schema_name_is_quoted_and_isolates_the_tables(
    postgres_url: str, make_store: MakeStore, admin: Any
) -> None:
    odd = f'{schema_of(postgres_url)} "Odd"; Name'
    url = f"{POSTGRES_DSN}?schema={odd.replace(' ', '%20').replace(';', '%3B')}"
    try:
        plain = await make_store(postgres_url)
        quoted = await make_store(url)
        assert quoted.schema == odd
        await quoted.commit("c", agent_id="a", expected_revision=0, messages=run(1))
        assert (await plain.load("c")).revision == 0  # another schema, another store
        assert (
            await admin.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", odd
            )
            == 3
        )
    finally:
        quoted_name = '"' + odd.replace('"', '""') + '"'
        await admin.execute(f"DROP SCHEMA IF EXISTS {quoted_name} CASCADE")


async def test_a_newer_schema_is_refused_and_left_untouched(
    postgres_url: str, make_store: MakeStore, admin: Any
) -> None:
    current = await make_store(postgres_url)
    await current.commit("c1", agent_id="a", expected_revision=0, messages=run(1))
    await current.close()
    newer = len(MIGRATIONS) + 1
    await admin.execute(
        "INSERT INTO axon_schema (version, applied_at, description) VALUES ($1, 0, 'future')",
        newer,
    )
    app = f"axon_refused_{uuid.uuid4().hex[:8]}"
    refused = await make_store(with_options(postgres_url, application_name=app), open=False)
    with pytest.raises(ConfigError, match=f"schema version {newer}") as caught:
        await refused.open()
    assert f"up to {len(MIGRATIONS)}" in caught.value.reason
    # Nothing left open, nothing touched.
    assert (
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
        )
        == 0
    )
    with pytest.raises(StoreUnavailable, match="not open"):
        await refused.load("c1")
    assert [
        r["version"] for r in await admin.fetch("SELECT version FROM axon_schema ORDER BY 1")
    ] == [
        *(m.version for m in MIGRATIONS),
        newer,
    ]
    assert await admin.fetchval("SELECT revision FROM axon_conversations WHERE id = 'c1'") == 1


# ---------------------------------------------------------------------------------- commits


async def test_100_concurrent_writers_on_one_conversation_lose_and_duplicate_nothing(
    postgres_url: str, make_store: MakeStore
) -> None:
    """100 tasks sharing one store (and its 4-connection pool) each commit one run to ONE
    conversation, reloading and retrying on every conflict: the history holds each run exactly
    once, whole, at the revision its commit returned."""
    store = await make_store(with_options(postgres_url, pool_max_size=4))
    landed_at: dict[int, int] = {}
    seen: list[tuple[int, int, int]] = []  # (loaded, expected, actual) of each conflict

    async def writer(n: int) -> None:
        while True:
            at = (await store.load("c")).revision
            try:
                landed_at[n] = await store.commit(
                    "c", agent_id="a", expected_revision=at, messages=run(n)
                )
                assert landed_at[n] == at + 1, "a run landed on a history it never saw"
                return
            except StoreConflict as exc:
                seen.append((at, exc.facts["expected"], exc.facts["actual"]))

    await asyncio.gather(*(writer(n) for n in range(100)))
    history = await store.load("c")
    assert history.revision == 100
    order = sorted(landed_at, key=landed_at.__getitem__)
    assert sorted(landed_at.values()) == list(range(1, 101))
    assert json.loads(history.messages) == [item for n in order for item in json.loads(run(n))]
    assert seen, "the writers never raced: the test proved nothing"
    assert all(loaded == expected < actual for loaded, expected, actual in seen)


async def test_two_pools_racing_at_the_same_revision_never_both_win(
    postgres_url: str, make_store: MakeStore
) -> None:
    """Two stores (two pools, as two orchestrators would have) commit at the same revision,
    round after round: each round exactly one wins, the other conflicts and writes nothing."""
    a = await make_store(postgres_url)
    b = await make_store(postgres_url)
    winners: list[bytes] = []
    for revision in range(20):
        runs = (run(2 * revision), run(2 * revision + 1))
        outcomes = await asyncio.gather(
            a.commit("c", agent_id="a", expected_revision=revision, messages=runs[0]),
            b.commit("c", agent_id="a", expected_revision=revision, messages=runs[1]),
            return_exceptions=True,
        )
        won = [runs[i] for i, o in enumerate(outcomes) if o == revision + 1]
        assert len(won) == 1, outcomes
        assert any(isinstance(o, StoreConflict) for o in outcomes), outcomes
        winners += won
    history = await a.load("c")
    assert (history.revision, history.messages) == (20, join_json_arrays(winners))


async def test_a_connection_goes_back_to_the_pool_without_a_reset_round_trip(
    postgres_url: str, make_store: MakeStore, relay: TcpRelay
) -> None:
    store = await make_store(relay.rewrite(postgres_url))  # pool_min_size 1: one connection
    relay.cut_after(b"RESET ALL")  # the pool's default reset query would cut its connection

    for revision in range(3):
        await store.commit("c1", agent_id="a", expected_revision=revision, messages=run(revision))
        assert (await store.load("c1")).revision == revision + 1
    await store.ping()
    assert [c.conversation_id for c in await store.list_conversations()] == ["c1"]

    assert relay.accepted == 1, "every operation reused the one connection: nothing cut it"


async def test_messages_are_stored_as_exact_bytes(postgres_url: str, make_store: MakeStore) -> None:
    """bytea keeps a run's JSON exactly as given (jsonb would re-serialise it)."""
    store = await make_store(postgres_url)
    raw = b'[ {"z": 1, "a": "\\u00e9\xc3\xa9", "n": 1.50}\n, {"b" :[ ]} ]'
    await store.commit("c", agent_id="a", expected_revision=0, messages=raw)
    assert (await store.load("c")).messages == join_json_arrays([raw])


# ----------------------------------------------------------------------------------- outages


async def test_open_while_the_server_is_down_is_a_prompt_typed_error(
    postgres_url: str, relay: TcpRelay, make_store: MakeStore
) -> None:
    url = with_options(relay.rewrite(postgres_url), connect_timeout=CONNECT_TIMEOUT)
    store = await make_store(url, open=False)
    await relay.cut()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert loop.time() - started < CONNECT_TIMEOUT + SLACK
    assert caught.value.store == "postgresql"
    relay.restore()
    await store.open()  # a failed open() left nothing behind and may be retried
    assert (await store.load("c")).revision == 0


async def test_pool_recovers_by_itself_after_the_connection_is_cut_and_restored(
    postgres_url: str, relay: TcpRelay, make_store: MakeStore
) -> None:
    url = with_options(
        relay.rewrite(postgres_url),
        connect_timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        pool_min_size=2,
        pool_max_size=2,
    )
    store = await make_store(url)
    await store.commit("c", agent_id="a", expected_revision=0, messages=run(1))
    assert relay.connections == 2
    before = relay.accepted

    await relay.cut()  # every pooled connection is reset; new ones are refused
    loop = asyncio.get_running_loop()
    for _ in range(3):  # stale pooled connections first, then failing reconnects
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await store.load("c")
        with pytest.raises(StoreUnavailable):
            await store.commit("c", agent_id="a", expected_revision=1, messages=run(2))
        with pytest.raises(StoreUnavailable):
            await store.list_conversations()
        assert loop.time() - started < SLACK, "a refused connection must fail at once"

    relay.restore()  # the same store object, no reopening
    history = await store.load("c")
    assert (history.revision, history.messages) == (1, run(1)), "a failed commit wrote nothing"
    assert await store.commit("c", agent_id="a", expected_revision=1, messages=run(2)) == 2
    assert relay.accepted > before, "the pool did not open new connections"
    assert [c.conversation_id for c in await store.list_conversations()] == ["c"]


async def test_a_silent_network_is_bounded_by_the_timeouts(
    postgres_url: str, relay: TcpRelay, make_store: MakeStore
) -> None:
    """A blackholed connection (packets dropped, nothing closed): every call ends with
    StoreUnavailable after about command_timeout, never hangs; close() does not hang either;
    once the network is back the store works again."""
    url = with_options(
        relay.rewrite(postgres_url),
        connect_timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        pool_max_size=2,
    )
    store = await make_store(url)
    await store.commit("c", agent_id="a", expected_revision=0, messages=run(1))

    await relay.cut(blackhole=True)
    loop = asyncio.get_running_loop()
    for call in (
        lambda: store.load("c"),
        lambda: store.commit("c", agent_id="a", expected_revision=1, messages=run(2)),
        lambda: store.load("c"),  # a NEW connection now: bounded by connect_timeout
    ):
        started = loop.time()
        with pytest.raises(StoreUnavailable, match="timed out"):
            await call()
        assert loop.time() - started < CONNECT_TIMEOUT + COMMAND_TIMEOUT + SLACK

    relay.restore()
    # The timed-out commit never got an answer to its BEGIN, so it never sent COMMIT.
    assert (await store.load("c")).revision == 1
    await relay.cut(blackhole=True)
    started = loop.time()
    await store.close()
    assert loop.time() - started < COMMAND_TIMEOUT + SLACK
    relay.restore()
