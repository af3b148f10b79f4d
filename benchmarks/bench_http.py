"""HTTP figures, each side by side with its baseline in the same run.

    python benchmarks/bench_http.py [--requests N] [--streams N] [--json FILE]

1. The HTTP edge's added cost: requests/s and p50/p99 latency of ``POST
   /v1/agents/bench/messages`` on an ``axon serve`` subprocess vs ``axon.send_message`` on an
   in-process ``Axon``, both started from the same config (one agent, 2 workers), at
   concurrency 1 and 64 (``--requests`` at 1, four times as many at 64).
2. Time to the first Server-Sent Event vs time to the final reply, for a slow-streaming run
   (the misbehaving agent's ``stream:20:0.05``: 20 text deltas 50 ms apart), p50 over
   ``--streams`` runs.

The HTTP load comes from two clients, one after the other: a minimal keep-alive HTTP/1.1 client
on asyncio streams (what a load generator such as ``wrk`` does: it costs the client almost no
CPU, so the figure is the server's), and ``httpx.AsyncClient`` (what a Python caller sees; on
a small machine its own CPU cost shows in the figures). Client and server share the machine.

The agent is the misbehaving example's echo path (a FunctionModel answer, no tools), the
cheapest run there is, and the store is in memory, so the figures show the HTTP edge's own
cost over the runtime's (as ``bench_performance.py`` does over pydantic-ai's). The server runs with
``--log-level warning`` (the in-process runtime has no log handler either), so log writing is
not counted as edge cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from axon import Axon
from axon.testing import AxonServer

CONFIG_TOML = """\
[runtime]
store = "memory://"
shutdown_grace = 5

[[agents]]
id = "bench"
agent = "axon.examples.misbehaving:misbehaving_agent"
workers = 2
max_concurrency = 64
"""
PATH = "/v1/agents/bench/messages"
CONCURRENCY = (1, 64)
STREAM_PROMPT = "stream:20:0.05"
WARMUP = 50

Send = Callable[[int], Awaitable[None]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def requests_at(concurrency: int, requests: int) -> int:
    return requests if concurrency == 1 else requests * 4


async def measure(
    send: Send, requests: int, concurrency: int, progress: Progress, label: str
) -> dict[str, Any]:
    """``requests`` calls of ``send`` with at most ``concurrency`` in flight: latencies, rps."""
    for i in range(WARMUP):
        await send(-i - 1)
    task = progress.add_task(f"{label}, concurrency {concurrency}", total=requests)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            t0 = time.perf_counter()
            await send(i)
            latencies.append(time.perf_counter() - t0)
            progress.advance(task)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    elapsed = time.perf_counter() - t0
    progress.remove_task(task)
    return {
        "rps": requests / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "requests": requests,
    }


async def measure_levels(send: Send, requests: int, progress: Progress, label: str) -> dict:
    return {
        c: await measure(send, requests_at(c, requests), c, progress, label) for c in CONCURRENCY
    }


# ------------------------------------------------------------------------------ the clients


class LeanClient:
    """Keep-alive HTTP/1.1 ``POST`` of JSON on a pool of asyncio connections; responses with a
    ``Content-Length`` only (every JSON reply of the API has one)."""

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        assert parsed.host is not None
        assert parsed.port is not None
        self.host, self.port = parsed.host, parsed.port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._all.append(writer)
        payload = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in header_lines
            if line.lower().startswith(b"content-length:")
        )
        content = await reader.readexactly(length)
        self._idle.append((reader, writer))
        return int(status_line.split()[1]), content

    async def aclose(self) -> None:
        for writer in self._all:
            writer.close()
            await writer.wait_closed()


# ------------------------------------------------------------------------------- the benches


async def bench_in_process(config: Path, requests: int, progress: Progress) -> dict[int, Any]:
    async with Axon.from_config(config) as axon:

        async def send(i: int) -> None:
            reply = await axon.send_message("bench", f"hello {i}")
            assert reply.output == f"echo: hello {i}"

        return await measure_levels(send, requests, progress, "Python API")


async def bench_lean(url: str, requests: int, progress: Progress) -> dict[int, Any]:
    client = LeanClient(url)
    try:

        async def send(i: int) -> None:
            status, content = await client.post(PATH, {"prompt": f"hello {i}"})
            assert status == 200, content
            assert json.loads(content)["output"] == f"echo: hello {i}"

        return await measure_levels(send, requests, progress, "HTTP, lean client")
    finally:
        await client.aclose()


async def bench_httpx(
    url: str, requests: int, streams: int, progress: Progress
) -> tuple[dict[int, Any], dict[str, Any]]:
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def send(i: int) -> None:
            response = await client.post(PATH, json={"prompt": f"hello {i}"})
            assert response.status_code == 200, response.text
            assert response.json()["output"] == f"echo: hello {i}"

        figures = await measure_levels(send, requests, progress, "HTTP, httpx")

        first: list[float] = []
        final: list[float] = []
        task = progress.add_task(f"SSE {STREAM_PROMPT}", total=streams)
        for _ in range(streams):
            t0 = time.perf_counter()
            first_at = final_at = None
            deltas = 0
            async with client.stream(
                "POST", PATH, json={"prompt": STREAM_PROMPT, "stream": True}
            ) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if first_at is None:
                        first_at = time.perf_counter() - t0
                    if '"output"' in line:  # the final event: the committed reply
                        final_at = time.perf_counter() - t0
                    else:
                        deltas += 1
            assert first_at is not None
            assert final_at is not None
            assert deltas == 20, deltas
            first.append(first_at)
            final.append(final_at)
            progress.advance(task)
        progress.remove_task(task)
    return figures, {
        "first_event_p50_ms": statistics.median(first) * 1000,
        "first_event_max_ms": max(first) * 1000,
        "final_p50_ms": statistics.median(final) * 1000,
        "runs": streams,
    }


async def bench_server(
    config: Path, requests: int, streams: int, progress: Progress
) -> tuple[dict[int, Any], dict[int, Any], dict[str, Any]]:
    server = await AxonServer.start(config, cwd=config.parent, args=("--log-level", "warning"))
    try:
        lean = await bench_lean(server.url, requests, progress)
        with_httpx, streaming = await bench_httpx(server.url, requests, streams, progress)
        return lean, with_httpx, streaming
    finally:
        code = await server.stop()
        assert code == 0, f"axon serve exited with {code}:\n{server.logs()}"


# ----------------------------------------------------------------------------------- report


def compare(base: dict[str, Any], http: dict[str, Any]) -> dict[str, Any]:
    return {
        "python_api": base,
        "http": http,
        "rps_ratio_http_over_python": http["rps"] / base["rps"],
        "added_p50_ms": http["p50_ms"] - base["p50_ms"],
        "added_p99_ms": http["p99_ms"] - base["p99_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=500, help="requests at concurrency 1 (x4 at 64)"
    )
    parser.add_argument("--streams", type=int, default=20, help="slow streams to time")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    console = Console()

    with tempfile.TemporaryDirectory(prefix="axon-bench-http-") as tmp:
        config = Path(tmp) / "axon.toml"
        config.write_text(CONFIG_TOML)
        with Progress(console=console, transient=True) as progress:
            in_process = asyncio.run(bench_in_process(config, args.requests, progress))
            lean, with_httpx, streaming = asyncio.run(
                bench_server(config, args.requests, args.streams, progress)
            )

    figures: dict[str, Any] = {}
    for c in CONCURRENCY:
        figures[f"concurrency_{c}"] = {
            "lean_client": compare(in_process[c], lean[c]),
            "httpx": compare(in_process[c], with_httpx[c]),
        }
    figures["sse_stream_20x50ms"] = streaming
    figures["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    figures["requests"] = args.requests

    table = Table(title="axon serve (HTTP) vs in-process Axon (Python API): same run, same config")
    for column in ("figure", "Python API", "HTTP, lean client", "HTTP, httpx"):
        table.add_column(column)
    for c in CONCURRENCY:
        lean_f = figures[f"concurrency_{c}"]["lean_client"]
        httpx_f = figures[f"concurrency_{c}"]["httpx"]
        base = lean_f["python_api"]
        table.add_row(
            f"requests/s, {c} concurrent",
            f"{base['rps']:.0f}",
            f"{lean_f['http']['rps']:.0f} ({lean_f['rps_ratio_http_over_python']:.2f}x)",
            f"{httpx_f['http']['rps']:.0f} ({httpx_f['rps_ratio_http_over_python']:.2f}x)",
        )
        for q in ("p50", "p99"):
            table.add_row(
                f"{q} latency, {c} concurrent",
                f"{base[f'{q}_ms']:.2f} ms",
                f"{lean_f['http'][f'{q}_ms']:.2f} ms ({lean_f[f'added_{q}_ms']:+.2f})",
                f"{httpx_f['http'][f'{q}_ms']:.2f} ms ({httpx_f[f'added_{q}_ms']:+.2f})",
            )
    table.add_row(
        f"SSE {STREAM_PROMPT}: first event p50",
        "-",
        "-",
        f"{streaming['first_event_p50_ms']:.1f} ms (max {streaming['first_event_max_ms']:.1f})",
    )
    table.add_row(
        f"SSE {STREAM_PROMPT}: final reply p50",
        "-",
        "-",
        f"{streaming['final_p50_ms']:.1f} ms ({streaming['runs']} runs)",
    )
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
