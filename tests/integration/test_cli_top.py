"""``axon top`` as a user runs it (a real ``python -m axon.cli`` subprocess) against a real
``axon serve`` with an API token, after a few runs: one frame (``--once``, text and ``--json``)
agrees with ``/v1/agents``; the live view follows new events and quits with exit 0 on Ctrl-C;
a refused token exits 3, no server exits 1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx

from axon.cli.remote import exit_text as _exit_text
from axon.cli.remote import last_exit as _last_exit

from ..conftest import TEST_SERVER_TOML, ServeAxon

AXON = [sys.executable, "-m", "axon.cli"]
TOKEN = "top-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _env() -> dict[str, str]:
    unset = ("AXON_URL", "AXON_API_TOKEN")
    return {**{k: v for k, v in os.environ.items() if k not in unset}, "COLUMNS": "200"}


async def axon(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *AXON,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _agent_view(agent: dict[str, Any]) -> dict[str, Any]:
    """What ``top`` and ``/v1/agents`` must agree on."""
    keys = ("index", "pid", "state", "generation", "restarts", "in_flight", "last_exit")
    return {
        "id": agent["id"],
        "state": agent["state"],
        "restarts": agent["restarts"],
        "in_flight": agent["in_flight"],
        "queued": agent["queued"],
        "recent_exits": agent["recent_exits"],
        "workers": [{k: w[k] for k in keys} for w in agent["workers"]],
    }


async def _runs(http: httpx.AsyncClient) -> int:
    """3 successes, 1 failed run and 1 crash (whose worker is restarted); the crashed pid."""
    for prompt in ("one", "two", "three"):
        assert (
            await http.post("/v1/agents/misbehaving/messages", json={"prompt": prompt})
        ).is_success
    failed = await http.post("/v1/agents/misbehaving/messages", json={"prompt": "raise:boom"})
    assert failed.json()["error"]["type"] == "agent_run_failed"
    crashed = await http.post("/v1/agents/misbehaving/messages", json={"prompt": "crash"})
    assert crashed.json()["error"]["type"] == "agent_crashed"
    # Returns once the agent runs again: nothing changes under the commands below.
    assert (await http.post("/v1/agents/misbehaving/restart")).json()["state"] == "running"
    return int(crashed.json()["error"]["pid"])


async def test_top_once_agrees_with_the_agents(serve_axon: ServeAxon) -> None:
    server = await serve_axon(TEST_SERVER_TOML, env={"AXON_API_TOKEN": TOKEN})
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as http:
        crashed_pid = await _runs(http)

        code, out, err = await axon(
            "top", "--once", "--json", "--url", server.url, "--token", TOKEN
        )
        assert code == 0, err
        assert out.count("\n") == 1  # one line of JSON
        frame = json.loads(out)
        agents = (await http.get("/v1/agents")).json()["agents"]
        assert [_agent_view(a) for a in frame["agents"]] == [_agent_view(a) for a in agents]
        assert frame["totals"]["requests"] == 5
        assert frame["totals"]["errors"] == 2
        assert frame["totals"]["outcomes"] == {"ok": 3, "agent_run_failed": 1, "agent_crashed": 1}
        assert frame["totals"]["crashes"] == 1
        crashes = [e for e in frame["events"] if e["event"] == "worker.exit"]
        assert [(e["fields"]["pid"], e["fields"]["cause"]) for e in crashes] == [
            (crashed_pid, "crashed")
        ]

        code, out, err = await axon("top", "--once", "--url", server.url, "--token", TOKEN)
        assert code == 0, err
        agents = (await http.get("/v1/agents")).json()["agents"]
    lines = out.splitlines()
    assert lines[0].startswith(f"axon top  {server.url}  ")
    assert "since start: 5 runs, 2 failed, 1 restarts, 1 crashes" in out
    crash_line = rf"warning\s+worker\.exit\s+agent=misbehaving .*pid={crashed_pid} exit_code=13 "
    assert re.search(crash_line, out), out
    assert re.search(r"^runs/s\s+\d+\.\d\d\s+[▁▂▃▄▅▆▇█ ]+$", out, re.M), out
    for agent in agents:
        row = next(line for line in lines if line.startswith(f"{agent['id']} "))
        state, restarts, in_flight, queued = row.split()[1:5]
        assert (state, int(restarts), int(in_flight), int(queued)) == (
            agent["state"],
            agent["restarts"],
            agent["in_flight"],
            agent["queued"],
        )
        start = lines.index(row)
        for offset, worker in enumerate(agent["workers"], start=1):
            cells = lines[start + offset].split()
            assert cells[:2] == ["worker", str(worker["index"])]
            assert cells[2:6] == [
                worker["state"],
                str(worker["restarts"]),
                str(worker["in_flight"]),
                str(worker["pid"]),
            ]
        # The last exit reads as in ``axon agents``.
        assert row.endswith(_exit_text(_last_exit(agent))), (row, agent)


async def test_top_follows_new_events_until_ctrl_c(serve_axon: ServeAxon) -> None:
    server = await serve_axon(TEST_SERVER_TOML, env={"AXON_API_TOKEN": TOKEN})
    url_args = ("--url", server.url, "--token", TOKEN)
    proc = await asyncio.create_subprocess_exec(
        *AXON,
        "top",
        "--json",
        "--interval",
        "0.2",
        *url_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            first = json.loads(await proc.stdout.readline())
            cursor = first["last_seq"]
            async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as http:
                crashed = await http.post(
                    "/v1/agents/misbehaving/messages", json={"prompt": "crash"}
                )
                pid = crashed.json()["error"]["pid"]
            seen: list[dict[str, Any]] = []
            while not any(e["event"] == "worker.exit" for e in seen):
                line = json.loads(await proc.stdout.readline())
                assert all(e["seq"] > cursor for e in line["events"]), "each event once"
                cursor = max([cursor, *(e["seq"] for e in line["events"])])
                assert line["last_seq"] == cursor
                seen += line["events"]
            crash = next(e for e in seen if e["event"] == "worker.exit")
            assert crash["fields"]["pid"] == pid
            assert crash["fields"]["cause"] == "crashed"
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert b"Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    # The Rich live view quits the same way.
    live = await asyncio.create_subprocess_exec(
        *AXON,
        "top",
        "--interval",
        "0.2",
        *url_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert live.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert (await live.stdout.readline()).decode().startswith("axon top")
        live.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _, err = await live.communicate()
        assert live.returncode == 0, err.decode()
        assert b"Traceback" not in err
    finally:
        if live.returncode is None:
            live.kill()
            await live.wait()


async def test_top_exit_codes(serve_axon: ServeAxon) -> None:
    server = await serve_axon(TEST_SERVER_TOML, env={"AXON_API_TOKEN": TOKEN})
    code, out, err = await axon("top", "--once", "--url", server.url, "--token", "wrong-" + TOKEN)
    assert (code, out) == (3, "")
    assert err.startswith("error: unauthorized: ")
    code, out, err = await axon("top", "--once", "--url", server.url)  # no token at all
    assert code == 3
    assert err.startswith("error: unauthorized: ")

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = await axon("top", "--once", "--url", f"http://127.0.0.1:{port}")
    assert (code, out) == (1, "")
    assert err.startswith("error: server_unreachable: ")
    code, out, err = await axon("top", "--once", "--interval", "0", "--url", server.url)
    assert code == 2  # bad usage
    assert "--interval" in err


def test_top_help() -> None:
    proc = subprocess.run(
        [*AXON, "top", "--help"], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert "axon.cli top [OPTIONS]" in proc.stdout
    for word in (
        "--interval",
        "--once",
        "--url",
        "AXON_URL",
        "--token",
        "AXON_API_TOKEN",
        "--json",
    ):
        assert word in proc.stdout, word
