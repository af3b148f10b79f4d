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


async def test_store_outages_on_postgres_keep_every_invariant(
    tmp_path: Path, postgres_url: str
) -> None:
    """``--outage-every`` on the demo with a PostgreSQL store: the store goes away (the moment
    a COMMIT reaches it, so that commit's answer is lost) and comes back, among worker kills.
    Requests in an outage fail with ``store_unavailable``; the unconfirmed commits are the
    history invariant's hard case (they may be committed); every invariant must hold."""
    code, out, err = await axon_cli(
        "chaos", "--store", postgres_url, "--duration", "14", "--concurrency", "4",
        "--outage-every", "4", "--kill-every", "3", "--json",
        cwd=tmp_path,
        timeout=180,
    )  # fmt: skip
    assert code == 0, out + err
    report = json.loads(out)
    assert report["passed"] is True
    assert report["faults"]["outage"] >= 2
    assert report["faults"]["kill"] >= 3
    assert report["outcomes"]["store_unavailable"] > 0
    assert report["outcomes"]["ok"] > 50
    assert report["maybe_committed"] >= 1  # a COMMIT applied, its answer lost
    history = next(v for v in report["invariants"] if v["name"] == "history")
    assert "sent but not confirmed" in history["notes"][0]
    outages = [t for t in report["timeline"]["faults"] if t["kind"] == "outage"]
    assert all(t["agent"] == "<store>" and t["recovery_s"] is not None for t in outages)
    assert min(t["recovery_s"] for t in outages[:-1]) >= 2.0  # down for the whole outage


async def test_a_store_outage_needs_a_postgres_store(tmp_path: Path) -> None:
    code, _out, err = await axon_cli(
        "chaos", "--duration", "5", "--outage-every", "1", cwd=tmp_path, timeout=60
    )
    assert code == 2
    assert "store outages need a PostgreSQL store" in err
    assert not os.listdir(tmp_path)


async def test_a_hostile_worker_breaks_no_invariant(tmp_path: Path) -> None:
    """``--hostile-every``: the run's own hostile agent attacks the orchestrator from its worker
    (event bombs, floods, a worker that stops reading, over-long lines, oversize results) while
    the demo's agents serve the load: each attack ends as it must, the demo's agents have no
    error at all, and the orchestrator's memory stays bounded."""
    code, out, err = await axon_cli(
        "chaos", "--duration", "16", "--concurrency", "4", "--hostile-every", "1.2",
        "--seed", "3", "--json",
        cwd=tmp_path,
        timeout=240,
    )  # fmt: skip
    assert code == 0, out + err
    report = json.loads(out)
    assert report["passed"] is True
    hostile = next(v for v in report["invariants"] if v["name"] == "hostile")
    assert hostile["passed"] is True
    assert report["faults"]["hostile"] >= 5
    assert "attacks:" in hostile["notes"][0]
    assert set(report["outcomes"]) == {"ok"}  # the load never touches the hostile agent
    rss = report["orchestrator_rss"]
    assert 0 < rss["start"] <= rss["peak"] < rss["start"] + 512 * 2**20


async def test_hostile_faults_refuse_a_config_with_an_agent_of_their_name(tmp_path: Path) -> None:
    config = tmp_path / "axon.toml"
    config.write_text('[[agents]]\nid = "hostile"\nagent = "axon.examples.weather:weather_agent"\n')
    code, _out, err = await axon_cli(
        "chaos", "--config", str(config), "--duration", "5", "--hostile-every", "1",
        cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    assert code == 2
    assert "hostile" in err
