"""``axon chaos``: a bench load on an in-process runtime, faults on a schedule, then the
invariants (:mod:`axon.chaos.invariants`) and a timeline of faults and recoveries
(:mod:`axon.chaos.timeline`).

The runtime is started from the config with two additions that only chaos uses: every worker's
link to the orchestrator goes through a :class:`~axon.chaos.link_relay.FaultyLinks` relay (for
``cut``), and the targeted agents' workers accept fault signals
(:mod:`axon.worker.faults`, for ``raise`` and ``stall``). Each fault strikes one running worker
of a targeted agent, chosen at random (seeded), never one already struck:

=========  ====================================================  =================
fault      what it does                                          restarts expected
=========  ====================================================  =================
kill       SIGKILL the worker                                     1
hang       SIGSTOP it (its heartbeat stops; it is killed)         1
cut        reset its link to the orchestrator                     1
truncate   let 5 more bytes through its link, then cut it         1
slow       add 0.2 s to every chunk on its link for 3 s           0
raise      its next run raises (SIGUSR1)                          0
stall      its next run stalls until its deadline (SIGUSR2)       0
storm      SIGKILL one agent's worker 6 times, each time it is    1 per kill (until
           back up (a crash loop)                                  the agent FAILs)
hostile    the chaos run's own hostile agent attacks the          1 if the attack must
           orchestrator from its worker (:mod:`axon.chaos.        get it killed, else 0
           hostile`): an event bomb, a worker that stops
           reading, floods, an over-long line, an oversize
           result
outage     the PostgreSQL store goes away for 2 s (every          0
           connection reset, new ones refused), then comes back;
           it goes the moment a COMMIT reaches it (if one does
           within 0.5 s): that commit is applied, never confirmed
=========  ====================================================  =================

A hostile fault strikes only the agent the run adds for it (:data:`~axon.chaos.hostile.
HOSTILE_AGENT`, outside the load), never the config's agents, and adds the ``hostile`` verdict:
each attack ended as it must, the agents no other fault struck had no error at all, and the
orchestrator's memory stayed bounded (its peak RSS is sampled every 0.1 s and reported).

A store outage needs a ``postgresql://`` store: the runtime reaches it through a
:class:`~axon.chaos.tcp_relay.TcpRelay` (the server itself is never touched, so other users of
it are not disturbed). It strikes every agent, so its ``store_unavailable`` errors do not count
against isolation; its recovery is from the cut until the store answers the runtime again.

Everything is bounded: the load by ``duration`` (and each request by its timeout), the faults
stop with the load, and the run then waits at most ``settle`` seconds for the agents to serve
again before it checks.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from axon.chaos.hostile import HOSTILE_AGENT, Strike, check_hostile, hostile_agent
from axon.chaos.injector import Injector
from axon.chaos.invariants import (
    ChaosRecord,
    ConversationHistory,
    Fault,
    RequestRecord,
    Verdict,
    check_invariants,
    observe_agent,
)
from axon.chaos.link_relay import FaultyLinks
from axon.chaos.spawner import ChaosSpawner
from axon.chaos.tcp_relay import TcpRelay
from axon.chaos.timeline import Recovery, StateChange, recovery_times, serving_intervals
from axon.config import AxonConfig
from axon.loadtest import InProcessTarget, LoadReport, Plan, run_load
from axon.loadtest import RequestRecord as LoadRecord
from axon.pool.groups import pid_alive
from axon.runtime import Axon

__all__ = ["FAULT_KINDS", "ChaosPlan", "ChaosResult", "run_chaos"]

FAULT_KINDS = (
    "kill",
    "hang",
    "cut",
    "truncate",
    "slow",
    "raise",
    "stall",
    "storm",
    "outage",
    "hostile",
)
_RECORDED = ("agent.state", "agent.restart", "agent.failed", "worker.ready", "worker.exit")
_RSS_EVERY = 0.1


@dataclass(frozen=True)
class ChaosPlan:
    """What load to apply, and which faults how often (``None``: never)."""

    duration: float
    concurrency: int = 16
    every: Mapping[str, float] = field(default_factory=dict)
    """Seconds between two faults of each kind (:data:`FAULT_KINDS`)."""
    targets: tuple[str, ...] | None = None
    """Agents faults may strike; None: every agent but the last of the config (it stays
    untouched, to show that the others' faults do not reach it)."""
    turns: int = 3
    timeout: float = 10.0
    """Each request's timeout (its deadline)."""
    seed: int = 0
    settle: float = 60.0

    def __post_init__(self) -> None:
        if not self.duration > 0:
            raise ValueError("duration must be positive")
        unknown = set(self.every) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
        if any(not s > 0 for s in self.every.values()):
            raise ValueError("fault intervals must be positive")


@dataclass
class ChaosResult:
    """What a chaos run did and found."""

    verdicts: list[Verdict]
    recoveries: list[Recovery]
    faults: list[Fault]
    load: LoadReport
    load_plan: Plan
    started: float
    """Monotonic time the load began (timeline times are relative to it)."""
    skipped: int = 0
    """Faults that found no running worker to strike (every one was restarting)."""
    strikes: list[Strike] = field(default_factory=list)
    """What each ``hostile`` fault's attack did."""
    start_rss: int = 0
    """The orchestrator's RSS (bytes) when the load began."""
    peak_rss: int = 0
    """Its highest RSS during the run (sampled every 0.1 s)."""

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)


def targets_of(config: AxonConfig, plan: ChaosPlan) -> tuple[str, ...]:
    """The agents the plan's faults may strike; raises ``ValueError`` for a plan the config
    cannot carry out (an unknown target, a store outage without a PostgreSQL store)."""
    if "outage" in plan.every and not config.runtime.store.startswith(("postgresql:", "postgres:")):
        raise ValueError(
            "store outages need a PostgreSQL store (runtime.store = 'postgresql://...'); "
            f"this config's store is {config.runtime.store!r}"
        )
    ids = [a.id for a in config.agents]
    if "hostile" in plan.every and HOSTILE_AGENT in ids:
        raise ValueError(
            f"hostile faults add an agent {HOSTILE_AGENT!r} of their own; the config has one"
        )
    if plan.targets is not None:
        unknown = [t for t in plan.targets if t not in ids]
        if unknown:
            raise ValueError(f"no agent {unknown[0]!r} in the config")
        return plan.targets
    return tuple(ids[:-1]) if len(ids) > 1 else tuple(ids)


async def run_chaos(
    config: AxonConfig,
    plan: ChaosPlan,
    *,
    on_result: Callable[[LoadRecord], None] | None = None,
    on_fault: Callable[[Fault], None] | None = None,
) -> ChaosResult:
    """Run ``plan`` against a runtime started from ``config``; see the module docstring."""
    targets = targets_of(config, plan)
    load_agents = [a.id for a in config.agents]
    if "hostile" in plan.every:
        config = config.model_copy(update={"agents": (*config.agents, hostile_agent())})
    links = FaultyLinks()
    spawner = ChaosSpawner(
        links,
        fault_signals=targets if {"raise", "stall"} & set(plan.every) else (),
        fork_server=config.runtime.fork_server,
    )
    store_relay: TcpRelay | None = None
    if "outage" in plan.every:
        store_relay = await TcpRelay.in_front_of(config.runtime.store).start()
        runtime = config.runtime.model_copy(
            update={"store": store_relay.rewrite(config.runtime.store)}
        )
        config = config.model_copy(update={"runtime": runtime})
    recorded: list[tuple[float, str, dict[str, Any]]] = []
    try:
        async with Axon(config=config, spawner=spawner) as axon:

            def record(event: str, level: int, fields: Mapping[str, Any]) -> None:
                if event in _RECORDED:
                    recorded.append((time.monotonic(), event, dict(fields)))

            axon.events.subscribe(record)

            def exit_cause(pid: int) -> str | None:
                return next(
                    (
                        str(f["cause"])
                        for _, e, f in recorded
                        if e == "worker.exit" and f.get("pid") == pid
                    ),
                    None,
                )

            before = {a.id: a for a in axon.agents()}
            injector = Injector(
                axon, links, store_relay, targets, random.Random(plan.seed), on_fault, exit_cause
            )
            memory = _PeakRss()
            sampling = asyncio.ensure_future(memory.sample())
            started = time.monotonic()
            load_plan = Plan(
                agents=load_agents,
                concurrency=plan.concurrency,
                duration=plan.duration,
                turns=plan.turns,
                timeout=plan.timeout,
            )
            faulting = [
                asyncio.ensure_future(injector.every(kind, seconds))
                for kind, seconds in plan.every.items()
            ]
            try:
                report = await run_load(InProcessTarget(axon), load_plan, on_result)
            finally:
                for task in faulting:
                    task.cancel()
                await asyncio.gather(*faulting, return_exceptions=True)
                injector.resume_all()
                sampling.cancel()
            await _settle(axon, injector, plan.settle)
            after = {a.id: a for a in axon.agents()}
            histories = [
                ConversationHistory.from_json(cid, await axon.export_conversation(cid))
                for cid in sorted({r.conversation_id for r in report.records})
            ]
    finally:
        links.close()
        if store_relay is not None:
            await store_relay.close()
    seen = {f["pid"] for _, e, f in recorded if e == "worker.ready" and f.get("pid")}
    events = [(e, f) for _, e, f in recorded]
    observations = tuple(
        observe_agent(before[agent], after[agent], events) for agent in before if agent in after
    )
    run = ChaosRecord(
        requests=tuple(_request(r) for r in report.records),
        histories=tuple(histories),
        faults=tuple(injector.faults),
        agents=observations,
        leftover_pids=tuple(sorted(pid for pid in seen if pid_alive(pid))),
        targeted=frozenset(targets),
    )
    changes = [
        StateChange(f["agent"], at, f["state"]) for at, e, f in recorded if e == "agent.state"
    ] + injector.store_changes
    serving = serving_intervals(changes, start=started)
    verdicts = check_invariants(run)
    if "hostile" in plan.every:
        verdicts.append(
            check_hostile(
                injector.strikes,
                run.requests,
                injector.faults,
                start_rss=memory.start,
                peak_rss=memory.peak,
            )
        )
    return ChaosResult(
        verdicts=verdicts,
        recoveries=recovery_times(injector.faults, serving),
        faults=injector.faults,
        load=report,
        load_plan=load_plan,
        started=started,
        skipped=injector.skipped,
        strikes=injector.strikes,
        start_rss=memory.start,
        peak_rss=memory.peak,
    )


class _PeakRss:
    """The orchestrator's resident memory: at the start, and its peak while :meth:`sample`
    runs."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.start = self._process.memory_info().rss
        self.peak = self.start

    async def sample(self) -> None:
        while True:
            self.peak = max(self.peak, self._process.memory_info().rss)
            await asyncio.sleep(_RSS_EVERY)


async def _settle(axon: Axon, injector: Injector, timeout: float) -> None:
    """Wait until every agent is settled (RUNNING, FAILED or STOPPED) and the store answers,
    at most ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            await injector.store_back()
            for agent in axon.agents():
                await axon.wait_serving(agent.id)
    except TimeoutError:
        pass  # the invariants will say what did not recover


def _request(record: LoadRecord) -> RequestRecord:
    return RequestRecord(
        agent=record.agent,
        conversation=record.conversation_id,
        turn=record.turn,
        prompt=record.prompt,
        started=record.started,
        deadline_s=record.deadline - record.started,
        ended=record.ended,
        outcome=record.outcome,
        output=record.output,
        maybe_committed=record.maybe_committed,
    )
