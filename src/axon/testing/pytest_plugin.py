"""pytest fixtures for testing your agents under Axon: a runtime or an ``axon serve`` per test,
checked at teardown for leftover worker processes.

Enable them in your ``conftest.py`` (they need ``pytest-asyncio``)::

    pytest_plugins = ["axon.testing.pytest_plugin"]

then, in a test::

    async def test_my_agent_survives_a_crash(axon_runtime):
        axon = await axon_runtime("axon.toml")          # or AgentSpec(...)s, or an AxonConfig
        await axon.send_message("mine", "first", conversation_id="c")
        pid = kill_worker(axon, "mine")
        await wait_until_serving(axon, "mine", replaced=[pid])
        await axon.send_message("mine", "second", conversation_id="c")
        await assert_history(axon, "c", ["first", "second"])

``axon_runtime(...)`` starts an :class:`~axon.Axon` (from a config path, an ``AxonConfig``, or
agent specs with ``supervisor=``/``runtime=`` keywords) and returns it once every agent is
serving; at teardown it is stopped and **no worker process it ever had may be left** (the test
fails otherwise). ``axon_server(config_toml_text or path, env=..., args=...)`` does the same for a
real ``axon serve`` subprocess (an :class:`~axon.testing.AxonServer`: ``server.url``), which
must also exit 0 at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from axon.config import AgentSpec, AxonConfig, load_config
from axon.runtime import Axon
from axon.testing.helpers import all_worker_pids, descendant_pids, pid_alive
from axon.testing.server import AxonServer

__all__ = ["AxonRuntimeFactory", "AxonServerFactory", "axon_runtime", "axon_server"]

AxonRuntimeFactory = Callable[..., Awaitable[Axon]]
AxonServerFactory = Callable[..., Awaitable[AxonServer]]


@pytest_asyncio.fixture
async def axon_runtime() -> AsyncIterator[AxonRuntimeFactory]:
    """``await axon_runtime(config_or_specs..., **kw)`` -> a started ``Axon`` (see the module
    docstring); stopped at teardown, with no worker process left."""
    started: list[tuple[Axon, set[int]]] = []

    async def start(*what: str | Path | AxonConfig | AgentSpec, **kw: Any) -> Axon:
        if len(what) == 1 and isinstance(what[0], str | Path | AxonConfig):
            config = what[0] if isinstance(what[0], AxonConfig) else load_config(what[0])
            axon = Axon(config=config, **kw)
        else:
            specs = [s for s in what if isinstance(s, AgentSpec)]
            if len(specs) != len(what):
                raise TypeError("give one config (path or AxonConfig) or AgentSpec(s)")
            axon = Axon(specs, **kw)
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


@pytest_asyncio.fixture
async def axon_server(tmp_path: Path) -> AsyncIterator[AxonServerFactory]:
    """``await axon_server(toml_text_or_path=None, env=..., args=..., listen=...)`` -> a running
    ``axon serve`` (None: the built-in demo) in ``tmp_path``; at teardown it gets SIGTERM,
    must exit 0, and no worker process may be left."""
    servers: list[tuple[AxonServer, set[int]]] = []

    async def serve(
        config: str | Path | None = None,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        listen: str = "127.0.0.1:0",
    ) -> AxonServer:
        path: Path | None = None
        if isinstance(config, Path):
            path = config
        elif config is not None:
            path = tmp_path / f"axon-{len(servers)}.toml"
            path.write_text(config)
        server = await AxonServer.start(path, cwd=tmp_path, env=env, args=args, listen=listen)
        servers.append((server, set(descendant_pids(server.pid))))
        return server

    yield serve
    for server, pids in reversed(servers):
        pids.update(descendant_pids(server.pid))
        if server.process.returncode is None:
            code = await server.stop()
            assert code == 0, f"axon serve exited with {code}:\n{server.logs()}"
        leftovers = {pid for pid in pids if pid_alive(pid)}
        assert not leftovers, f"worker processes outlived axon serve: {leftovers}"
