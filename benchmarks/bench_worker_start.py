"""A cold worker's start (issue 13): what a worker process imports, how long it takes to be
ready, and the memory it holds, in two trees measured in the same run.

    python benchmarks/bench_worker_start.py [--src DIR] [--compare-src DIR] [--rounds N]
        [--json FILE]

Every figure is measured in child processes that import ``axon`` from ``DIR/src`` (``--src``,
default: this checkout; ``--compare-src``: the tree to compare with, e.g. a checkout of the
commit before the change), so one script measures both; the rounds alternate between the
trees, so the machine's noise falls on both alike. The parent never imports ``axon``.

1. import: a fresh ``python -c`` imports ``axon.worker.host`` (the module a cold worker runs)
   and reports the wall time of the import, its peak RSS (``ru_maxrss``), the number of
   modules loaded, and whether the orchestrator's runtime, FastAPI or prometheus-client came
   with it (a worker needs none of them).
2. cold start: a fresh orchestrator process starts one agent
   (``axon.examples.misbehaving:misbehaving_agent``, 1 worker) with ``fork_server = false``, so
   its worker is a cold ``python -m axon.worker``; it reports the time from ``Axon.start()`` to
   the agent serving, then sends one message and reads the worker's RSS and USS (psutil).

The medians of ``--rounds`` (default 7) rounds are printed, and the ratio of ``--src`` to
``--compare-src``; ``--json`` writes them with every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024

IMPORT_PROBE = """
import json, resource, sys, time
t = time.perf_counter()
import axon.worker.host
took = time.perf_counter() - t
print(json.dumps({
    "import_s": took,
    "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "modules": len(sys.modules),
    "runtime_imported": "axon.runtime" in sys.modules,
    "fastapi_imported": "fastapi" in sys.modules,
    "prometheus_imported": "prometheus_client" in sys.modules,
}))
"""

COLD_PROBE = """
import asyncio, json, time
import psutil
from axon import AgentSpec, Axon, RuntimeSpec

async def main():
    spec = AgentSpec(id="w", agent="axon.examples.misbehaving:misbehaving_agent")
    axon = Axon([spec], runtime=RuntimeSpec(fork_server=False))
    t = time.perf_counter()
    await axon.start()
    ready = time.perf_counter() - t
    try:
        await axon.send_message("w", "hello")
        pid = axon.agents()[0].workers[0].pid
        info = psutil.Process(pid).memory_full_info()
        mib = 2**20
        print(json.dumps({"ready_s": ready, "rss_mib": info.rss / mib, "uss_mib": info.uss / mib}))
    finally:
        await axon.stop()

asyncio.run(main())
"""


def probe(tree: Path, code: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise SystemExit(f"probe failed in {tree}:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def git_head(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


def medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in samples[0].items():
        if isinstance(value, bool):
            out[key] = all(s[key] for s in samples) if value else any(s[key] for s in samples)
        else:
            out[key] = statistics.median(s[key] for s in samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=HERE.parent)
    parser.add_argument("--compare-src", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    trees = {"src": args.src.resolve()}
    if args.compare_src is not None:
        trees["compare"] = args.compare_src.resolve()
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {"import": [], "cold": []} for name in trees
    }
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            samples[name]["import"].append(probe(tree, IMPORT_PROBE))
            samples[name]["cold"].append(probe(tree, COLD_PROBE))
        print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"rounds": args.rounds, "trees": {}}
    for name, tree in trees.items():
        result = {
            "path": str(tree),
            "commit": git_head(tree),
            "import": medians(samples[name]["import"]),
            "cold": medians(samples[name]["cold"]),
            "samples": samples[name],
        }
        report["trees"][name] = result
        imp, cold = result["import"], result["cold"]
        print(
            f"{name:8} {result['commit']}: "
            f"import axon.worker.host {imp['import_s'] * 1000:.0f} ms, "
            f"peak RSS {imp['maxrss_mib']:.1f} MiB, {imp['modules']:.0f} modules "
            f"(runtime {imp['runtime_imported']}, fastapi {imp['fastapi_imported']}, "
            f"prometheus {imp['prometheus_imported']}); cold start to serving "
            f"{cold['ready_s'] * 1000:.0f} ms; worker RSS {cold['rss_mib']:.1f} MiB, "
            f"USS {cold['uss_mib']:.1f} MiB"
        )
    if "compare" in trees:
        new, old = report["trees"]["src"], report["trees"]["compare"]
        ratios = {
            "import_s": new["import"]["import_s"] / old["import"]["import_s"],
            "import_maxrss": new["import"]["maxrss_mib"] / old["import"]["maxrss_mib"],
            "cold_ready_s": new["cold"]["ready_s"] / old["cold"]["ready_s"],
            "worker_uss": new["cold"]["uss_mib"] / old["cold"]["uss_mib"],
        }
        report["ratios"] = ratios
        print("src / compare: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
