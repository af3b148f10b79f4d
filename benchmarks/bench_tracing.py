"""The cost of tracing a request (``runtime.tracing``), off vs on, in the same run.

    python benchmarks/bench_tracing.py [--requests N] [--json FILE]

For each agent (the misbehaving example's echo path, the cheapest run there is, and the weather
example, whose run makes 6 spans: a run span, 3 model calls, 2 tool calls) three runtimes run
side by side, each with one worker: two with tracing off (their difference is the noise floor of
the measurement) and one with tracing on, its spans going to an in-process exporter
(``SimpleSpanProcessor(InMemorySpanExporter())``, so exporting is paid inline). Requests are
sequential and interleaved across the three runtimes (off, off, on, off, off, on, ...) so drift
on a noisy machine hits them alike.

Figures: latency p50/p99 per runtime, CPU per request in the orchestrator (``process_time``
around each call) and in the worker (the worker process's CPU time over the whole loop), and the
bytes the trace adds to the ``run`` frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

import psutil
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from axon import AgentSpec, Axon, RuntimeSpec
from axon.protocol.codec import encode_frame
from axon.protocol.frames import Run

AGENTS = {
    "echo": ("axon.examples.misbehaving:misbehaving_agent", "hello"),
    "weather": ("axon.examples.weather:weather_agent", "What is the weather in Paris?"),
}
WARM_UP = 20


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def worker_cpu(axon: Axon, agent_id: str) -> float:
    (worker,) = axon.agent(agent_id).workers
    assert worker.pid is not None
    times = psutil.Process(worker.pid).cpu_times()
    return times.user + times.system


async def bench_agent(name: str, requests: int, progress: Progress) -> dict[str, Any]:
    path, prompt = AGENTS[name]
    spec = AgentSpec(id=name, agent=path, workers=1)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runtimes = {
        "off": Axon([spec]),
        "off (again)": Axon([spec]),
        "on": Axon([spec], runtime=RuntimeSpec(tracing=True), tracer_provider=provider),
    }
    for axon in runtimes.values():
        await axon.start()
    try:
        for axon in runtimes.values():
            for _ in range(WARM_UP):
                await axon.send_message(name, prompt)
        exporter.clear()
        latency: dict[str, list[float]] = {key: [] for key in runtimes}
        cpu: dict[str, list[float]] = {key: [] for key in runtimes}
        cpu_before = {key: worker_cpu(axon, name) for key, axon in runtimes.items()}
        spans = 0
        task = progress.add_task(f"{name}: off / off / on", total=requests)
        for _ in range(requests):
            for key, axon in runtimes.items():
                c0, t0 = time.process_time(), time.perf_counter()
                await axon.send_message(name, prompt)
                latency[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
            spans += len(exporter.get_finished_spans())
            exporter.clear()
            progress.advance(task)
        worker = {
            key: (worker_cpu(axon, name) - cpu_before[key]) / requests
            for key, axon in runtimes.items()
        }
    finally:
        for axon in runtimes.values():
            await axon.stop()
        provider.shutdown()
    ms = 1000.0
    return {
        "agent": name,
        "spans_per_request": spans / requests,
        "runtimes": {
            key: {
                "p50_ms": statistics.median(latency[key]) * ms,
                "p99_ms": pct(latency[key], 0.99) * ms,
                "orchestrator_cpu_ms": statistics.mean(cpu[key]) * ms,
                "worker_cpu_ms": worker[key] * ms,
            }
            for key in runtimes
        },
    }


def trace_bytes() -> int:
    """What the ``trace`` field adds to a ``run`` frame (a W3C traceparent)."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    plain = Run(id=1, prompt="hello", conversation_id="c-1", timeout=60.0)
    traced = Run(
        id=1,
        prompt="hello",
        conversation_id="c-1",
        timeout=60.0,
        trace={"traceparent": traceparent},
    )
    return len(encode_frame(traced)) - len(encode_frame(plain))


async def bench(requests: int, progress: Progress) -> list[dict[str, Any]]:
    return [await bench_agent(name, requests, progress) for name in AGENTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    console = Console()
    with Progress(console=console, transient=True) as progress:
        results = asyncio.run(bench(args.requests, progress))

    table = Table(title="Tracing off vs on (sequential requests, same run, same machine)")
    for column in (
        "agent",
        "runtime",
        "p50",
        "p99",
        "orchestrator CPU/req",
        "worker CPU/req",
        "p50 vs off",
    ):
        table.add_column(column)
    for result in results:
        figures = result["runtimes"]
        base = figures["off"]["p50_ms"]
        for key, f in figures.items():
            table.add_row(
                f"{result['agent']} ({result['spans_per_request']:.0f} spans)"
                if key == "on"
                else result["agent"],
                key,
                f"{f['p50_ms']:.2f} ms",
                f"{f['p99_ms']:.2f} ms",
                f"{f['orchestrator_cpu_ms']:.3f} ms",
                f"{f['worker_cpu_ms']:.3f} ms",
                "-" if key == "off" else f"{f['p50_ms'] - base:+.2f} ms",
            )
    console.print(table)
    console.print(f"run frame: +{trace_bytes()} bytes with a traceparent, +0 with tracing off")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "results": results,
                    "run_frame_trace_bytes": trace_bytes(),
                    "requests": args.requests,
                    "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
