"""Axon's performance figures, each side by side with its baseline in the same run (issue 7).

    python benchmarks/bench_performance.py [--quick] [--no-ray] [--json FILE] [--plot-dir DIR]

Figures (the agent is the misbehaving example's echo path, a FunctionModel answer: the cheapest
run pydantic-ai can do, so what is measured is the runtime's own cost):

1. restart: worker SIGKILL -> replacement ready, forked from the zygote vs a cold start
   (``runtime.fork_server = false``) vs a Ray actor restart;
2. crash: worker SIGKILL -> the caller holding a run gets ``AgentCrashed``;
3. throughput: 2 workers, 64 concurrent, vs the ceiling (2 processes each looping over
   ``agent.run`` with 32 in flight, no orchestration) and vs the same agent on 2 Ray actors;
4. added latency: sequential requests through the Python API and over HTTP vs ``agent.run``;
5. scale: 100 agents of 1 worker each, start to all ready, vs the CPU of cold starts;
6. memory: a worker's USS after 50 runs, forked vs cold;
7. 1,000 concurrent runs of a 5 s agent: all succeed, p99, orchestrator RSS.

Ray is optional (``pip install -e ".[bench]"``); without it the Ray rows say so.
``axon bench --plot`` PNGs of the 1,000-run load go to ``--plot-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvloop
from rich.console import Console
from rich.table import Table

from axon import AgentCrashed, AgentSpec, Axon, RuntimeSpec, SupervisorSpec
from axon.testing import capture_events, wait_until, wait_until_serving

AGENT = "axon.examples.misbehaving:misbehaving_agent"
MS = 1000.0
console = Console(stderr=True)


@dataclass
class Row:
    figure: str
    target: str
    baseline: str
    axon: str
    result: str
    met: bool | None
    data: dict[str, Any] = field(default_factory=dict)


def p50(values: list[float]) -> float:
    return statistics.median(values)


def fast_restarts(**kw: Any) -> SupervisorSpec:
    """The defaults, but every kill is a first restart (a 0.1 s intensity window) and the
    agent never goes FAILED in a long series of kills."""
    return SupervisorSpec(max_restarts=10_000, max_seconds=0.1, **kw)


# -- 1, 2: restarts and crashes ------------------------------------------------------------------


async def restart_times(kills: int, *, fork: bool) -> dict[str, list[float]]:
    """SIGKILL the worker ``kills`` times (one run in flight each time): to ``AgentCrashed``,
    and to the replacement's ``worker.ready``."""
    spec = AgentSpec(id="r", agent=AGENT)
    runtime = RuntimeSpec(fork_server=fork)
    to_crash: list[float] = []
    to_ready: list[float] = []
    async with Axon([spec], supervisor=fast_restarts(), runtime=runtime) as axon:
        await axon.send_message("r", "warm up")
        with capture_events() as events:
            for _ in range(kills):
                await asyncio.sleep(0.15)  # out of the intensity window: a first restart
                run = asyncio.ensure_future(axon.send_message("r", "sleep:30"))
                status = await wait_until(axon, "r", lambda s: s.in_flight == 1, timeout=10)
                pid = status.workers[0].pid
                assert pid is not None
                mark = events.mark()
                killed = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(AgentCrashed):
                    await run
                to_crash.append(time.monotonic() - killed)
                ready = await events.wait_for("worker.ready", since=mark)
                assert ready.fields["start"] == ("fork" if fork else "cold")
                to_ready.append(ready.monotonic - killed)
                await wait_until_serving(axon, "r", replaced=[pid])
    return {"to_crash": to_crash, "to_ready": to_ready}


# -- 3: throughput ---------------------------------------------------------------------------------


def _ceiling_process(seconds: float, concurrency: int, start_at: float) -> int:
    """One core's ceiling: ``agent.run`` looped with ``concurrency`` in flight for ``seconds``."""
    from axon.examples.misbehaving import misbehaving_agent

    async def loop() -> int:
        for _ in range(20):
            await misbehaving_agent.run("warm up")
        await asyncio.sleep(max(0.0, start_at - time.time()))
        done = 0
        deadline = time.monotonic() + seconds

        async def user() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await misbehaving_agent.run(f"hello {done}")
                done += 1

        await asyncio.gather(*(user() for _ in range(concurrency)))
        return done

    return asyncio.run(loop())


def ceiling_throughput(seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # both processes imported and warm by then
    with ctx.Pool(2) as pool:
        counts = pool.starmap(_ceiling_process, [(seconds, 32, start_at)] * 2)
    return sum(counts) / seconds


async def closed_loop(
    send: Callable[[int], Awaitable[object]], seconds: float, users: int
) -> float:
    done = 0
    deadline = time.monotonic() + seconds

    async def user() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await send(done)
            done += 1

    await asyncio.gather(*(user() for _ in range(users)))
    return done / seconds


async def axon_throughput(seconds: float) -> float:
    spec = AgentSpec(id="t", agent=AGENT, workers=2, max_concurrency=64)
    async with Axon([spec]) as axon:
        for i in range(50):
            await axon.send_message("t", f"warm {i}")
        return await closed_loop(lambda i: axon.send_message("t", f"hello {i}"), seconds, 64)


# -- 4: added latency ---------------------------------------------------------------------------


async def sequential(send: Callable[[int], Awaitable[object]], requests: int) -> list[float]:
    times = []
    for i in range(requests):
        began = time.perf_counter()
        await send(i)
        times.append(time.perf_counter() - began)
    return times


async def raw_http_latency(url: str, requests: int) -> list[float]:
    """Sequential POSTs on one keep-alive connection, written and parsed by hand: the server's
    latency without an HTTP client library's own cost (as curl, wrk or k6 would see it)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    times = []
    try:
        for i in range(requests):
            body = json.dumps({"prompt": f"hello {i}"}).encode()
            head = (
                "POST /v1/agents/l/messages HTTP/1.1\r\nHost: bench\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            began = time.perf_counter()
            writer.write(head.encode() + body)
            answer = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in answer.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            times.append(time.perf_counter() - began)
            assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        writer.close()
    return times


async def latencies(requests: int, rounds: int, tmp: Path) -> dict[str, list[float]]:
    """Sequential request p50s, interleaved: in each of ``rounds`` rounds, ``requests`` of
    ``agent.run`` in process, then through the Python API, then over HTTP with a minimal client
    and with httpx; one p50 per way per round (the machine's drift hits every way alike)."""
    from axon.examples.misbehaving import misbehaving_agent
    from axon.testing.server import AxonServer

    config = tmp / "latency.toml"
    config.write_text(f'[[agents]]\nid = "l"\nagent = "{AGENT}"\n')
    server = await AxonServer.start(config, cwd=tmp)
    result: dict[str, list[float]] = {"in_process": [], "api": [], "http": [], "httpx": []}
    try:
        async with (
            Axon([AgentSpec(id="l", agent=AGENT)]) as axon,
            httpx.AsyncClient(base_url=server.url, timeout=30) as client,
        ):

            async def via_httpx(i: int) -> None:
                response = await client.post("/v1/agents/l/messages", json={"prompt": f"h{i}"})
                response.raise_for_status()

            ways: dict[str, Callable[[int], Awaitable[object]]] = {
                "in_process": lambda i: misbehaving_agent.run(f"hello {i}"),
                "api": lambda i: axon.send_message("l", f"hello {i}"),
                "httpx": via_httpx,
            }
            for _ in range(rounds + 1):  # the first round warms up and is dropped
                for name, send in ways.items():
                    result[name].append(p50(await sequential(send, requests)))
                result["http"].append(p50(await raw_http_latency(server.url, requests)))
    finally:
        await server.stop()
    return {name: values[1:] for name, values in result.items()}


# -- 5: scale -------------------------------------------------------------------------------------


async def start_agents(count: int, *, fork: bool) -> dict[str, float]:
    """Start ``count`` one-worker agents: wall seconds to all ready, and the CPU seconds their
    processes (workers and zygotes) spent getting there."""
    specs = [AgentSpec(id=f"a{i}", agent=AGENT) for i in range(count)]
    began = time.perf_counter()
    async with Axon(specs, runtime=RuntimeSpec(fork_server=fork)) as axon:
        wall = time.perf_counter() - began
        cpu = 0.0
        for pid in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = pid.cpu_times()
                cpu += times.user + times.system
        ready = sum(a.state == "running" for a in axon.agents())
    return {"wall_s": wall, "cpu_s": cpu, "ready": float(ready)}


# -- 6: memory ------------------------------------------------------------------------------------


async def worker_uss(runs: int, *, fork: bool) -> float:
    async with Axon(
        [AgentSpec(id="m", agent=AGENT)], runtime=RuntimeSpec(fork_server=fork)
    ) as axon:
        for i in range(runs):
            await axon.send_message("m", f"hello {i}")
        pid = axon.agent("m").workers[0].pid
        assert pid is not None
        return float(psutil.Process(pid).memory_full_info().uss)


# -- 7: 1,000 concurrent slow runs -----------------------------------------------------------


async def many_slow_runs(count: int, seconds: float, plot_dir: Path | None) -> dict[str, Any]:
    from axon.loadtest import InProcessTarget, Plan, run_load, summarize

    spec = AgentSpec(id="slow", agent=AGENT, workers=2, max_concurrency=count, queue_size=count)
    async with Axon([spec]) as axon:
        plan = Plan(
            agents=["slow"],
            concurrency=count,
            requests=count,
            turns=1,
            prompt=f"sleep:{seconds:g}",
            tag="",
            timeout=seconds * 3,
        )
        report = await run_load(InProcessTarget(axon), plan)
        rss = psutil.Process().memory_info().rss
    summary = summarize(report)
    if plot_dir is not None:
        from axon.loadtest.plot import write_plot

        os.makedirs(plot_dir, exist_ok=True)
        write_plot(
            report, plot_dir / "many-slow-runs.png", title=f"{count} concurrent {seconds:g} s runs"
        )
    return {
        "ok": summary.ok,
        "requests": summary.requests,
        "p50_s": summary.latency_s.p50,
        "p99_s": summary.latency_s.p99,
        "orchestrator_rss_mib": rss / 2**20,
    }


def _slow_runs_process(count: int, prompt: str, start_at: float) -> list[float]:
    """One core's floor: ``count`` concurrent ``agent.run(prompt)`` started at once, on uvloop
    like a worker; their latencies."""
    from axon.examples.misbehaving import misbehaving_agent

    async def runs() -> list[float]:
        for _ in range(20):
            await misbehaving_agent.run("warm up")
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()

        async def one() -> float:
            await misbehaving_agent.run(prompt)
            return time.perf_counter() - started

        return list(await asyncio.gather(*(one() for _ in range(count))))

    return uvloop.run(runs())  # the loop Axon's workers run on


def slow_runs_floor(count: int, seconds: float) -> dict[str, float]:
    """The same runs with no orchestration: two processes (one per core), ``count / 2`` each."""
    from axon.loadtest import percentiles

    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # both processes imported and warm by then
    half = count // 2
    with ctx.Pool(2) as pool:
        parts = pool.starmap(_slow_runs_process, [(half, f"sleep:{seconds:g}", start_at)] * 2)
    spread = percentiles([v for part in parts for v in part])
    return {"p50_s": spread.p50, "p99_s": spread.p99}


# -- Ray ------------------------------------------------------------------------------------------


def ray_figures(seconds: float, kills: int) -> dict[str, Any] | None:
    try:
        import ray
    except ImportError:
        return None
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:

        @ray.remote(max_restarts=-1, max_task_retries=0)
        class AgentActor:
            def __init__(self) -> None:
                from axon.examples.misbehaving import misbehaving_agent

                self.agent = misbehaving_agent

            async def run(self, prompt: str) -> Any:
                return (await self.agent.run(prompt)).output

            def pid(self) -> int:
                return os.getpid()

        actors = [AgentActor.remote() for _ in range(2)]  # type: ignore[attr-defined]
        ray.get([a.pid.remote() for a in actors])

        async def throughput() -> float:
            for i in range(50):
                await actors[i % 2].run.remote(f"warm {i}")
            return await closed_loop(lambda i: actors[i % 2].run.remote(f"hello {i}"), seconds, 64)

        rps = asyncio.run(throughput())
        restarts = []
        for _ in range(kills):
            pid = ray.get(actors[0].pid.remote())
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while True:
                try:
                    new = ray.get(actors[0].pid.remote(), timeout=30)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                    time.sleep(0.005)
                    continue
                if new != pid:
                    break
            restarts.append(time.monotonic() - killed)
        return {"throughput_rps": rps, "restart_s": restarts}
    finally:
        ray.shutdown()


# -- the suite ------------------------------------------------------------------------------------


def run_suite(args: argparse.Namespace) -> list[Row]:
    quick = args.quick
    kills = 5 if quick else 20
    seconds = 5.0 if quick else 15.0
    requests = 200 if quick else 1000
    rows: list[Row] = []

    def step(name: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')} {name}[/dim]")

    step("restarts (fork, cold)")
    forked = asyncio.run(restart_times(kills, fork=True))
    cold = asyncio.run(restart_times(max(3, kills // 4), fork=False))
    step("Ray")
    ray = None if args.no_ray else ray_figures(seconds, max(3, kills // 4))
    ready_fork = p50(forked["to_ready"]) * MS
    ready_cold = p50(cold["to_ready"]) * MS
    ray_restart = p50(ray["restart_s"]) * MS if ray else None
    rows.append(
        Row(
            "SIGKILL -> replacement ready, p50",
            "<= 30 ms; >= 50x faster than Ray",
            f"cold {ready_cold:.0f} ms"
            + (f"; Ray {ray_restart:.0f} ms" if ray_restart else "; Ray not installed"),
            f"{ready_fork:.1f} ms (forked)",
            f"{ready_cold / ready_fork:.0f}x vs cold"
            + (f", {ray_restart / ready_fork:.0f}x vs Ray" if ray_restart else ""),
            ready_fork <= 30 and (ray_restart is None or ray_restart / ready_fork >= 50),
            {
                "fork_ms": [t * MS for t in forked["to_ready"]],
                "cold_ms": [t * MS for t in cold["to_ready"]],
                "ray_ms": [t * MS for t in ray["restart_s"]] if ray else None,
            },
        )
    )
    crash = p50(forked["to_crash"]) * MS
    rows.append(
        Row(
            "SIGKILL -> caller gets AgentCrashed, p50",
            "<= 20 ms",
            "-",
            f"{crash:.1f} ms",
            f"max {max(forked['to_crash']) * MS:.1f} ms",
            crash <= 20,
            {"ms": [t * MS for t in forked["to_crash"]]},
        )
    )

    step("throughput (ceiling, axon)")
    ceiling = ceiling_throughput(seconds)
    axon_rps = asyncio.run(axon_throughput(seconds))
    ray_rps = ray["throughput_rps"] if ray else None
    rows.append(
        Row(
            "throughput, 2 workers, 64 concurrent",
            ">= 0.8x ceiling; >= 1.5x Ray",
            f"ceiling {ceiling:.0f}/s"
            + (f"; Ray {ray_rps:.0f}/s" if ray_rps else "; Ray not installed"),
            f"{axon_rps:.0f} runs/s",
            f"{axon_rps / ceiling:.2f}x ceiling"
            + (f", {axon_rps / ray_rps:.1f}x Ray" if ray_rps else ""),
            axon_rps / ceiling >= 0.8 and (ray_rps is None or axon_rps / ray_rps >= 1.5),
            {"ceiling_rps": ceiling, "axon_rps": axon_rps, "ray_rps": ray_rps},
        )
    )

    step("sequential latency (in-process, Python API, HTTP)")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        lat = asyncio.run(latencies(requests // 5, 5, Path(tmp)))
    base, api, http, over_httpx = (p50(lat[k]) * MS for k in ("in_process", "api", "http", "httpx"))
    rows.append(
        Row(
            "added latency per sequential request, p50",
            "<= 0.5 ms (API), <= 1.5 ms (HTTP)",
            f"agent.run {base:.2f} ms",
            f"API {api:.2f} ms; HTTP {http:.2f} ms (httpx client: {over_httpx:.2f} ms)",
            f"+{api - base:.2f} ms API, +{http - base:.2f} ms HTTP "
            f"(+{over_httpx - base:.2f} ms with httpx's own cost)",
            api - base <= 0.5 and http - base <= 1.5,
            {name: [v * MS for v in values] for name, values in lat.items()},
        )
    )

    step("100 agents")
    agents = 20 if quick else 100
    scale = asyncio.run(start_agents(agents, fork=True))
    sample = 4
    cold_start = asyncio.run(start_agents(sample, fork=False))
    cold_cpu_all = cold_start["cpu_s"] / sample * agents
    rows.append(
        Row(
            f"{agents} agents x 1 worker: start to all ready",
            "<= 5 s",
            f"cold: {cold_cpu_all:.0f} s of CPU ({cold_start['cpu_s'] / sample:.2f} s x {agents})",
            f"{scale['wall_s']:.2f} s wall, {scale['cpu_s']:.1f} s CPU",
            f"{cold_cpu_all / scale['cpu_s']:.0f}x less CPU",
            scale["wall_s"] <= 5 and scale["ready"] == agents,
            {"fork": scale, "cold_sample": cold_start},
        )
    )

    step("memory")
    uss_fork = asyncio.run(worker_uss(50, fork=True)) / 2**20
    uss_cold = asyncio.run(worker_uss(50, fork=False)) / 2**20
    rows.append(
        Row(
            "worker memory after 50 runs (USS)",
            "<= 15 MiB",
            f"cold {uss_cold:.1f} MiB",
            f"{uss_fork:.1f} MiB (forked)",
            f"{uss_cold / uss_fork:.1f}x less",
            uss_fork <= 15,
            {"fork_mib": uss_fork, "cold_mib": uss_cold},
        )
    )

    step("1,000 concurrent 5 s runs")
    count = 200 if quick else 1000
    many = asyncio.run(many_slow_runs(count, 5.0, args.plot_dir))
    floor = slow_runs_floor(count, 5.0)
    rows.append(
        Row(
            f"{count} concurrent runs of a 5 s agent",
            "all succeed; p99 <= 5.5 s",
            f"in-process floor (2 processes x {count // 2}, no orchestration): "
            f"p50 {floor['p50_s']:.3f} s, p99 {floor['p99_s']:.3f} s",
            f"{many['ok']}/{many['requests']} ok; "
            f"p50 {many['p50_s']:.3f} s, p99 {many['p99_s']:.3f} s",
            f"p99 {many['p99_s'] - floor['p99_s']:+.2f} s over the floor; "
            f"orchestrator RSS {many['orchestrator_rss_mib']:.0f} MiB",
            many["ok"] == many["requests"] and many["p99_s"] <= 5.5,
            {**many, "floor": floor},
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, 20 agents, 200 runs")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--plot-dir", type=Path, help="write axon bench PNGs here")
    args = parser.parse_args()
    rows = run_suite(args)
    table = Table(
        title=f"Axon performance ({os.cpu_count()} cores, Python {sys.version.split()[0]})"
    )
    for column in ("figure", "target", "baseline (same run)", "axon", "ratio", "met"):
        table.add_column(column)
    for row in rows:
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        table.add_row(row.figure, row.target, row.baseline, row.axon, row.result, met)
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2, default=str))


if __name__ == "__main__":
    main()
