"""Cost of observability: metrics and logging on vs off, in the same run; and of a scrape.

    python benchmarks/bench_observability.py [--requests 500] [--rounds 10] [--json FILE]

1. Throughput at 64 concurrent requests (Python API, in process, like
   ``bench_performance.py``) of the misbehaving example's echo path on 2 workers, three ways,
   interleaved in alternating rounds (the order rotates every round) and reported as medians
   with their ratio to (a):

   a. metrics off (``runtime.metrics = false``), log level WARNING (nothing is written: an ok
      run's events are INFO and DEBUG);
   b. metrics on, log level WARNING;
   c. metrics on, log level INFO, every event as a JSON line to a file (``configure_logging``,
      what ``axon serve --log-format json`` does).

   Also the orchestrator's CPU per run in each (``time.process_time()``, less noisy than
   throughput on a shared machine).
2. The metrics sink on its own: one ``run.finished`` through ``EventBus.emit`` with and without
   the metrics subscribed (log level WARNING), per event.
3. One scrape (``RuntimeMetrics.exposition()``: the gauges, ``psutil`` reads of each worker,
   the text format) of the real runtime (2 agents, 3 workers, after the load) and of 50
   synthetic agents with 2 workers each (live processes): with only the pre-created series,
   and with every outcome (streamed runs too) and three exit causes seen per agent (the worst
   case). Median time, series and size. The scrape runs on the orchestrator's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from axon import AgentSpec, Axon, RuntimeSpec, SupervisorSpec
from axon.observability.events import EventBus, EventSink
from axon.observability.logging import configure_logging
from axon.observability.metrics import RuntimeMetrics
from axon.observability.resources import WorkerResources
from axon.status import AgentStatus, WorkerStatus

AGENT = "axon.examples.misbehaving:misbehaving_agent"
CONCURRENCY = 64
MODES = {
    "a": "metrics off, WARNING",
    "b": "metrics on, WARNING",
    "c": "metrics on, INFO JSON lines to a file",
}
OUTCOMES = ("ok", "agent_crashed", "agent_timeout", "agent_run_failed", "overloaded", "cancelled")
CAUSES = ("requested", "crashed", "hung")


def agents(workers: int) -> list[AgentSpec]:
    return [
        AgentSpec(id="bench", agent=AGENT, workers=workers, max_concurrency=CONCURRENCY),
        AgentSpec(id="other", agent=AGENT),
    ]


async def load(axon: Axon, requests: int) -> tuple[float, float]:
    """``requests`` runs at 64 concurrent: (runs/s, orchestrator CPU seconds per run)."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with sem:
            await axon.send_message("bench", "hi")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    wall = time.perf_counter() - wall
    return requests / wall, (time.process_time() - cpu) / requests


def set_logging(mode: str, log_file: Any) -> None:
    configure_logging("json", logging.INFO if mode == "c" else logging.WARNING, stream=log_file)


class _SinkCatcher(EventBus):
    """Hands over the sink a ``RuntimeMetrics`` subscribes, so that the benchmark can put it on
    the runtime's bus and take it off again between rounds."""

    sink: EventSink | None = None

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        self.sink = sink
        return lambda: None


async def bench_throughput(
    requests: int, rounds: int, log_path: Path, progress: Progress
) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """Per mode, the runs/s and CPU per run of each round; and one scrape of the runtime.

    One runtime serves every mode: two identical runtimes in one process differ by more than
    the metrics cost (measured: 15 % in runs/s, 17 % in CPU per run), so (a) and (b) differ only
    in whether the metrics sink is subscribed to the runtime's bus.
    """
    supervision = SupervisorSpec(backoff_initial=0.001, backoff_max=0.01, max_restarts=1000)
    axon = Axon(agents(2), supervisor=supervision, runtime=RuntimeSpec(metrics=False))
    catcher = _SinkCatcher()
    metrics = RuntimeMetrics(
        catcher, axon.agents, [a.id for a in axon.config.agents], WorkerResources()
    )
    assert catcher.sink is not None
    results: dict[str, dict[str, list[float]]] = {m: {"rps": [], "cpu": []} for m in MODES}
    with log_path.open("a") as log_file:
        async with axon:
            set_logging("a", log_file)
            for _ in range(100):  # warm up
                await axon.send_message("bench", "hi")
            task = progress.add_task("throughput rounds", total=rounds * len(MODES))
            order = list(MODES)
            for r in range(rounds):
                for mode in order[r % 3 :] + order[: r % 3]:  # rotate: no mode always first
                    set_logging(mode, log_file)
                    unsubscribe = axon.events.subscribe(catcher.sink) if mode != "a" else None
                    rps, cpu = await load(axon, requests)
                    await asyncio.sleep(0.2)  # a pause between rounds
                    if unsubscribe is not None:
                        unsubscribe()
                    set_logging("a", log_file)
                    results[mode]["rps"].append(rps)
                    results[mode]["cpu"].append(cpu)
                    progress.advance(task)
            scrape = time_scrape(metrics)
            counted = sum(
                s.value
                for family in metrics.registry.collect()
                if family.name == "axon_runs"
                for s in family.samples
                if s.name == "axon_runs_total"
            )
            assert counted == 2 * rounds * requests, counted  # (b) and (c) rounds, every run
    logging.getLogger("axon").setLevel(logging.WARNING)
    return results, scrape


def time_scrape(metrics: RuntimeMetrics, repeat: int = 200) -> dict[str, float]:
    body = metrics.exposition()[0]
    times: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        metrics.exposition()
        times.append(time.perf_counter() - t0)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {"ms": statistics.median(times) * 1000, "bytes": len(body), "series": series}


def synthetic_metrics(n_agents: int, pids: list[int], *, busy: bool) -> RuntimeMetrics:
    """``n_agents`` agents of 2 workers each on live processes: only the pre-created series
    (``busy`` False), or every outcome (streamed runs too) and three exit causes seen."""
    bus = EventBus()
    pid = itertools.cycle(pids)
    status = [
        AgentStatus(
            f"agent_{i:02d}",
            "running",
            restarts=0,
            workers=[
                WorkerStatus(
                    index=w,
                    pid=next(pid),
                    state="running",
                    generation=1,
                    restarts=0,
                    in_flight=0,
                    last_exit=None,
                )
                for w in range(2)
            ],
        )
        for i in range(n_agents)
    ]
    metrics = RuntimeMetrics(bus, lambda: status, [a.id for a in status], WorkerResources())
    for agent in status if busy else []:
        for outcome in OUTCOMES:
            fields = {**run_fields(agent.id, outcome), "ttft_s": 0.2}
            bus.emit("run.finished", logging.DEBUG, **fields)
        for cause in CAUSES:
            bus.emit("worker.exit", logging.DEBUG, agent=agent.id, worker=0, pid=1, cause=cause)
    return metrics


def run_fields(agent: str, outcome: str = "ok") -> dict[str, Any]:
    return {
        "agent": agent,
        "conversation": "c-1",
        "run": 1,
        "pid": 1,
        "outcome": outcome,
        "latency_s": 0.012,
        "ttft_s": None,
        "commit_s": 0.0004,
    }


def bench_sink(repeat: int = 200_000) -> dict[str, float]:
    """ns per ``run.finished`` through ``EventBus.emit`` (level WARNING: not logged)."""
    logging.getLogger("axon").setLevel(logging.WARNING)
    fields = run_fields("bench")

    def per_event(bus: EventBus) -> float:
        emit: Callable[..., None] = bus.emit
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeat):
                emit("run.finished", logging.INFO, **fields)
            best = min(best, (time.perf_counter() - t0) / repeat)
        return best * 1e9

    bare = EventBus()
    with_metrics = EventBus()
    RuntimeMetrics(with_metrics, list, ["bench"], WorkerResources())
    no_sink = per_event(bare)
    metrics = per_event(with_metrics)
    return {
        "emit_no_sink_ns": no_sink,
        "emit_with_metrics_ns": metrics,
        "sink_ns": metrics - no_sink,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="runs per round and mode")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    console = Console()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        log_path = Path(tmp) / "axon.jsonl"
        try:
            raw, scrape_real = asyncio.run(
                bench_throughput(args.requests, args.rounds, log_path, progress)
            )
        except Exception:
            # A run failed (the figures would be wrong): show why, from the runtime's log.
            for line in log_path.read_text().splitlines():
                if '"level": "info"' not in line:
                    console.print(line, markup=False, highlight=False)
            raise
        log_lines = sum(1 for _ in log_path.open())
        task = progress.add_task("sink and scrape", total=None)
        sink = bench_sink()
        quiet = time_scrape(synthetic_metrics(50, [os.getpid()], busy=False))
        busy = time_scrape(synthetic_metrics(50, [os.getpid()], busy=True))
        progress.remove_task(task)

    base_rps = statistics.median(raw["a"]["rps"])
    throughput: dict[str, dict[str, Any]] = {
        mode: {
            "label": label,
            "rps_median": statistics.median(raw[mode]["rps"]),
            "rps_rounds": raw[mode]["rps"],
            "ratio_to_a": statistics.median(raw[mode]["rps"]) / base_rps,
            "orchestrator_cpu_us_per_run": statistics.median(raw[mode]["cpu"]) * 1e6,
        }
        for mode, label in MODES.items()
    }
    figures: dict[str, Any] = {
        "throughput_64_concurrent": throughput,
        "json_log_lines_written": log_lines,
        "sink": sink,
        "scrape": {
            "2_agents_3_workers": scrape_real,
            "50_agents_100_workers_ok_only": quiet,
            "50_agents_100_workers_every_outcome": busy,
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "requests_per_round": args.requests,
        "rounds": args.rounds,
    }

    table = Table(title="Observability overhead (same run, alternating rounds, medians)")
    table.add_column("figure")
    table.add_column("value")
    table.add_column("vs (a)")
    base_cpu = throughput["a"]["orchestrator_cpu_us_per_run"]
    for mode, row in throughput.items():
        table.add_row(
            f"({mode}) {row['label']}",
            f"{row['rps_median']:.0f} runs/s, {row['orchestrator_cpu_us_per_run']:.0f} µs CPU/run",
            f"{row['ratio_to_a']:.3f}x, "
            f"{row['orchestrator_cpu_us_per_run'] - base_cpu:+.0f} µs CPU/run",
        )
    table.add_row(
        "run.finished through emit()",
        f"{sink['emit_with_metrics_ns'] / 1000:.2f} µs with the metrics sink",
        f"+{sink['sink_ns'] / 1000:.2f} µs (bare emit {sink['emit_no_sink_ns'] / 1000:.2f} µs)",
    )
    for name, scrape in figures["scrape"].items():
        table.add_row(
            f"one scrape, {name.replace('_', ' ')}",
            f"{scrape['ms']:.2f} ms",
            f"{scrape['series']:.0f} series, {scrape['bytes'] / 1024:.0f} KiB",
        )
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
