"""``axon``: serve agents, check configs.

Exit codes: 0 success; 1 the runtime failed; 2 bad usage or an invalid config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from axon.config import AxonConfig, load_config
from axon.errors import ConfigError
from axon.status import AgentStatus

__all__ = ["app", "main"]

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


app = typer.Typer(
    name="axon",
    help="Supervised worker processes for pydantic-ai agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _load(config: Path | None) -> AxonConfig:
    from axon.demo import demo_config

    try:
        return demo_config() if config is None else load_config(config)
    except ConfigError as exc:
        err_console.print(f"[red]invalid config:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Argument(help="axon.toml to serve; omitted: the built-in demo.")
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="Log lines as text or json (default: from config)."),
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Lowest level logged.")] = (
        LogLevel.INFO
    ),
) -> None:
    """Start every agent's workers and supervise them until Ctrl-C / SIGTERM."""
    from axon.observability.logging import configure_logging

    cfg = _load(config)
    fmt = log_format.value if log_format else cfg.runtime.log_format
    configure_logging(
        "json" if fmt == "json" else "text", logging.getLevelNamesMapping()[log_level.upper()]
    )
    try:
        asyncio.run(_serve(cfg, demo=config is None))
    except ConfigError as exc:
        err_console.print(f"[red]invalid config:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None


async def _serve(cfg: AxonConfig, *, demo: bool) -> None:
    from axon.runtime import Axon

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    axon = Axon.from_config(cfg)
    try:
        await axon.start()
        console.print(_agents_table(axon.agents()))
        name = "the built-in demo" if demo else "your agents"
        console.print(f"[green]axon is serving {name}[/green]. Press Ctrl-C to stop.")
        await stop.wait()
        console.print("stopping: letting in-flight runs finish, then stopping workers ...")
    finally:
        with contextlib.suppress(Exception):
            await axon.stop()
    console.print("stopped.")


@app.command()
def check(
    config: Annotated[Path, typer.Argument(help="axon.toml to validate.")],
) -> None:
    """Validate a config (keys, values, agent import paths) without starting anything."""
    from axon.store.base import open_store

    cfg = _load(config)
    try:
        open_store(cfg.runtime.store)  # parses the URL and its options; connects to nothing
    except ConfigError as exc:
        err_console.print(f"[red]invalid config:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    console.print(
        f"[green]ok[/green]: {len(cfg.agents)} agent(s): " + ", ".join(a.id for a in cfg.agents)
    )


@app.command("demo-config")
def demo_config_cmd() -> None:
    """Print the built-in demo's config as TOML (a starting point for your own axon.toml)."""
    from axon.demo import DEMO_TOML

    typer.echo(DEMO_TOML, nl=False)


def _agents_table(agents: list[AgentStatus]) -> Table:
    table = Table(title="agents")
    for column in ("agent", "state", "workers (pid)", "restarts", "in-flight"):
        table.add_column(column)
    for agent in agents:
        pids = ", ".join(str(w.pid) for w in agent.workers)
        table.add_row(agent.id, agent.state, pids, str(agent.restarts), str(agent.in_flight))
    return table


def main() -> None:
    # Like ``python -m``, find the user's agent modules in the working directory (the workers
    # are started with it as their working directory too).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app()
