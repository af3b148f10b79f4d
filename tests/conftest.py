"""Shared fixtures: real runtimes with real worker processes, checked for leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from axon import AgentSpec, Axon, SupervisorSpec
from axon.testing import AxonServer, EventLog, capture_events

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


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def all_worker_pids(axon: Axon) -> set[int]:
    return {w.pid for a in axon.agents() for w in a.workers if w.pid is not None}


@pytest.fixture
async def start_axon() -> AsyncIterator[StartAxon]:
    """``await start_axon(AgentSpec(...), ..., supervisor=FAST)`` -> a started ``Axon``.

    At teardown every runtime is stopped and no worker process it ever had may be left.
    """
    started: list[tuple[Axon, set[int]]] = []

    async def start(*agents: AgentSpec, supervisor: SupervisorSpec = FAST, **kw: Any) -> Axon:
        axon = Axon(list(agents), supervisor=supervisor, **kw)
        seen: set[int] = set()
        started.append((axon, seen))
        await axon.start()
        seen |= all_worker_pids(axon)
        return axon

    yield start
    for axon, seen in reversed(started):
        seen |= all_worker_pids(axon)
        await axon.stop()
        leftovers = {pid for pid in seen if pid_alive(pid)}
        assert not leftovers, f"worker processes outlived the runtime: {leftovers}"


ServeAxon = Callable[..., Awaitable[AxonServer]]

# Configs for ``axon serve`` subprocesses in tests: the demo's agents with fast restarts.
# WEATHER_SERVER_TOML leaves out the misbehaving agent (for fuzzing: no prompt can crash it).
WEATHER_SERVER_TOML = """\
[runtime]
store = "sqlite:///axon.db"
shutdown_grace = 10

[supervisor]
backoff_initial = 0.01
backoff_max = 0.5
heartbeat_interval = 0.25
heartbeat_timeout = 4.0
cancel_grace = 1.0
shutdown_timeout = 3.0

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
async def serve_axon(tmp_path: Path) -> AsyncIterator[ServeAxon]:
    """``await serve_axon(toml=TEST_SERVER_TOML, env=..., args=...)`` -> a running
    ``axon serve`` subprocess (``server.url``) in ``tmp_path``.

    At teardown each server still running gets SIGTERM and must exit 0, and none of its worker
    processes may be left.
    """
    servers: list[tuple[AxonServer, set[int]]] = []

    async def serve(
        toml: str | None = TEST_SERVER_TOML,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        listen: str = "127.0.0.1:0",
    ) -> AxonServer:
        config = None
        if toml is not None:
            config = tmp_path / f"axon-{len(servers)}.toml"
            config.write_text(toml)
        server = await AxonServer.start(config, cwd=tmp_path, env=env, args=args, listen=listen)
        servers.append((server, set(descendant_pids(server.pid))))
        return server

    yield serve
    for server, pids in reversed(servers):
        pids |= set(descendant_pids(server.pid))
        if server.process.returncode is None:
            code = await server.stop()
            assert code == 0, f"axon serve exited with {code}:\n{server.logs()}"
        leftovers = {pid for pid in pids if pid_alive(pid)}
        assert not leftovers, f"worker processes outlived axon serve: {leftovers}"


def descendant_pids(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (worker processes of an ``axon serve``)."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


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
