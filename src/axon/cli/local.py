"""The local commands: ``axon serve``, ``axon check`` and ``axon demo-config``."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from axon.cli.app import EXIT_CONFIG, EXIT_RUNTIME, app, console, err_console
from axon.config import AxonConfig, load_config
from axon.errors import AxonError, ConfigError

__all__ = ["check", "demo_config_cmd", "serve"]


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


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
        Path | None,
        typer.Argument(metavar="CONFIG", help="axon.toml to serve; omitted: the built-in demo."),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="host:port to listen on (default: runtime.listen)."),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="Log lines as text or json (default: from config)."),
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Lowest level logged.")] = (
        LogLevel.INFO
    ),
) -> None:
    """Serve the agents over HTTP until Ctrl-C / SIGTERM, then shut down gracefully."""
    from axon.config import RuntimeSpec
    from axon.http.server import run as run_http
    from axon.observability.logging import configure_logging

    cfg = _load(config)
    if listen is not None:
        try:
            RuntimeSpec(listen=listen)
        except ConfigError as exc:
            err_console.print(f"[red]invalid --listen:[/red] {exc.facts.get('reason', exc)}")
            raise typer.Exit(EXIT_CONFIG) from None
    fmt = log_format.value if log_format else cfg.runtime.log_format
    configure_logging(
        "json" if fmt == "json" else "text", logging.getLevelNamesMapping()[log_level.upper()]
    )
    demo = config is None

    def on_ready(url: str) -> None:
        name = "the built-in demo" if demo else "your agents"
        console.print(f"[green]axon is serving {name} on {url}[/green]  (Ctrl-C to stop)")
        first = cfg.agents[0].id if cfg.agents else "AGENT"
        console.print(
            f"try: axon send {first} 'What is the weather in Paris?' --url {url}\n"
            f"live view: {url}/dashboard  (or axon top --url {url});  API: {url}/docs",
            soft_wrap=True,
        )

    try:
        run_http(cfg, listen=listen, on_ready=on_ready)
    except ConfigError as exc:
        err_console.print(f"[red]invalid config:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    except OSError as exc:
        err_console.print(f"[red]cannot listen on {listen or cfg.runtime.listen}:[/red] {exc}")
        raise typer.Exit(EXIT_RUNTIME) from None
    except AxonError as exc:  # e.g. the store cannot be opened: nothing was started
        err_console.print(f"[red]cannot start:[/red] {exc.type}: {exc}")
        raise typer.Exit(EXIT_RUNTIME) from None
    console.print("stopped.")


@app.command()
def check(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="axon.toml to validate.")],
) -> None:
    """Validate a config (keys, values, agent import paths) without starting anything."""
    from axon.store.urls import open_store

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
