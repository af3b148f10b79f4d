"""The ``axon`` command as a user runs it: a real subprocess and real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import pid_alive

AXON = [sys.executable, "-m", "axon.cli"]
READY = "axon is serving"  # printed once the server accepts requests


def _start_serve(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``axon serve ARGS`` on a free loopback port (the demo's default is port 8000)."""
    return subprocess.Popen(
        [*AXON, "serve", *args, "--listen", "127.0.0.1:0"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def _read_until(proc: subprocess.Popen[str], marker: str, limit: float = 60.0) -> str:
    """Lines of output up to the one containing ``marker`` (the process's own progress)."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"{marker!r} never printed; output:\n{''.join(seen)}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_demo_stops_gracefully_on_signal_and_leaves_no_worker(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc = _start_serve(cwd=tmp_path)
    out = _read_until(proc, READY)
    assert re.search(r"axon is serving the built-in demo on http://127\.0\.0\.1:\d+", out), out
    for agent in ("python_agent_1", "python_agent_2", "misbehaving"):
        assert agent in out
    pids = {int(p) for p in re.findall(r"worker=\d+ pid=(\d+) startup_s", out)}
    assert len(pids) == 4  # python_agent_1 has two workers, the others one each
    assert all(pid_alive(pid) for pid in pids)
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopped." in rest
    assert len(re.findall(r"worker\.exit .* exit_code=0", rest)) == 4
    assert not [pid for pid in pids if pid_alive(pid)]
    assert (tmp_path / "axon.db").is_file()  # the demo keeps conversations in SQLite


def test_serve_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    import json

    proc = _start_serve("--log-format", "json", cwd=tmp_path)
    out = _read_until(proc, READY)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    logged = [line for line in (out + rest).splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in logged]  # each line is one whole JSON object
    ready = [e for e in events if e["event"] == "worker.ready"]
    assert len(ready) == 4
    assert {"agent", "worker", "pid", "startup_s", "ts", "level"} <= set(ready[0])
    [listening] = [e for e in events if e["event"] == "http.listening"]
    assert listening["url"].startswith("http://127.0.0.1:")
    assert len([e for e in events if e["event"] == "worker.exit"]) == 4  # logged while stopping


def test_serve_with_an_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "axon.toml"
    config.write_text(
        '[[agents]]\nid = "a"\nagent = "axon.examples.weather:weather_agent"\nwrokers = 2\n'
    )
    proc = subprocess.run([*AXON, "serve", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "agents[0].wrokers" in proc.stderr
    assert "unknown key" in proc.stderr


def test_check_accepts_the_demo_config_it_prints(tmp_path: Path) -> None:
    printed = subprocess.run([*AXON, "demo-config"], capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0
    config = tmp_path / "axon.toml"
    config.write_text(printed.stdout)
    checked = subprocess.run(
        [*AXON, "check", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    assert "python_agent_1" in checked.stdout


def _check(tmp_path: Path, toml: str) -> subprocess.CompletedProcess[str]:
    """``axon check`` on a config file holding ``toml``."""
    config = tmp_path / "axon.toml"
    config.write_text(toml)
    return subprocess.run([*AXON, "check", str(config)], capture_output=True, text=True, timeout=60)


def test_check_rejects_an_agent_that_does_not_import(tmp_path: Path) -> None:
    proc = _check(tmp_path, '[[agents]]\nid = "a"\nagent = "no_such_module:agent"\n')
    assert proc.returncode == 2
    assert "agents[0].agent" in proc.stderr
    assert "no_such_module" in proc.stderr


def test_check_rejects_unknown_store_options(tmp_path: Path) -> None:
    proc = _check(tmp_path, '[runtime]\nstore = "sqlite:///x.db?foo=1"\n')
    assert proc.returncode == 2
    assert "runtime.store" in proc.stderr
