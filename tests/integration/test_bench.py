"""``axon bench`` as a user runs it: a real subprocess loading a real ``axon serve`` (or a
runtime it starts itself from ``--config``), its figures checked against agents of known
latency (the misbehaving example's ``sleep:`` and ``stream:`` prompts)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..conftest import TEST_SERVER_TOML, ServeAxon, descendant_pids, pid_alive

TOKEN = "bench-test-token-0123456789"
REQUIRED = {"requests", "ok", "errors", "throughput_rps", "latency_s", "duration_s", "mode"}


def _command() -> list[str]:
    return [sys.executable, "-m", "axon.cli", "bench"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def report(self) -> dict[str, Any]:
        assert self.code == 0, self.err
        body: dict[str, Any] = json.loads(self.out)
        assert set(body) >= REQUIRED, body
        assert {"p50", "p90", "p99", "max"} <= set(body["latency_s"])
        return body


async def run_bench(
    *args: str, cwd: Path, env: dict[str, str] | None = None, children: set[int] | None = None
) -> Run:
    """Run the command to its end; ``children``: collect the pids of its child processes
    (sampled every 50 ms while it runs)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("AXON_URL", "AXON_API_TOKEN")}
    process = await asyncio.create_subprocess_exec(
        *_command(),
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**environ, "COLUMNS": "200", **(env or {})},
    )
    async with asyncio.timeout(60):
        done = asyncio.ensure_future(process.communicate())
        while children is not None and not done.done():
            children.update(descendant_pids(process.pid))
            await asyncio.wait([done], timeout=0.05)
        out, err = await done
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def _matplotlib_or_skip() -> None:
    try:
        import matplotlib  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("matplotlib is not installed (pip install 'axon-runtime[plot]')")


async def test_known_latency_gives_the_expected_throughput_and_p50(
    serve_axon: ServeAxon, tmp_path: Path
) -> None:
    """The issue's sanity check: 100 ms runs at 10 concurrent -> ~100 req/s, p50 ~100 ms."""
    server = await serve_axon()
    records = tmp_path / "records.jsonl"
    run = await run_bench(
        *("--url", server.url, "--agent", "misbehaving", "--concurrency", "10"),
        *("--duration", "3", "--prompt", "sleep:0.1", "--tag", "", "--json"),
        *("--records", str(records)),
        cwd=tmp_path,
    )
    body = run.report()
    assert body["errors"] == {}
    assert body["ok"] == body["requests"]
    assert (body["mode"], body["concurrency"], body["agents"]) == ("closed", 10, ["misbehaving"])
    assert 60 <= body["throughput_rps"] <= 110, body
    assert 0.095 <= body["latency_s"]["p50"] <= 0.2, body
    assert 2.9 <= body["duration_s"] <= 4.0
    assert "ttft_s" not in body
    # the records are every request, the prompt sent verbatim
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == body["requests"]
    assert [line["index"] for line in lines] == list(range(body["requests"]))
    assert {(line["prompt"], line["outcome"], line["output"]) for line in lines} == {
        ("sleep:0.1", "ok", "slept 0.1")
    }
    assert all(line["started"] < line["ended"] <= line["deadline"] for line in lines)


async def test_streaming_ttft_and_errors_by_type(serve_axon: ServeAxon, tmp_path: Path) -> None:
    server = await serve_axon()
    run = await run_bench(
        *("--url", server.url, "-a", "misbehaving", "-c", "4", "-n", "24", "--stream"),
        *("--prompt", "stream:5:0.05", "--tag", "", "--json"),
        cwd=tmp_path,
    )
    body = run.report()
    assert (body["requests"], body["ok"], body["errors"]) == (24, 24, {})
    assert body["stream"] is True
    assert 0.04 <= body["ttft_s"]["p50"] <= 0.2, body
    assert body["ttft_s"]["count"] == 24
    assert body["inter_token_s"]["count"] == 24 * 4
    assert 0.04 <= body["inter_token_s"]["p50"] <= 0.1, body
    assert 0.25 <= body["latency_s"]["p50"] <= 0.6, body

    crashed = await run_bench(
        *("--url", server.url, "-a", "misbehaving", "-c", "1", "-n", "1"),
        *("--prompt", "crash", "--tag", "", "--json"),
        cwd=tmp_path,
    )
    body = crashed.report()  # errors are figures: exit 0
    assert (body["requests"], body["ok"], body["errors"]) == (1, 0, {"agent_crashed": 1})
    assert body["per_agent"]["misbehaving"]["errors"] == {"agent_crashed": 1}

    # the table (no --json) shows the same things to a person
    table = await run_bench(
        *("--url", server.url, "-a", "python_agent_1", "-a", "python_agent_2"),
        *("-c", "2", "-n", "4", "--turns", "2"),
        cwd=tmp_path,
    )
    assert table.code == 0, table.err
    assert "4 requests, 4 ok, 0 errors (0.0%)" in table.out
    assert "python_agent_1" in table.out
    assert "python_agent_2" in table.out


async def test_config_runs_an_in_process_runtime(tmp_path: Path) -> None:
    config = tmp_path / "axon.toml"
    config.write_text(TEST_SERVER_TOML)
    records = tmp_path / "records.jsonl"
    workers: set[int] = set()
    run = await run_bench(
        *("--config", str(config), "-a", "python_agent_1", "-a", "python_agent_2"),
        *("-c", "4", "-n", "16", "--turns", "2", "--json", "--records", str(records)),
        cwd=tmp_path,
        children=workers,
    )
    body = run.report()
    assert body["target"] == f"config:{config}"
    assert (body["requests"], body["ok"], body["errors"]) == (16, 16, {})
    assert body["per_agent"]["python_agent_1"]["requests"] == 8
    assert body["per_agent"]["python_agent_2"]["requests"] == 8
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    conversations: dict[str, list[dict[str, Any]]] = {}
    for line in sorted(lines, key=lambda line: line["started"]):
        conversations.setdefault(line["conversation_id"], []).append(line)
    assert len(conversations) == 8
    for turns in conversations.values():
        assert [t["turn"] for t in turns] == [0, 1]
        for t in turns:  # the weather agent quotes the exact prompt: the tag reached it
            assert t["prompt"].endswith(f" [u{t['user']} t{t['turn']} r{t['index']}]")
            assert f'(you asked: "{t["prompt"]}")' in t["output"]
    # the runtime it started (4 workers) was stopped: no worker outlived the command
    assert len(workers) >= 4
    assert not {pid for pid in workers if pid_alive(pid)}


async def test_plot_writes_a_png(tmp_path: Path) -> None:
    _matplotlib_or_skip()
    config = tmp_path / "axon.toml"
    config.write_text(TEST_SERVER_TOML)
    plot = tmp_path / "bench.png"
    run = await run_bench(
        *("--config", str(config), "-a", "misbehaving", "-c", "4", "-n", "40"),
        *("--prompt", "sleep:0.01", "--tag", "", "--plot", str(plot)),
        cwd=tmp_path,
    )
    assert run.code == 0, run.err
    assert f"plot written to {plot}" in run.err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 10_000
    # the same, somewhere it cannot be written: the figures still print, then exit 1
    unwritable = await run_bench(
        *("--config", str(config), "-a", "misbehaving", "-c", "1", "-n", "1"),
        *("--plot", str(tmp_path / "missing-dir" / "bench.png")),
        cwd=tmp_path,
    )
    assert unwritable.code == 1
    assert "1 requests, 1 ok" in unwritable.out
    assert "cannot write" in unwritable.err
    assert "Traceback" not in unwritable.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_exit_codes_and_open_loop(serve_axon: ServeAxon, tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{_free_port()}"
    unreachable = await run_bench("--url", nobody, "-a", "x", "-c", "1", "-n", "1", cwd=tmp_path)
    assert unreachable.code == 1
    assert "server_unreachable" in unreachable.err
    assert "Traceback" not in unreachable.err

    usage = await run_bench(
        "--url", nobody, "-a", "x", "-c", "1", "-r", "2", "-n", "1", cwd=tmp_path
    )
    assert usage.code == 2
    assert "exactly one of" in usage.err
    unbounded = await run_bench("--url", nobody, "-a", "x", "-c", "1", cwd=tmp_path)
    assert unbounded.code == 2
    assert "must end by itself" in unbounded.err

    server = await serve_axon(env={"AXON_API_TOKEN": TOKEN})
    load = ("--url", server.url, "-a", "python_agent_1", "-n", "1", "-c", "1")
    no_token = await run_bench(*load, cwd=tmp_path)
    assert no_token.code == 3, no_token.err
    assert "unauthorized" in no_token.err
    wrong = await run_bench(*load, "--token", "wrong-token-0123456789abc", cwd=tmp_path)
    assert wrong.code == 3
    unknown = await run_bench(
        "--url",
        server.url,
        "-a",
        "nope",
        "-c",
        "1",
        "-n",
        "1",
        cwd=tmp_path,
        env={"AXON_API_TOKEN": TOKEN},
    )
    assert unknown.code == 2
    assert "agent_not_found" in unknown.err

    # open loop: 20 arrivals/s for 1 s is 20 requests started on schedule
    opened = await run_bench(
        *("--url", server.url, "-a", "python_agent_1", "--rate", "20", "--duration", "1"),
        *("--token", TOKEN, "--json"),
        cwd=tmp_path,
    )
    body = opened.report()
    assert (body["mode"], body["rate"], body["concurrency"]) == ("open", 20.0, None)
    assert (body["requests"], body["ok"], body["missed"]) == (20, 20, 0)
    assert body["start_lag_s"]["count"] == 20
    assert body["start_lag_s"]["max"] < 0.1
