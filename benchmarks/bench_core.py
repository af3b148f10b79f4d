"""Core figures of the runtime, each side by side with its baseline in the same run.

    python benchmarks/bench_core.py [--requests N] [--crashes N] [--json FILE]

1. Sequential latency: ``axon.send_message`` vs ``agent.run`` in-process, same agent.
2. Throughput at 64 concurrent requests: Axon with 2 workers vs the in-process baseline
   (64 concurrent ``agent.run`` on one event loop).
3. SIGKILL of a worker -> the caller holding a run gets ``AgentCrashed``.
4. SIGKILL of a worker -> its replacement is ready (cold start of a new process).

The agent is the misbehaving example's echo path (a FunctionModel answer, no tools): the
cheapest run pydantic-ai can do, so the figures show the runtime's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from axon import AgentCrashed, AgentSpec, Axon, SupervisorSpec
from axon.testing import wait_until, wait_until_serving

AGENT = "axon.examples.misbehaving:misbehaving_agent"
CONCURRENCY = 64


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_in_process(requests: int) -> dict[str, Any]:
    from axon.examples.misbehaving import misbehaving_agent

    for _ in range(20):  # warm up
        await misbehaving_agent.run("hello")
    latencies = []
    for i in range(requests):
        t0 = time.perf_counter()
        await misbehaving_agent.run(f"hello {i}")
        latencies.append(time.perf_counter() - t0)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with sem:
            await misbehaving_agent.run(f"hello {i}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests * 2)))
    throughput = requests * 2 / (time.perf_counter() - t0)
    return {"latencies": latencies, "throughput": throughput}


async def bench_axon(requests: int, crashes: int, progress: Progress) -> dict[str, Any]:
    supervision = SupervisorSpec(backoff_initial=0.001, backoff_max=0.01, max_restarts=1000)
    spec = AgentSpec(id="bench", agent=AGENT, workers=2, max_concurrency=64)
    async with Axon([spec], supervisor=supervision) as axon:
        for _ in range(20):
            await axon.send_message("bench", "hello")
        task = progress.add_task("axon sequential", total=requests)
        latencies = []
        for i in range(requests):
            t0 = time.perf_counter()
            await axon.send_message("bench", f"hello {i}")
            latencies.append(time.perf_counter() - t0)
            progress.advance(task)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with sem:
                await axon.send_message("bench", f"hello {i}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests * 2)))
        throughput = requests * 2 / (time.perf_counter() - t0)

        to_crash: list[float] = []
        to_ready: list[float] = []
        task = progress.add_task("SIGKILL -> AgentCrashed / ready", total=crashes)
        for _ in range(crashes):
            run = asyncio.ensure_future(axon.send_message("bench", "sleep:30"))
            status = await wait_until(axon, "bench", lambda s: s.in_flight == 1, timeout=10)
            pid = next(w.pid for w in status.workers if w.in_flight == 1)
            assert pid is not None
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            try:
                await run
            except AgentCrashed:
                to_crash.append(time.perf_counter() - t0)
            await wait_until_serving(axon, "bench", replaced=[pid], timeout=30)
            to_ready.append(time.perf_counter() - t0)
            progress.advance(task)
    return {
        "latencies": latencies,
        "throughput": throughput,
        "to_crash": to_crash,
        "to_ready": to_ready,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--crashes", type=int, default=10)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    console = Console()
    with Progress(console=console, transient=True) as progress:
        base_task = progress.add_task("in-process baseline", total=None)
        base = asyncio.run(bench_in_process(args.requests))
        progress.remove_task(base_task)
        axon = asyncio.run(bench_axon(args.requests, args.crashes, progress))

    ms = 1000.0
    base_p50 = statistics.median(base["latencies"]) * ms
    axon_p50 = statistics.median(axon["latencies"]) * ms
    figures = {
        "sequential_p50_ms": {"in_process": base_p50, "axon": axon_p50},
        "sequential_p99_ms": {
            "in_process": pct(base["latencies"], 0.99) * ms,
            "axon": pct(axon["latencies"], 0.99) * ms,
        },
        "added_latency_p50_ms": axon_p50 - base_p50,
        "throughput_rps_64_concurrent": {
            "in_process_1_loop": base["throughput"],
            "axon_2_workers": axon["throughput"],
            "ratio": axon["throughput"] / base["throughput"],
        },
        "sigkill_to_agent_crashed_ms": {
            "p50": statistics.median(axon["to_crash"]) * ms,
            "max": max(axon["to_crash"]) * ms,
        },
        "sigkill_to_replacement_ready_ms": {
            "p50": statistics.median(axon["to_ready"]) * ms,
            "max": max(axon["to_ready"]) * ms,
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "requests": args.requests,
        "crashes": args.crashes,
    }
    table = Table(title="Axon core figures (same run, same machine)")
    table.add_column("figure")
    table.add_column("baseline")
    table.add_column("axon")
    table.add_column("ratio / delta")
    table.add_row(
        "sequential latency p50",
        f"{base_p50:.2f} ms (in-process agent.run)",
        f"{axon_p50:.2f} ms",
        f"+{axon_p50 - base_p50:.2f} ms",
    )
    tp = figures["throughput_rps_64_concurrent"]
    table.add_row(
        "throughput, 64 concurrent",
        f"{tp['in_process_1_loop']:.0f} runs/s (1 loop)",
        f"{tp['axon_2_workers']:.0f} runs/s (2 workers)",
        f"{tp['ratio']:.2f}x",
    )
    crash = figures["sigkill_to_agent_crashed_ms"]
    table.add_row(
        "SIGKILL -> AgentCrashed", "-", f"p50 {crash['p50']:.2f} ms", f"max {crash['max']:.2f} ms"
    )
    ready = figures["sigkill_to_replacement_ready_ms"]
    table.add_row(
        "SIGKILL -> replacement ready",
        "-",
        f"p50 {ready['p50']:.0f} ms",
        f"max {ready['max']:.0f} ms",
    )
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
