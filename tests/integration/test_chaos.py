"""``axon chaos`` against the built-in demo's agents, as CI runs it (about a minute): a load with
every kind of fault, and every invariant must hold (exit 0). The invariant checker itself is
proven on crafted violations in tests/unit/test_chaos_invariants.py.

The demo's restart intensity (5 restarts in 10 s) is raised for this run: with it, the agents of
a short run this dense in faults spend much of it ``failed``, and a fault kind may then find no
running worker to strike, which would leave it untested."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

FAULTS = {
    "kill": 2,
    "hang": 11,
    "cut": 5,
    "truncate": 9,
    "slow": 6,
    "raise": 3,
    "stall": 7,
    "storm": 15,
}


async def axon_cli(*args: str, cwd: Path, timeout: float) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "axon.cli",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_minute_of_chaos_on_the_demo_keeps_every_invariant(tmp_path: Path) -> None:
    code, demo, _ = await axon_cli("demo-config", cwd=tmp_path, timeout=60)
    assert code == 0
    config = tmp_path / "axon.toml"
    config.write_text(demo.replace("max_restarts = 5", "max_restarts = 100"))
    every = [arg for kind, s in FAULTS.items() for arg in (f"--{kind}-every", str(s))]
    code, out, err = await axon_cli(
        "chaos", "--config", str(config), "--duration", "40", "--concurrency", "8", *every,
        "--json",
        cwd=tmp_path,
        timeout=240,
    )  # fmt: skip
    assert code == 0, out + err
    report = json.loads(out)
    assert report["passed"] is True
    assert [v["name"] for v in report["invariants"]] == [
        "deadlines",
        "history",
        "isolation",
        "cleanup",
    ]
    assert all(v["passed"] for v in report["invariants"])
    assert set(report["faults"]) == set(FAULTS)  # every kind struck at least once
    assert report["requests"] > 200
    assert report["outcomes"]["ok"] > 100
    assert report["outcomes"].get("agent_crashed", 0) > 0  # the faults did strike runs
    recovered = [t for t in report["timeline"]["faults"] if t.get("recovery_s") is not None]
    assert recovered


async def test_bad_usage_exits_2_before_anything_starts(tmp_path: Path) -> None:
    code, _out, err = await axon_cli(
        "chaos", "--duration", "5", "--target", "nosuch", cwd=tmp_path, timeout=60
    )
    assert code == 2
    assert "nosuch" in err
    assert not os.listdir(tmp_path)  # no store was opened
