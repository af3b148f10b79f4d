"""``axon bench``: apply a load to agents and report what they sustained.

The command is a thin shell over :mod:`axon.loadtest` (the engine ``axon chaos`` drives too):
it turns options into a :class:`~axon.loadtest.Plan`, opens the target (a running server at
``--url``, or a runtime it starts in this process from ``--config`` and stops at the end),
checks it can serve before loading it, shows a progress bar on stderr while it runs, and prints
the figures: a table, or with ``--json`` one JSON object on stdout.

Exit codes: 0 the load ran (failed requests are figures, not a failure of the command); 1 the
target cannot be reached or started (or ``--plot`` cannot be written); 2 bad usage (options, an
invalid config, an unknown agent); 3 the server refused the token; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from axon.cli.app import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    app,
    err_console,
    in_process_logging,
)
from axon.client import DEFAULT_URL, error_type_of
from axon.errors import AxonError, ConfigError
from axon.loadtest import (
    DEFAULT_PROMPT,
    DEFAULT_TAG,
    MAX_IN_FLIGHT,
    HttpTarget,
    InProcessTarget,
    LoadReport,
    Plan,
    PlanError,
    RequestRecord,
    Target,
    run_load,
    summarize,
)

__all__ = ["bench"]


PlotFile = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="FILE.png",
        help="Also write a PNG: latency over time and a histogram (needs matplotlib: "
        "pip install 'axon-runtime[plot]').",
        show_default=False,
    ),
]
"""The ``--plot`` option of ``bench`` and ``chaos``."""


class _Stop(Exception):
    """Ends the command with ``code`` after ``message`` (one line on stderr)."""

    def __init__(self, code: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


@app.command()
def bench(
    agent: Annotated[
        list[str],
        typer.Option(
            "--agent",
            "-a",
            metavar="ID",
            help="Agent to load (repeat for several: conversations go to each in turn).",
            show_default=False,
        ),
    ],
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="A running axon server to load (default: $AXON_URL, else "
            f"{DEFAULT_URL}). Point it at a server you own: bench refuses no address.",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="CONFIG",
            help="Start a runtime from this axon.toml in this process and load it through the "
            "Python API (no HTTP); it is stopped at the end.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            metavar="N",
            min=1,
            help="Closed loop: this many users, each sending its next request when its last "
            "one ended.",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            "-r",
            metavar="R",
            min=0.001,
            help="Open loop: start this many conversations per second, whether or not earlier "
            "ones finished (requests per second with --turns 1).",
            show_default=False,
        ),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            "--requests",
            "-n",
            metavar="N",
            min=1,
            help="Stop after this many requests.",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            "-d",
            metavar="S",
            min=0.001,
            help="Stop issuing requests after this many seconds (those in flight finish).",
            show_default=False,
        ),
    ] = None,
    turns: Annotated[
        int, typer.Option("--turns", "-k", metavar="K", min=1, help="Requests per conversation.")
    ] = 1,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream", help="Stream the answers; also measure time to first token and gaps."
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="S",
            min=0.001,
            help="Run timeout sent with each request (default: the agent's). The client gives "
            "up 5 s after the deadline (client_timeout).",
            show_default=False,
        ),
    ] = None,
    prompt: Annotated[
        str,
        typer.Option(
            "--prompt",
            metavar="TEXT",
            help="The prompt; may use {user}, {turn}, {request}, {agent}, {conversation}.",
        ),
    ] = DEFAULT_PROMPT,
    tag: Annotated[
        str,
        typer.Option(
            "--tag",
            metavar="TEXT",
            help="Appended to every prompt, same fields; makes each prompt unique so every "
            "exchange can be found in its history. --tag '' sends --prompt as it is.",
        ),
    ] = DEFAULT_TAG,
    max_in_flight: Annotated[
        int,
        typer.Option(
            "--max-in-flight",
            metavar="N",
            min=1,
            help="Open loop: conversations in flight at most; an arrival due beyond it is not "
            "sent and is counted as missed.",
        ),
    ] = MAX_IN_FLIGHT,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            envvar="AXON_API_TOKEN",
            help="Bearer token, if the server requires one.",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print the report as one JSON object on stdout."),
    ] = False,
    plot: PlotFile = None,
    records: Annotated[
        Path | None,
        typer.Option(
            "--records",
            metavar="FILE.jsonl",
            help="Also write every request's record as JSON lines (agent, conversation, turn, "
            "prompt, times, deadline, outcome, output).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Load agents with concurrent conversations and report throughput, errors by type and
    latency percentiles (and, with --stream, time to first token).

    Give one of --concurrency (closed loop) or --rate (open loop), and --requests and/or
    --duration: the load always ends by itself. Failed requests are counted by error type;
    they do not make the command fail. Exit codes: 0 the load ran; 1 the server cannot be
    reached or the runtime cannot start; 2 bad usage; 3 the token was refused.
    """
    try:
        if url is not None and config is not None:
            raise _Stop(EXIT_USAGE, "usage", "give --url or --config, not both")
        try:
            plan = Plan(
                agents=agent,
                concurrency=concurrency,
                rate=rate,
                requests=requests,
                duration=duration,
                turns=turns,
                stream=stream,
                timeout=timeout,
                prompt=prompt,
                tag=tag,
                max_in_flight=max_in_flight,
            )
        except PlanError as exc:
            raise _Stop(EXIT_USAGE, "usage", str(exc)) from None
        if plot is not None:
            _check_matplotlib()
        if config is None:
            url = url or os.environ.get("AXON_URL") or DEFAULT_URL
            if not url.startswith(("http://", "https://")):
                raise _Stop(EXIT_USAGE, "usage", "--url must start with http:// or https://")
        report, target_name = asyncio.run(_load(plan, url, config, token))
    except _Stop as stop:
        _error(stop.kind, str(stop))
        raise typer.Exit(stop.code) from None
    except KeyboardInterrupt:
        _error("interrupted", "the load was interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None

    from axon.loadtest.report import render, report_dict

    summary = summarize(report, plan.agents)
    if json_output:
        body = report_dict(report, plan, summary, target_name)
        typer.echo(json.dumps(body, separators=(",", ":"), default=str))
    else:
        Console().print(render(report, plan, summary, target_name), soft_wrap=True)
    failed = False
    if records is not None:
        try:
            with records.open("w") as f:
                for record in sorted(report.records, key=lambda r: r.index):
                    f.write(json.dumps(record.to_dict(), default=str) + "\n")
        except OSError as exc:
            _error("records", f"cannot write {records}: {exc}")
            failed = True
    if plot is not None:
        from axon.loadtest.plot import write_plot

        try:
            write_plot(report, plot, title=f"axon bench {target_name}")
        except OSError as exc:
            _error("plot", f"cannot write {plot}: {exc}")
            failed = True
        else:
            if not json_output:
                err_console.print(f"plot written to {plot}", style="dim", highlight=False)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _error(kind: str, message: str) -> None:
    err_console.print(
        Text.assemble(("error: ", "bold red"), f"{kind}: {message}"),
        soft_wrap=True,
        highlight=False,
    )


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        raise _Stop(
            EXIT_FAILED,
            "plot_unavailable",
            "--plot needs matplotlib: pip install 'axon-runtime[plot]'",
        ) from None


async def _load(
    plan: Plan, url: str | None, config: Path | None, token: str | None
) -> tuple[LoadReport, str]:
    async with _open_target(plan, url, config, token) as target:
        with _progress(plan) as on_result:
            report = await run_load(target, plan, on_result)
        return report, target.name


@contextlib.asynccontextmanager
async def _open_target(
    plan: Plan, url: str | None, config: Path | None, token: str | None
) -> AsyncGenerator[Target]:
    """The target, checked: it answers, accepts the token and has every agent of the plan."""
    agents = list(plan.agents)
    if config is not None:
        in_process_logging()
        stack = contextlib.AsyncExitStack()
        try:
            local = await stack.enter_async_context(InProcessTarget.from_config(config))
        except ConfigError as exc:
            raise _Stop(EXIT_USAGE, "config_error", str(exc)) from None
        except (AxonError, OSError) as exc:
            kind = exc.type if isinstance(exc, AxonError) else type(exc).__name__
            raise _Stop(EXIT_FAILED, kind, f"cannot start the runtime: {exc}") from None
        async with stack:
            try:
                local.check(agents)
            except AxonError as exc:
                raise _Stop(EXIT_USAGE, exc.type, exc.message) from None
            yield local
        return
    assert url is not None
    connections = plan.concurrency or plan.max_in_flight
    async with HttpTarget(url, token, max_connections=connections) as remote:
        try:
            await remote.check(agents)
        except AxonError as exc:
            kind = error_type_of(exc)
            code = {"unauthorized": EXIT_AUTH, "agent_not_found": EXIT_USAGE}.get(kind, EXIT_FAILED)
            raise _Stop(code, kind, exc.message) from None
        yield remote


@contextlib.contextmanager
def _progress(plan: Plan) -> Generator[Callable[[RequestRecord], None]]:
    """A progress bar on stderr (transient; nothing when stderr is not a terminal), advanced
    by each finished request, or by the clock when the load is bounded by duration only."""
    by_count = plan.requests is not None
    total = float(plan.requests) if plan.requests is not None else (plan.duration or 1.0)
    errors = 0
    progress = Progress(
        TextColumn("[bold]bench[/bold]"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=err_console,
        transient=True,
    )
    task = progress.add_task("bench", total=total, detail="")
    started = time.monotonic()
    done = 0

    def on_result(record: RequestRecord) -> None:
        nonlocal done, errors
        done += 1
        errors += not record.ok
        completed = done if by_count else min(time.monotonic() - started, total)
        progress.update(task, completed=completed, detail=f"{done} done, {errors} errors")

    callback: Callable[[RequestRecord], None] = on_result
    with progress:
        yield callback
