"""Hostile workers (issue 12): what a worker that attacks the orchestrator costs everyone else.

    python benchmarks/bench_hostile.py [--src DIR] [--faults all|none|a,b,c] [--skip-throughput]
        [--compare-src DIR] [--prompt FAULT=PROMPT] [--json FILE]

    # the "before" figures, and a throughput comparison of two trees:
    python benchmarks/bench_hostile.py --src /path/to/unfixed --skip-throughput --json before.json
    python benchmarks/bench_hostile.py --src . --compare-src /path/to/unfixed --faults none

Every figure is measured in child processes that import ``axon`` from ``DIR/src`` (``--src``,
default: this checkout), so one script measures the unfixed and the hardened code: a child's
``PYTHONPATH`` is ``DIR/src``, and the worker processes inherit it; ``axon/examples/hostile.py``
must be in that tree (copy it into an older checkout). The parent never imports ``axon``; the
measuring code (the load, the samplers) is this file's, the same whatever tree is measured.

A. One fresh orchestrator process per fault (the script runs itself as ``--fault NAME``; the
child prints one JSON line). In it, an in-process ``Axon`` on uvloop (what ``axon serve`` runs
on) with two agents: ``hostile`` (``axon.examples.hostile:hostile_agent``, 1 worker, ``timeout``
10 s) and ``healthy`` (the weather example, 1 worker), supervised with
``heartbeat_interval=0.5, heartbeat_timeout=5`` (defaults otherwise). The ``axon`` logger is at
INFO (``axon serve``'s default), and it and ``asyncio``'s go to a handler that only counts
records: a log flood costs the orchestrator its records, not the writing. 8 closed-loop users
send the weather prompt to ``healthy`` (``send_message``, 10 s timeout; a user whose request
failed waits 10 ms) for the whole measurement. After 2 s of baseline the fault strikes: the
hostile prompt is sent and not waited for. The window lasts 10 s (``--window``), and past that
until the fault is over plus 2 s (``--settle``), at most 20 s (``--max-window``): over means the
hostile request ended, the hostile agent answered ``hello`` again (its worker replaced if it
was killed) and every ``healthy`` worker is running. Then the users stop and the requests
started in the window are awaited (each bounded by its timeout); the runtime is stopped (no
worker is left). A child that has not finished after ``--child-timeout`` (60) seconds gets
SIGTERM, then SIGKILL (it and every process it started, by pid), and is reported as "did not
finish".

Faults (``--faults``; ``--prompt FAULT=PROMPT`` strikes a fault with another prompt):

==============  ===========================  =================================================
                                             hostile prompt             what the worker does
==============  ===========================  =================================================
control         ``hello``                    nothing hostile: the same measurement without a
                                             fault, the baseline of every column
event-bomb      ``event-bomb:16000000``      one 16 MB text event frame for a run that does not
                                             exist, its ``data`` a map holding 16 M empty
                                             arrays (~1 GB as Python lists)
deaf            ``deaf:15``                  stops reading; floods invalid frames and pongs
ready-flood     ``flood:ready:30000``        30,000 ``ready`` frames
pong-flood      ``flood:pong:100000``        100,000 unsolicited ``pong`` frames
invalid-flood   ``flood:invalid:100000``     100,000 undecodable frames of a sound length
long-line       ``line:200000:3000``         a 200,000-character stdout line, then 3,000 short
long-line-30k   ``line:200000:30000``        the same, then 30,000 short lines
big-result      ``big:70000000``             a 70 M-character answer (a frame over the limit),
                                             sent with 3 ``hello`` runs to the same worker
==============  ===========================  =================================================

Columns of the fault tables (the JSON has these and more: event counts, pids, exit reasons, the
baseline's lag and request rate, the child's progress lines):

- window s: from the strike to the end of the window;
- peak RSS MiB: the orchestrator process's peak RSS in the window: the kernel's high-water mark
  (VmHWM, reset at the strike through ``/proc/self/clear_refs``; a psutil sampler thread every
  10 ms too, which needs the GIL and misses a peak inside one long C call), and in brackets its
  increase over the RSS just before the strike;
- loop lag p50 / p99 / max ms: the lateness of a 10 ms ``asyncio.sleep`` in the orchestrator's
  loop, samples ending in the window (a stall is one long sample); stalled s: the sum of the
  samples over 100 ms;
- CPU s: the orchestrator process's CPU time (user + system, all its threads) in the window;
- log records: records of the ``axon`` and ``asyncio`` loggers in the window (the load's own
  ``run.finished`` lines, one per request, are in it: compare with ``control``);
- most frequent events: the runtime's events in the window by name, ``run.*`` aside;
- healthy ok / errors: requests to ``healthy`` started in the window, by outcome (``ok`` or the
  error type); healthy p99 ms: the latency of the ok ones;
- healthy workers killed: ``healthy``'s ``worker.exit`` events (not asked for), by cause, with
  the reason; restarted: the replacements' ``worker.ready``;
- hostile worker: the same for ``hostile``;
- hostile run: how the hostile request ended (``ok`` or its error type) and when; big-result
  also counts how the 3 ``hello`` runs sent with it ended;
- hello again / recovered s: from the strike until the hostile agent answered ``hello`` again,
  and until, besides, every ``healthy`` worker was running.

B. Throughput at 64 concurrent, ``--src`` against another tree in the same run
(``--compare-src DIR``; skipped without it or with ``--skip-throughput``): a child per
measurement, an in-process ``Axon`` on uvloop with 2 workers of the agent
(``max_concurrency=32``), 64 closed-loop users of ``send_message`` for ``--seconds`` (10) after
a ``--warmup`` (3 s) of the same load; ``--rounds`` (3) per tree.
Two agents: the weather example (3 model calls and 2 tools a run) and the misbehaving example's
echo path (``hello``, the cheapest run). Columns: runs/s of each round, their median, the
median p50 latency, the orchestrator's CPU per run (``time.process_time``), the CPU per run of
every process (the orchestrator, its workers and zygotes: what bounds throughput on a machine
whose cores they share, and a steadier figure than runs/s on a noisy one), and the ratios
``--src`` / ``--compare-src`` of the medians (the issue's target: the hardened tree keeps at
least 0.97x the throughput). A third row per agent, ``unchecked``, is ``--src`` with the checks of
each result (its messages validated as a pydantic-ai message list, its output and usage as JSON)
turned off in the child (``skip_result_checks``): ``src / unchecked`` is what the checks cost,
measured without the noise of two trees. The three take turns going first, round by round.

Output: the tables on stderr; ``--json FILE`` writes every figure and, for each tree, its git
commit, whether it is dirty (tracked changes) and its untracked files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

HOSTILE = "axon.examples.hostile:hostile_agent"
HEALTHY = "axon.examples.weather:weather_agent"
ECHO = "axon.examples.misbehaving:misbehaving_agent"
WEATHER_PROMPT = "What is the weather in Paris?"
FAULTS: dict[str, str] = {
    "control": "hello",
    "event-bomb": "event-bomb:16000000",
    "deaf": "deaf:15",
    "ready-flood": "flood:ready:30000",
    "pong-flood": "flood:pong:100000",
    "invalid-flood": "flood:invalid:100000",
    "long-line": "line:200000:3000",
    "long-line-30k": "line:200000:30000",
    "big-result": "big:70000000",
}
VARIANTS: dict[str, tuple[str, str]] = {
    "weather": (HEALTHY, WEATHER_PROMPT),
    "echo": (ECHO, "hello"),
}
BYSTANDERS = {"big-result": 3}
"""Faults struck together with that many ``hello`` runs on the same hostile worker."""
HOSTILE_TIMEOUT = 10.0
ERROR_PAUSE = 0.01
"""Seconds a load user waits after a failed request before its next one."""
HEALTHY_TIMEOUT = 10.0
MS = 1000.0
MIB = 2**20
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


_T0 = time.monotonic()


def note(text: str) -> None:
    """A progress line on stderr (a child's stderr is kept in the report if it fails)."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {text}", file=sys.stderr, flush=True)


def error_type(exc: BaseException) -> str:
    return str(getattr(exc, "type", None) or type(exc).__name__)


# -- the child: measuring instruments ------------------------------------------------------------


class LagSampler:
    """Lateness of a 10 ms sleep on the running loop: ``(end, lateness)`` samples."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self.samples.append((now, max(0.0, now - began - self.period)))

    def between(self, start: float, end: float) -> list[float]:
        return [lag for at, lag in self.samples if start < at <= end]


class RssSampler(threading.Thread):
    """This process's RSS every 10 ms, from a thread (it needs the GIL: the high-water mark of
    :func:`peak_rss` catches a peak it misses)."""

    def __init__(self, period: float = 0.01) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()
        self._process = psutil.Process()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), self._process.memory_info().rss))
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def between(self, start: float, end: float) -> list[tuple[float, int]]:
        return [(at, rss) for at, rss in self.samples if start <= at <= end]


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int | None:
    """VmHWM of this process, bytes."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


class LogCounter(logging.Handler):
    """Counts the records it gets, by logger and level; keeps the first few that are not
    structured Axon events (e.g. asyncio's "Task exception was never retrieved")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.others: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.total += 1
        self.counts[f"{record.name}:{record.levelname}"] += 1
        if getattr(record, "event", None) is None and len(self.others) < 5:
            with contextlib.suppress(Exception):
                text = record.getMessage()
                if record.exc_info and record.exc_info[1] is not None:
                    exc = record.exc_info[1]
                    text += f" [{type(exc).__name__}: {str(exc)[:200]}]"
                self.others.append(f"{record.name} {record.levelname}: {text[:400]}")

    def snapshot(self) -> tuple[int, Counter[str]]:
        return self.total, Counter(self.counts)


def count_logs() -> LogCounter:
    """Route the ``axon`` logger (INFO, as ``axon serve``) and ``asyncio``'s into a counter."""
    counter = LogCounter()
    for name, level in (("axon", logging.INFO), ("asyncio", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(counter)
        logger.propagate = False
    return counter


class EventRecorder:
    """An ``EventBus`` sink: counts every event by name, and keeps the facts of the few that say
    what happened to a worker. Its memory stays small under a flood of events (it runs in the
    process whose RSS is measured): a ``worker.ready`` is kept once per pid, and at most
    :attr:`LIMIT` events in all."""

    NAMES = frozenset(
        ("worker.exit", "worker.ready", "worker.kill", "worker.hung", "agent.restart")
    )
    FIELDS = ("agent", "worker", "pid", "cause", "reason", "signal", "exit_code")
    LIMIT = 1000

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.counts: Counter[str] = Counter()
        self._ready: set[object] = set()

    def __call__(self, event: str, level: int, fields: Mapping[str, Any]) -> None:
        self.counts[event] += 1
        if event not in self.NAMES or len(self.events) >= self.LIMIT:
            return
        if event == "worker.ready":
            if fields.get("pid") in self._ready:
                return
            self._ready.add(fields.get("pid"))
        kept = {k: fields[k] for k in self.FIELDS if k in fields}
        if isinstance(kept.get("reason"), str):
            kept["reason"] = kept["reason"][:200]
        self.events.append((time.monotonic(), event, kept))

    def find(self, name: str, agent: str, start: float, end: float) -> list[dict[str, Any]]:
        return [
            {"at_s": at - start, **fields}
            for at, event, fields in self.events
            if event == name and fields.get("agent") == agent and start <= at <= end
        ]


class ClosedLoop:
    """``users`` users, each sending its next request when its previous one ended, until
    :meth:`stop`; every request as ``(start, end, outcome)``."""

    def __init__(self, send: Callable[[int, int], Awaitable[object]], users: int) -> None:
        self._send = send
        self._users = users
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.records: list[tuple[float, float, str]] = []

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._user(u)) for u in range(self._users)]

    async def _user(self, user: int) -> None:
        i = 0
        while not self._stopping:
            began = time.monotonic()
            try:
                await self._send(user, i)
                outcome = "ok"
            except Exception as exc:
                outcome = error_type(exc)
            self.records.append((began, time.monotonic(), outcome))
            i += 1
            if outcome != "ok":
                # An error can come without a suspension (``AgentUnavailable`` is raised before
                # any await): without a pause, failing users would never let the loop run.
                await asyncio.sleep(ERROR_PAUSE)

    async def stop(self) -> None:
        """Stop issuing requests and wait for those in flight (each bounded by its timeout)."""
        self._stopping = True
        await asyncio.gather(*self._tasks)

    def started_between(self, start: float, end: float) -> list[tuple[float, float, str]]:
        return [r for r in self.records if start <= r[0] < end]


def run_in_loop(main: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run ``main`` on uvloop (as ``axon serve``), cancelled on SIGTERM (so the runtime stops
    and no worker is left)."""

    async def guarded() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of Axon
        return asyncio.run(guarded())
    return uvloop.run(guarded())


def check_import(src: Path) -> str:
    import axon

    where = Path(axon.__file__).resolve()
    if not where.is_relative_to((src / "src").resolve()):
        raise SystemExit(f"axon was imported from {where}, not from {src}/src")
    return str(where)


def worker_pids(axon: Any, agent: str) -> list[int | None]:
    return [w.pid for w in axon.agent(agent).workers]


# -- the child: one fault --------------------------------------------------------------------------


async def measure_fault(fault: str, args: argparse.Namespace) -> dict[str, Any]:
    prompt = args.strike or FAULTS[fault]
    logs = count_logs()
    rss = RssSampler()
    rss.start()
    try:
        return await _measure_fault(fault, prompt, args, logs, rss)
    finally:
        rss.stop()


async def _measure_fault(
    fault: str, prompt: str, args: argparse.Namespace, logs: LogCounter, rss: RssSampler
) -> dict[str, Any]:
    from axon import AgentSpec, Axon, SupervisorSpec
    from axon.testing import wait_until_serving

    specs = [
        AgentSpec(
            id="hostile",
            agent=HOSTILE,
            workers=1,
            timeout=HOSTILE_TIMEOUT,
        ),
        AgentSpec(id="healthy", agent=HEALTHY, workers=1),
    ]
    supervision = SupervisorSpec(heartbeat_interval=0.5, heartbeat_timeout=5.0)
    lag = LagSampler()
    events = EventRecorder()
    result: dict[str, Any] = {"fault": fault, "prompt": prompt}
    note(f"{fault}: starting the runtime")
    async with Axon(specs, supervisor=supervision) as axon:
        note("started")
        axon.events.subscribe(events)
        sampler = asyncio.ensure_future(lag.run())
        for i in range(20):
            await axon.send_message("healthy", f"{WEATHER_PROMPT} {i}")
        await axon.send_message("hostile", "hello")

        async def send(user: int, i: int) -> None:
            await axon.send_message(
                "healthy", f"What is the weather in city {user}-{i}?", timeout=HEALTHY_TIMEOUT
            )

        load = ClosedLoop(send, args.users)
        load.start()
        base_start = time.monotonic()
        base_cpu = time.process_time()
        await asyncio.sleep(args.baseline)

        # -- strike
        pids_before = {a: worker_pids(axon, a) for a in ("healthy", "hostile")}
        rss_before = psutil.Process().memory_info().rss
        hwm_reset = reset_peak_rss()
        logs_before, log_counts_before = logs.snapshot()
        events_before = Counter(events.counts)
        strike_at = time.monotonic()
        cpu_at = time.process_time()
        result["baseline_cpu_s_per_s"] = (cpu_at - base_cpu) / (strike_at - base_start)
        strike_end: dict[str, Any] = {}

        async def hostile(text: str, record: dict[str, Any]) -> None:
            try:
                reply = await axon.send_message("hostile", text, timeout=HOSTILE_TIMEOUT)
                out = str(reply.output)
                record.update(outcome="ok", output=out[:60] + ("..." if len(out) > 60 else ""))
            except Exception as exc:
                record.update(outcome=error_type(exc), error=str(exc)[:300])
            record["at_s"] = time.monotonic() - strike_at

        note(f"strike: {prompt}")
        strike = asyncio.ensure_future(hostile(prompt, strike_end))
        bystanders: list[dict[str, Any]] = [{} for _ in range(BYSTANDERS.get(fault, 0))]
        others = [asyncio.ensure_future(hostile("hello", b)) for b in bystanders]
        hello_again: dict[str, Any] = {}

        async def probe() -> None:
            await asyncio.wait({strike, *others})
            tries = 0
            while True:
                tries += 1
                try:
                    await axon.send_message("hostile", "hello", timeout=2.0)
                except Exception as exc:
                    hello_again["last_error"] = error_type(exc)
                    await asyncio.sleep(0.1)
                    continue
                hello_again.update(at_s=time.monotonic() - strike_at, tries=tries)
                break
            await wait_until_serving(axon, "healthy", timeout=args.max_window)
            recovered["at_s"] = time.monotonic() - strike_at

        recovered: dict[str, float] = {}
        prober = asyncio.ensure_future(probe())
        await asyncio.sleep(args.window)
        while (left := args.max_window - (time.monotonic() - strike_at)) > 0:
            if not prober.done():
                await asyncio.wait({prober}, timeout=left)
                continue
            if "at_s" not in recovered:  # the probe failed: no recovery to wait for
                break
            settled_at = recovered["at_s"] + args.settle - (time.monotonic() - strike_at)
            if settled_at <= 0:
                break
            await asyncio.sleep(min(settled_at, left))
        window_end = time.monotonic()
        cpu_end = time.process_time()
        hwm = peak_rss() if hwm_reset else None
        rss_end = psutil.Process().memory_info().rss
        logs_after, log_counts_after = logs.snapshot()
        events_after = Counter(events.counts)
        pids_after = {a: worker_pids(axon, a) for a in ("healthy", "hostile")}
        note(f"window ended after {window_end - strike_at:.1f} s")

        # -- after the window: stop the load, wait for what started in it
        await load.stop()
        for task in (prober, strike, *others):
            task.cancel()
        await asyncio.gather(prober, strike, *others, return_exceptions=True)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        settled = time.monotonic()
        note("load stopped; stopping the runtime")

        window = window_end - strike_at
        lags = lag.between(strike_at, window_end)
        base_lags = lag.between(base_start, strike_at)
        sampled = rss.between(strike_at, window_end)
        sampled_peak = max(sampled, key=lambda s: s[1]) if sampled else (strike_at, rss_before)
        peak = max(hwm or 0, sampled_peak[1])
        in_window = load.started_between(strike_at, window_end)
        in_base = load.started_between(base_start, strike_at)
        latencies = [end - start for start, end, outcome in in_window if outcome == "ok"]
        outcomes = Counter(outcome for _, _, outcome in in_window)

        def workers(agent: str) -> dict[str, Any]:
            exits = [
                e
                for e in events.find("worker.exit", agent, strike_at, settled)
                if e.get("cause") != "requested"
            ]
            # New pids only: a ``ready`` flood makes the old worker "ready" again and again.
            readies = {
                e.get("pid")
                for e in events.find("worker.ready", agent, strike_at, settled)
                if e.get("pid") not in pids_before[agent]
            }
            return {
                "pids_before": pids_before[agent],
                "pids_after": pids_after[agent],
                "exits": exits,
                "killed": len(exits),
                "causes": dict(Counter(str(e.get("cause")) for e in exits)),
                "restarted": len(readies),
                "kills": events.find("worker.kill", agent, strike_at, settled),
                "hung": events.find("worker.hung", agent, strike_at, settled),
            }

        result.update(
            window_s=window,
            rss_before_mib=rss_before / MIB,
            rss_peak_mib=peak / MIB,
            rss_increase_mib=(peak - rss_before) / MIB,
            rss_end_mib=rss_end / MIB,
            rss_peak_at_s=sampled_peak[0] - strike_at if sampled_peak[1] >= peak else None,
            rss_hwm_mib=None if hwm is None else hwm / MIB,
            rss_sampled_peak_mib=sampled_peak[1] / MIB,
            lag_ms={
                "p50": (pct(lags, 0.5) or 0) * MS,
                "p99": (pct(lags, 0.99) or 0) * MS,
                "max": max(lags, default=0) * MS,
                "samples": len(lags),
                "stalled_s": sum(x for x in lags if x > 0.1),
                "baseline_p99": (pct(base_lags, 0.99) or 0) * MS,
                "baseline_max": max(base_lags, default=0) * MS,
            },
            cpu_s=cpu_end - cpu_at,
            log_records=logs_after - logs_before,
            log_records_by_logger=dict(log_counts_after - log_counts_before),
            log_other_examples=logs.others,
            events=dict(events_after - events_before),
            healthy={
                "requests": len(in_window),
                "ok": outcomes.get("ok", 0),
                "errors": {k: v for k, v in outcomes.items() if k != "ok"},
                "p50_ms": (pct(latencies, 0.5) or 0) * MS,
                "p99_ms": (pct(latencies, 0.99) or 0) * MS,
                "max_ms": max(latencies, default=0) * MS,
                "baseline_requests_per_s": len(in_base) / args.baseline,
                "window_ok_per_s": outcomes.get("ok", 0) / window,
                **workers("healthy"),
            },
            hostile={
                "run": strike_end or {"outcome": "pending at the end of the window"},
                "bystanders": bystanders,
                "hello_again": hello_again or None,
                "recovered_at_s": recovered.get("at_s"),
                **workers("hostile"),
            },
        )
    note("runtime stopped")
    return result


# -- the child: throughput -------------------------------------------------------------------------


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and every process it started (the workers,
    the zygotes) so far."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def skip_result_checks() -> None:
    """Make the orchestrator accept every worker result unchecked (the ``unchecked`` rows: what
    the checks of a result's messages, output and usage cost)."""
    for module in list(sys.modules.values()):
        if hasattr(module, "result_problem") and hasattr(module, "WorkerProcess"):
            module.result_problem = lambda result: None  # type: ignore[attr-defined]


async def measure_throughput(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    from axon import AgentSpec, Axon

    if args.unchecked:
        skip_result_checks()

    agent, prompt = VARIANTS[variant]
    spec = AgentSpec(id="t", agent=agent, workers=2, max_concurrency=32)
    async with Axon([spec]) as axon:

        async def send(user: int, i: int) -> None:
            await axon.send_message("t", prompt)

        warm = ClosedLoop(send, args.users)
        warm.start()
        await asyncio.sleep(args.warmup)
        await warm.stop()
        load = ClosedLoop(send, args.users)
        began = time.monotonic()
        cpu = time.process_time()
        every_cpu = tree_cpu()
        load.start()
        await asyncio.sleep(args.seconds)
        await load.stop()
        cpu = time.process_time() - cpu
        every_cpu = tree_cpu() - every_cpu
        elapsed = time.monotonic() - began
    ok = [end - start for start, end, outcome in load.records if outcome == "ok"]
    return {
        "variant": variant,
        "runs_per_s": len(ok) / elapsed,
        "p50_ms": (pct(ok, 0.5) or 0) * MS,
        "p99_ms": (pct(ok, 0.99) or 0) * MS,
        "ok": len(ok),
        "errors": dict(Counter(o for _, _, o in load.records if o != "ok")),
        "cpu_us_per_run": cpu / max(len(ok), 1) * 1e6,
        "all_cpu_us_per_run": every_cpu / max(len(ok), 1) * 1e6,
        "seconds": elapsed,
    }


def child_main(args: argparse.Namespace) -> None:
    where = check_import(args.src)
    began = time.monotonic()
    if args.fault:
        result = run_in_loop(measure_fault(args.fault, args))
    else:
        result = run_in_loop(measure_throughput(args.throughput_child, args))
    result.update(axon_imported_from=where, child_s=time.monotonic() - began)
    print(json.dumps(result, default=str), flush=True)


# -- the parent --------------------------------------------------------------------------------


def git_info(src: Path) -> dict[str, Any]:
    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(src), *argv], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    untracked = git("ls-files", "--others", "--exclude-standard")
    return {
        "path": str(src),
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "untracked": untracked.splitlines() if untracked else [],
    }


def run_child(src: Path, argv: list[str], timeout: float) -> dict[str, Any]:
    """Run this script as a child on ``src``; its JSON line, or why there is none."""
    # DIR/src for axon (the workers inherit it).
    env = {**os.environ, "PYTHONPATH": str(src / "src")}
    load_before = os.getloadavg()[0]
    command = [sys.executable, str(Path(__file__).resolve()), "--src", str(src), *argv]
    began = time.monotonic()
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = stop_child(child)
        return {
            "finished": False,
            "why": f"did not finish in {timeout:g} s (stopped)",
            "stderr_tail": err[-2000:],
            "elapsed_s": time.monotonic() - began,
        }
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {
            "finished": False,
            "why": f"exit code {child.returncode}" + ("" if lines else ", no result"),
            "stderr_tail": err[-2000:],
            "elapsed_s": time.monotonic() - began,
        }
    result = json.loads(lines[-1])
    result.update(
        finished=True,
        elapsed_s=time.monotonic() - began,
        load_average_1min=[load_before, os.getloadavg()[0]],
    )
    if err.strip():
        result["stderr_tail"] = err[-2000:]
    return result


def stop_child(child: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM (the child stops its runtime), then SIGKILL of it and of every process it
    started (by pid; its workers also die with their parents)."""
    try:
        descendants = psutil.Process(child.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    child.send_signal(signal.SIGTERM)
    try:
        out, err = child.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
    for process in descendants:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return out or "", err or ""


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def describe_exits(block: Mapping[str, Any]) -> str:
    if not block.get("killed"):
        return "none"
    causes = ", ".join(f"{n} {cause}" for cause, n in block["causes"].items())
    reasons = "; ".join(str(e.get("reason")) for e in block["exits"][:2] if e.get("reason"))
    restarted = f", {block['restarted']} restarted"
    return f"{block['killed']} ({causes}{restarted})" + (f": {reasons}" if reasons else "")


def top_events(counts: Mapping[str, int], n: int = 3) -> str:
    ranked = sorted(
        ((count, name) for name, count in counts.items() if not name.startswith("run.")),
        reverse=True,
    )
    return ", ".join(f"{name} {count:,}" for count, name in ranked[:n]) or "-"


def fault_tables(results: Mapping[str, dict[str, Any]]) -> list[Table]:
    orchestrator = Table(title="Hostile workers: the orchestrator in the fault window")
    for column in (
        "fault",
        "window s",
        "peak RSS MiB (+ over pre-fault)",
        "loop lag p50 / p99 / max ms",
        "stalled s",
        "CPU s",
        "log records",
        "most frequent events (run.* aside)",
    ):
        orchestrator.add_column(column)
    outcomes = Table(title="Hostile workers: who paid")
    for column in (
        "fault",
        "healthy ok / errors",
        "healthy p99 ms",
        "healthy workers killed",
        "hostile worker",
        "hostile run",
        "hello again / recovered s",
    ):
        outcomes.add_column(column)
    for name, r in results.items():
        if not r.get("finished"):
            orchestrator.add_row(name, r.get("why", "did not finish"), *["-"] * 6)
            outcomes.add_row(name, "did not finish", *["-"] * 5)
            continue
        lag = r["lag_ms"]
        orchestrator.add_row(
            f"{name}\n{r['prompt']}",
            fmt(r["window_s"], ".1f"),
            f"{r['rss_peak_mib']:.0f} (+{r['rss_increase_mib']:.0f})",
            f"{lag['p50']:.1f} / {lag['p99']:.0f} / {lag['max']:.0f}",
            fmt(lag["stalled_s"], ".1f"),
            fmt(r["cpu_s"], ".1f"),
            f"{r['log_records']:,}",
            top_events(r["events"]),
        )
        healthy, hostile = r["healthy"], r["hostile"]
        errors = ", ".join(f"{n} {k}" for k, n in sorted(healthy["errors"].items())) or "0"
        run = hostile["run"]
        ran = f"{run.get('outcome')}" + (f" at {run['at_s']:.1f} s" if "at_s" in run else "")
        if hostile["bystanders"]:
            by = Counter(b.get("outcome", "pending") for b in hostile["bystanders"])
            ran += "; with it: " + ", ".join(f"{n} {k}" for k, n in by.items())
        again = hostile["hello_again"]
        outcomes.add_row(
            name,
            f"{healthy['ok']} / {errors}",
            fmt(healthy["p99_ms"]),
            describe_exits(healthy),
            describe_exits(hostile),
            ran,
            f"{fmt(again.get('at_s') if again else None, '.1f')} / "
            f"{fmt(hostile['recovered_at_s'], '.1f')}",
        )
    return [orchestrator, outcomes]


def run_faults(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name in args.fault_list:
        prompt = args.prompts.get(name, FAULTS[name])
        console.print(f"[dim]{time.strftime('%H:%M:%S')} fault {name} ({prompt})[/dim]")
        argv = ["--fault", name, "--strike", prompt, "--users", str(args.users)]
        argv += ["--baseline", str(args.baseline)]
        argv += ["--window", str(args.window), "--max-window", str(args.max_window)]
        argv += ["--settle", str(args.settle)]
        results[name] = run_child(args.src, argv, args.child_timeout)
        if not results[name]["finished"]:
            console.print(f"[red]  {name}: {results[name]['why']}[/red]")
    return results


def run_throughput(args: argparse.Namespace) -> dict[str, Any]:
    # ``unchecked``: --src with the result checks off (skip_result_checks), in the same run.
    trees = {"src": args.src, "unchecked": args.src, "compare": args.compare_src}
    figures: dict[str, Any] = {}
    for variant in VARIANTS:
        rounds: dict[str, list[dict[str, Any]]] = {which: [] for which in trees}
        names = list(trees)
        for number in range(args.rounds):
            order = names[number % 3 :] + names[: number % 3]  # each first in turn
            for which in order:
                console.print(
                    f"[dim]{time.strftime('%H:%M:%S')} throughput {variant} round "
                    f"{number + 1} {which} ({trees[which]})[/dim]"
                )
                argv = ["--throughput-child", variant, "--seconds", str(args.seconds)]
                argv += ["--warmup", str(args.warmup), "--users", "64"]
                if which == "unchecked":
                    argv.append("--unchecked")
                rounds[which].append(run_child(trees[which], argv, args.child_timeout))
        medians: dict[str, dict[str, float | None]] = {}
        for which, results in rounds.items():
            done = [r for r in results if r.get("finished")]
            medians[which] = {
                key: statistics.median(r[key] for r in done) if done else None
                for key in (
                    "runs_per_s",
                    "p50_ms",
                    "p99_ms",
                    "cpu_us_per_run",
                    "all_cpu_us_per_run",
                )
            }

        def ratio(
            key: str, a: str, b: str, medians: Mapping[str, Mapping[str, Any]] = medians
        ) -> float | None:
            x, y = medians[a][key], medians[b][key]
            return x / y if x and y else None

        figures[variant] = {
            "rounds": rounds,
            "median": medians,
            "ratio_runs_per_s": ratio("runs_per_s", "src", "compare"),
            "ratio_p50": ratio("p50_ms", "src", "compare"),
            "ratio_cpu_per_run": ratio("cpu_us_per_run", "src", "compare"),
            "checks_ratio_runs_per_s": ratio("runs_per_s", "src", "unchecked"),
            "checks_ratio_p50": ratio("p50_ms", "src", "unchecked"),
            "checks_ratio_cpu_per_run": ratio("cpu_us_per_run", "src", "unchecked"),
            "checks_ratio_all_cpu_per_run": ratio("all_cpu_us_per_run", "src", "unchecked"),
            "ratio_all_cpu_per_run": ratio("all_cpu_us_per_run", "src", "compare"),
        }
    return figures


def throughput_table(figures: Mapping[str, Any], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"64 concurrent, 2 workers: --src {args.src} vs --compare-src {args.compare_src}"
    )
    for column in (
        "agent",
        "tree",
        "runs/s per round",
        "runs/s (median)",
        "p50 ms (median)",
        "CPU µs/run",
        "all CPU µs/run",
        "ratio src / compare",
        "ratio src / unchecked",
    ):
        table.add_column(column)
    for variant, f in figures.items():
        for which in ("src", "unchecked", "compare"):
            per_round = ", ".join(
                f"{r['runs_per_s']:.0f}" if r.get("finished") else "x" for r in f["rounds"][which]
            )
            m = f["median"][which]
            ratios = [
                f"runs/s {fmt(f[pre + 'ratio_runs_per_s'], '.3f')}; "
                f"p50 {fmt(f[pre + 'ratio_p50'], '.3f')}; "
                f"CPU {fmt(f[pre + 'ratio_cpu_per_run'], '.3f')}; "
                f"all CPU {fmt(f[pre + 'ratio_all_cpu_per_run'], '.3f')}"
                if which == "src"
                else ""
                for pre in ("", "checks_")
            ]
            table.add_row(
                variant,
                which,
                per_round,
                fmt(m["runs_per_s"]),
                fmt(m["p50_ms"], ".1f"),
                fmt(m["cpu_us_per_run"]),
                fmt(m["all_cpu_us_per_run"]),
                *ratios,
            )
    return table


def parent_main(args: argparse.Namespace) -> None:
    if args.faults in ("all", ""):
        args.fault_list = list(FAULTS)
    elif args.faults == "none":
        args.fault_list = []
    else:
        args.fault_list = [f.strip() for f in args.faults.split(",") if f.strip()]
        unknown = [f for f in args.fault_list if f not in FAULTS]
        if unknown:
            raise SystemExit(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": os.getloadavg(),
        },
        "src": git_info(args.src),
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("src", "compare_src", "json")
        },
    }
    tables: list[Table] = []
    if args.fault_list:
        faults = run_faults(args)
        report["faults"] = faults
        tables += fault_tables(faults)
    if args.compare_src and not args.skip_throughput:
        report["compare_src"] = git_info(args.compare_src)
        figures = run_throughput(args)
        report["throughput"] = figures
        tables.append(throughput_table(figures, args))
    elif not args.skip_throughput:
        console.print("[dim]no --compare-src: throughput skipped[/dim]")
    report["load_average_after"] = os.getloadavg()
    commit = report["src"]["commit"] or "?"
    dirty = " (dirty)" if report["src"]["dirty"] else ""
    console.print(f"--src {args.src}: {commit[:10]}{dirty}")
    for table in tables:
        console.print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--src", type=Path, default=ROOT, help="the Axon tree to measure (imports DIR/src)"
    )
    parser.add_argument("--compare-src", type=Path, help="throughput: the tree to compare with")
    parser.add_argument(
        "--faults", default="all", help=f"all, none, or some of: {', '.join(FAULTS)}"
    )
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="FAULT=PROMPT",
        help="strike FAULT with this hostile prompt instead (e.g. long-line=line:200000:30000)",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--users", type=int, default=8, help="users of the healthy load (faults)")
    parser.add_argument("--baseline", type=float, default=2.0, help="seconds before the strike")
    parser.add_argument("--window", type=float, default=10.0, help="shortest fault window, s")
    parser.add_argument("--max-window", type=float, default=20.0, help="longest fault window, s")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds the window goes on after recovery"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput: seconds/round")
    parser.add_argument("--warmup", type=float, default=3.0, help="throughput: warm-up seconds")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: rounds per tree")
    parser.add_argument(
        "--child-timeout", type=float, default=60.0, help="seconds a child process may take"
    )
    # The child modes (the script runs itself): one fault, or one throughput measurement.
    parser.add_argument("--fault", choices=list(FAULTS), help=argparse.SUPPRESS)
    parser.add_argument("--throughput-child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--strike", help=argparse.SUPPRESS)
    parser.add_argument("--unchecked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.src = args.src.resolve()
    if args.compare_src is not None:
        args.compare_src = args.compare_src.resolve()
    args.prompts = {}
    for override in args.prompt:
        name, _, prompt = override.partition("=")
        if name not in FAULTS or not prompt:
            parser.error(f"--prompt {override!r}: give FAULT=PROMPT, FAULT one of {list(FAULTS)}")
        args.prompts[name] = prompt
    if args.fault or args.throughput_child:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
