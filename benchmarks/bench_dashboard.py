"""The live dashboard's load on the server, side by side with the idle server in the same run.

    python benchmarks/bench_dashboard.py [--agents 2,50] [--seconds 20] [--json FILE]

For each agent count, one ``axon serve`` subprocess (the misbehaving example, one worker per
agent, in-memory store, ``--log-level warning``) and the CPU time (user + system, psutil) of that
process alone (the orchestrator: the monitor's sampling, the heartbeats, the HTTP edge; not the
workers) over ``--seconds`` each:

1. idle (nobody polls; the monitor still samples once a second), before and after 2;
2. one dashboard: ``GET /v1/monitor?since=<last_seq>`` once a second on one keep-alive
   connection, as the page does (``httpx``; the page's static files are fetched once per load
   and are not counted);
3. a burst: 20 polls a second, to measure the server CPU of one poll precisely
   (``(burst CPU - idle CPU) / polls``).

The figure is the one-dashboard CPU % next to the idle CPU % (their difference and ratio), plus
the CPU per poll and the size of one answer. Each worker start is a cold start (~1.5 s of CPU),
so the servers start with ``startup_timeout = 3600`` (fifty at once on two cores take longer
than the default minute) and the measurement starts ``--settle`` seconds after the server says
it is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from axon.testing import AxonServer

TOKEN = "bench-dashboard-token-0123456789"
BURST_PER_S = 20


def config(agents: int) -> str:
    head = """\
[runtime]
store = "memory://"
shutdown_grace = 5

[supervisor]
startup_timeout = 3600
"""
    body = "".join(
        f"""
[[agents]]
id = "agent_{n:02d}"
agent = "axon.examples.misbehaving:misbehaving_agent"
"""
        for n in range(agents)
    )
    return head + body


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def measure(
    process: psutil.Process, seconds: float, poll: httpx.AsyncClient | None, per_s: float
) -> dict[str, Any]:
    """CPU % of ``process`` over ``seconds``, polling ``/v1/monitor`` ``per_s`` times a second
    meanwhile (none without ``poll``)."""
    loop = asyncio.get_running_loop()
    since: int | None = None
    polls = 0
    sizes: list[int] = []
    started_cpu = cpu_seconds(process)
    started = loop.time()
    deadline = started + seconds
    tick = started
    while True:
        now = loop.time()
        if now >= deadline:
            break
        if poll is None:
            await asyncio.sleep(deadline - now)
            continue
        params = {} if since is None else {"since": since}
        response = await poll.get("/v1/monitor", params=params)
        response.raise_for_status()
        since = response.json()["last_seq"]
        sizes.append(len(response.content))
        polls += 1
        tick += 1.0 / per_s
        await asyncio.sleep(max(0.0, min(tick, deadline) - loop.time()))
    elapsed = loop.time() - started
    used = cpu_seconds(process) - started_cpu
    return {
        "seconds": round(elapsed, 2),
        "cpu_s": round(used, 4),
        "cpu_percent": round(100 * used / elapsed, 3),
        "polls": polls,
        "answer_bytes": max(sizes) if sizes else None,
    }


async def scenario(agents: int, seconds: float, settle: float, tmp: Path) -> dict[str, Any]:
    path = tmp / f"axon-{agents}.toml"
    path.write_text(config(agents))
    began = time.monotonic()
    server = await AxonServer.start(
        path,
        cwd=tmp,
        args=("--log-level", "warning"),
        env={"AXON_API_TOKEN": TOKEN},
        timeout=900,
    )
    started_s = time.monotonic() - began
    try:
        process = psutil.Process(server.pid)
        await asyncio.sleep(settle)
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
            agents_seen = len((await http.get("/v1/agents")).json()["agents"])
            assert agents_seen == agents
            idle_before = await measure(process, seconds, None, 0)
            one_client = await measure(process, seconds, http, 1.0)
            idle_after = await measure(process, seconds, None, 0)
            burst = await measure(process, seconds, http, BURST_PER_S)
    finally:
        code = await server.stop()
        assert code == 0, server.logs()
    idle = (idle_before["cpu_percent"] + idle_after["cpu_percent"]) / 2
    idle_cpu_per_s = idle / 100
    per_poll_ms = (
        1000 * (burst["cpu_s"] - idle_cpu_per_s * burst["seconds"]) / burst["polls"]
        if burst["polls"]
        else None
    )
    return {
        "agents": agents,
        "startup_s": round(started_s, 1),
        "idle_before": idle_before,
        "one_client": one_client,
        "idle_after": idle_after,
        "burst": burst,
        "idle_cpu_percent": round(idle, 3),
        "one_client_cpu_percent": one_client["cpu_percent"],
        "added_cpu_percent": round(one_client["cpu_percent"] - idle, 3),
        "ratio": round(one_client["cpu_percent"] / idle, 2) if idle else None,
        "cpu_ms_per_poll": None if per_poll_ms is None else round(per_poll_ms, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", default="2,50", help="agent counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start-up")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    console = Console()
    counts = [int(n) for n in args.agents.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="axon-bench-dashboard-") as tmp:
        for agents in counts:
            console.print(f"[dim]{agents} agents: starting, then 4 x {args.seconds:g} s[/dim]")
            results.append(asyncio.run(scenario(agents, args.seconds, args.settle, Path(tmp))))
    table = Table(title="axon serve CPU (the orchestrator process), idle vs one dashboard")
    for column in (
        "agents",
        "idle CPU",
        "1 dashboard (1 poll/s)",
        "added",
        "ratio",
        "CPU per poll",
        "answer size",
    ):
        table.add_column(column)
    for r in results:
        size = r["burst"]["answer_bytes"]
        table.add_row(
            str(r["agents"]),
            f"{r['idle_cpu_percent']:.2f} %",
            f"{r['one_client_cpu_percent']:.2f} %",
            f"{r['added_cpu_percent']:+.2f} pts",
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            "-" if r["cpu_ms_per_poll"] is None else f"{r['cpu_ms_per_poll']:.2f} ms",
            "-" if size is None else f"{size / 1024:.1f} KiB",
        )
    console.print(table)
    for r in results:
        console.print(
            f"[dim]{r['agents']} agents: ready in {r['startup_s']} s; idle "
            f"{r['idle_before']['cpu_percent']:.2f} % / {r['idle_after']['cpu_percent']:.2f} % "
            f"(before / after); burst {r['burst']['polls']} polls at "
            f"{r['burst']['cpu_percent']:.2f} %[/dim]"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
