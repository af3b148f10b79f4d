"""Shared fixtures: real runtimes with real worker processes, checked for leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from axon.testing.pytest_plugin import AxonRuntimeFactory, AxonServerFactory

from axon import AgentSpec, Axon, SupervisorSpec
from axon.testing import AxonServer, EventLog, capture_events
from axon.testing import all_worker_pids as all_worker_pids  # re-exported for the tests
from axon.testing import descendant_pids as descendant_pids  # re-exported for the tests
from axon.testing import pid_alive as pid_alive  # re-exported for the tests

pytest_plugins = ["axon.testing.pytest_plugin", "pytester"]


def pytest_configure(config: pytest.Config) -> None:
    """Give the processes the tests start a working Ctrl-C. A test run started as a background
    job of a non-interactive shell inherits SIGINT ignored, and so would every ``axon`` CLI it
    starts (an ignored signal stays ignored across exec): the tests that press Ctrl-C on one
    would wait in vain. A handled signal is reset to its default in a child, so handling it here
    gives the children the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


WEATHER = "axon.examples.weather:weather_agent"
MISBEHAVING = "axon.examples.misbehaving:misbehaving_agent"

# Fast restarts for tests; heartbeats generous enough for a loaded 2-core CI machine.
FAST = SupervisorSpec(
    backoff_initial=0.01,
    backoff_max=0.5,
    heartbeat_interval=0.25,
    heartbeat_timeout=4.0,
    cancel_grace=1.0,
    shutdown_timeout=3.0,
    failed_cooldown=30.0,
)

StartAxon = Callable[..., Awaitable[Axon]]


@pytest.fixture
def start_axon(axon_runtime: AxonRuntimeFactory) -> StartAxon:
    """``await start_axon(AgentSpec(...), ..., supervisor=FAST)`` -> a started ``Axon``: the
    ``axon_runtime`` fixture of ``axon.testing.pytest_plugin`` with fast restarts by default.

    At teardown every runtime is stopped and no worker process it ever had may be left.
    """

    async def start(*agents: AgentSpec, supervisor: SupervisorSpec = FAST, **kw: Any) -> Axon:
        return await axon_runtime(*agents, supervisor=supervisor, **kw)

    return start


ServeAxon = Callable[..., Awaitable[AxonServer]]

# The ``[supervisor]`` table of the test configs below: FAST's timings (without its
# failed_cooldown), for any test that writes its own ``axon serve`` config.
FAST_SUPERVISOR_TOML = """\
[supervisor]
backoff_initial = 0.01
backoff_max = 0.5
heartbeat_interval = 0.25
heartbeat_timeout = 4.0
cancel_grace = 1.0
shutdown_timeout = 3.0
"""

# Configs for ``axon serve`` subprocesses in tests: the demo's agents with fast restarts.
# WEATHER_SERVER_TOML leaves out the misbehaving agent (for fuzzing: no prompt can crash it).
WEATHER_SERVER_TOML = f"""\
[runtime]
store = "sqlite:///axon.db"
shutdown_grace = 10

{FAST_SUPERVISOR_TOML}
[[agents]]
id = "python_agent_1"
agent = "axon.examples.weather:weather_agent"
workers = 2

[[agents]]
id = "python_agent_2"
agent = "axon.examples.weather:weather_agent"
"""
TEST_SERVER_TOML = (
    WEATHER_SERVER_TOML
    + """
[[agents]]
id = "misbehaving"
agent = "axon.examples.misbehaving:misbehaving_agent"
timeout = 10
"""
)


@pytest.fixture
def serve_axon(axon_server: AxonServerFactory) -> ServeAxon:
    """``await serve_axon(toml=TEST_SERVER_TOML, env=..., args=...)`` -> a running
    ``axon serve`` subprocess (``server.url``): the ``axon_server`` fixture of
    ``axon.testing.pytest_plugin`` with the test config by default.

    At teardown each server still running gets SIGTERM and must exit 0, and none of its worker
    processes may be left.
    """

    async def serve(toml: str | None = TEST_SERVER_TOML, **kw: Any) -> AxonServer:
        return await axon_server(toml, **kw)

    return serve


@pytest.fixture
def events() -> Iterator[EventLog]:
    """Every structured event of the ``axon`` logger during the test (DEBUG and up)."""
    with capture_events() as log:
        yield log


@pytest.fixture(autouse=True)
def _no_real_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real model provider."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-used")
    monkeypatch.setattr("pydantic_ai.models.ALLOW_MODEL_REQUESTS", False)
    os.environ.setdefault("LOGFIRE_CONSOLE", "false")


POSTGRES_DSN = os.environ.get("AXON_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A ``postgresql://`` store URL on a fresh schema of the test server, dropped afterwards.

    Outside CI a missing server skips the test with the reason; with ``CI=true`` it fails.
    """
    import uuid

    try:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, ImportError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_DSN}: {exc}")
    schema = f"axon_test_{uuid.uuid4().hex[:12]}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_DSN}?schema={schema}"
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


_SQLITE_LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()           # hold the lock until the test says so
conn.execute("ROLLBACK")
conn.close()
"""


@contextlib.asynccontextmanager
async def sqlite_write_lock(path: str | os.PathLike[str]) -> AsyncIterator[None]:
    """Another process holds an exclusive lock on the SQLite file ``path`` for the block."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SQLITE_LOCK_HOLDER,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert await holder.stdout.readline() == b"locked\n"
        yield
    finally:
        holder.stdin.write(b"release\n")
        await holder.stdin.drain()
        async with asyncio.timeout(30):
            assert await holder.wait() == 0
