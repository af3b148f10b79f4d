"""``axon chaos``: a bench load with faults on a schedule, then the invariants (docs/chaos.md).

Exit codes: 0 every invariant held; 1 an invariant failed (or the runtime could not start);
2 bad usage or an invalid config; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from axon.cli.app import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    app,
    console,
    err_console,
    in_process_logging,
)
from axon.cli.bench import PlotFile
from axon.errors import AxonError, ConfigError

__all__ = ["chaos"]


def _every(name: str, what: str) -> Any:
    return typer.Option(
        f"--{name}-every",
        min=0.01,
        show_default=False,
        help=f"Seconds between two {what} (default: never).",
        rich_help_panel="Faults",
    )


@app.command()
def chaos(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="axon.toml of the agents to test; omitted: the built-in demo.",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", min=1.0, help="Seconds of load (and faults).")
    ] = 60.0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Concurrent users (closed loop).")
    ] = 16,
    turns: Annotated[int, typer.Option("--turns", min=1, help="Turns per conversation.")] = 3,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Each request's deadline, in seconds.")
    ] = 10.0,
    kill_every: Annotated[float | None, _every("kill", "SIGKILLs of a random worker")] = None,
    hang_every: Annotated[
        float | None, _every("hang", "SIGSTOPs of a random worker (a hang)")
    ] = None,
    cut_every: Annotated[
        float | None, _every("cut", "resets of a worker's link to the orchestrator")
    ] = None,
    truncate_every: Annotated[
        float | None, _every("truncate", "links cut in the middle of a frame")
    ] = None,
    slow_every: Annotated[
        float | None, _every("slow", "links slowed by 0.2 s per chunk for 3 s")
    ] = None,
    raise_every: Annotated[float | None, _every("raise", "runs made to raise in the agent")] = None,
    stall_every: Annotated[
        float | None, _every("stall", "runs made to stall until their deadline")
    ] = None,
    storm_every: Annotated[
        float | None, _every("storm", "crash storms (one agent's worker killed 6 times)")
    ] = None,
    outage_every: Annotated[
        float | None,
        _every("outage", "2-second outages of the PostgreSQL store (needs a postgresql:// store)"),
    ] = None,
    hostile_every: Annotated[
        float | None,
        _every(
            "hostile",
            "attacks on the orchestrator by a hostile worker (an agent the run adds: event "
            "bomb, stop reading, floods, an over-long line, an oversize result)",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="The conversation store for this run, instead of the config's runtime.store "
            "(e.g. postgresql://user@127.0.0.1:5432/db for --outage-every).",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="An agent the faults may strike (repeatable); default: every agent but the "
            "config's last, which stays untouched.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fault schedule.")] = 0,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON report on stdout instead of tables.")
    ] = False,
    plot: PlotFile = None,
) -> None:
    """Run a bench load on the agents of CONFIG in this process, inject faults on a schedule,
    then check the invariants: every request ended by its deadline with a reply or a typed
    error; every acknowledged exchange is in its history exactly once, in order, and nothing
    partial or failed is; untargeted agents kept serving; no worker outlived the run and the
    restarts match the faults and the logs. Prints a timeline of faults and recovery times.

    Exit codes: 0 every invariant held; 1 an invariant failed; 2 bad usage or config.
    """
    from axon.chaos.invariants import verdict_table, verdicts_to_dict
    from axon.chaos.runner import ChaosPlan, run_chaos, targets_of
    from axon.chaos.timeline import timeline_table, timeline_to_dict
    from axon.config import load_config, parse_config
    from axon.demo import demo_config
    from axon.loadtest import summarize
    from axon.loadtest.report import render

    try:
        cfg = demo_config() if config is None else load_config(config)
        if store is not None:
            data = cfg.model_dump(exclude_defaults=True)
            cfg = parse_config(  # its agents' imports were checked when it was loaded
                {**data, "runtime": {**data.get("runtime", {}), "store": store}},
                check_imports=False,
            )
        every = {
            kind: seconds
            for kind, seconds in (
                ("kill", kill_every),
                ("hang", hang_every),
                ("cut", cut_every),
                ("truncate", truncate_every),
                ("slow", slow_every),
                ("raise", raise_every),
                ("stall", stall_every),
                ("storm", storm_every),
                ("outage", outage_every),
                ("hostile", hostile_every),
            )
            if seconds is not None
        }
        plan = ChaosPlan(
            duration=duration,
            concurrency=concurrency,
            every=every,
            targets=tuple(target) if target else None,
            turns=turns,
            timeout=timeout,
            seed=seed,
        )
        targets_of(cfg, plan)
    except (ConfigError, ValueError) as exc:
        err_console.print(f"[red]invalid:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None

    progress = Progress(
        TextColumn("chaos"),
        BarColumn(),
        TextColumn("{task.fields[done]} requests, {task.fields[faults]} faults"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    task = progress.add_task("chaos", total=duration, done=0, faults=0)
    counts = {"done": 0, "faults": 0}

    def on_result(_record: object) -> None:
        counts["done"] += 1
        progress.update(task, done=counts["done"])

    def on_fault(_fault: object) -> None:
        counts["faults"] += 1
        progress.update(task, faults=counts["faults"])

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.5)
            progress.advance(task, 0.5)

    async def go() -> Any:
        in_process_logging()
        ticking = asyncio.ensure_future(tick())
        try:
            return await run_chaos(cfg, plan, on_result=on_result, on_fault=on_fault)
        finally:
            ticking.cancel()

    try:
        with progress:
            result = asyncio.run(go())
    except KeyboardInterrupt:
        err_console.print("[red]error:[/red] interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (AxonError, OSError) as exc:
        err_console.print(f"[red]cannot run:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None

    summary = summarize(result.load)
    if plot is not None:
        from axon.loadtest.plot import PlotUnavailable, write_plot

        try:
            write_plot(result.load, plot, title="axon chaos")
        except (PlotUnavailable, OSError) as exc:
            err_console.print(f"[red]cannot write the plot:[/red] {exc}")
    if json_output:
        report = {
            **verdicts_to_dict(result.verdicts),
            "requests": len(result.load.records),
            "outcomes": dict(Counter(r.outcome for r in result.load.records)),
            "maybe_committed": sum(r.maybe_committed for r in result.load.records),
            "throughput_rps": summary.throughput_rps,
            "faults": dict(Counter(f.kind for f in result.faults)),
            "faults_skipped": result.skipped,
            "orchestrator_rss": {"start": result.start_rss, "peak": result.peak_rss},
            "timeline": timeline_to_dict(result.recoveries, start=result.started),
        }
        typer.echo(json.dumps(report, default=str))
    else:
        faults = Table(box=None, header_style="bold")
        faults.add_column("fault")
        faults.add_column("injected", justify="right")
        for kind, n in sorted(Counter(f.kind for f in result.faults).items()):
            faults.add_row(kind, str(n))
        console.print(
            Group(
                render(result.load, result.load_plan, summary, "in-process"),
                faults,
                timeline_table(result.recoveries, start=result.started),
                verdict_table(result.verdicts),
            )
        )
        console.print(
            f"orchestrator RSS: {result.start_rss / 2**20:.0f} MiB at the start, "
            f"{result.peak_rss / 2**20:.0f} MiB at the peak"
        )
        verdict = "[green]every invariant held[/green]" if result.passed else "[red]FAILED[/red]"
        console.print(f"chaos: {verdict}")
    if not result.passed:
        raise typer.Exit(EXIT_FAILED)
