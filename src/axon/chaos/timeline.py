"""Recovery times: from each fault to its agent serving again.

Pure, like :mod:`axon.chaos.invariants`: faults and the agents' serving intervals (or their
``agent.state`` changes, stamped with monotonic times by whoever listened) in, one
:class:`Recovery` per fault and p50/p99 out.

"Serving" is the agent's supervisor state ``running``: every worker up. With several workers an
agent still answers while one restarts, so this measures full recovery, the stricter figure.

A fault is charged with the first outage that begins after it and before the agent's next
fault; an agent that did not stop serving in that window was not disrupted (recovery 0 s: the
fault did not interrupt serving, e.g. added latency, or a hang not yet detected when the next
fault came).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from axon.chaos.invariants import Fault
from axon.loadtest.stats import percentiles

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "Interval",
    "Recovery",
    "RecoverySummary",
    "StateChange",
    "recovery_times",
    "serving_intervals",
    "summarize_recoveries",
    "timeline_table",
    "timeline_to_dict",
]

SERVING_STATES = frozenset({"running"})


@dataclass(frozen=True)
class StateChange:
    """An ``agent.state`` event, stamped by the listener with monotonic seconds."""

    agent: str
    at: float
    state: str


@dataclass(frozen=True)
class Interval:
    """The agent served from ``start`` until ``end`` (None: until the run's end)."""

    start: float
    end: float | None = None


@dataclass(frozen=True)
class Recovery:
    """How long one fault's agent took to serve again."""

    fault: Fault
    seconds: float | None
    """Fault to serving again; 0.0 if serving was not interrupted; None if it never came back."""
    disrupted: bool
    """Whether the agent stopped serving because of (after) this fault."""


@dataclass(frozen=True)
class RecoverySummary:
    faults: int
    disrupted: int
    unrecovered: int
    p50_s: float | None
    """Over the faults that disrupted serving and recovered (None if there are none)."""
    p99_s: float | None
    max_s: float | None


def serving_intervals(
    changes: Iterable[StateChange],
    *,
    start: float,
    initially_serving: bool = True,
) -> dict[str, list[Interval]]:
    """Each agent's serving intervals from its state changes (any order), from ``start``.

    Agents are taken to be serving at ``start`` (``initially_serving``), as ``axon chaos``
    starts its clock once every agent runs.
    """
    by_agent: dict[str, list[StateChange]] = defaultdict(list)
    for change in changes:
        by_agent[change.agent].append(change)
    result: dict[str, list[Interval]] = {}
    for agent, agent_changes in by_agent.items():
        intervals: list[Interval] = []
        since: float | None = start if initially_serving else None
        for change in sorted(agent_changes, key=lambda c: c.at):
            serving = change.state in SERVING_STATES
            if serving and since is None:
                since = change.at
            elif not serving and since is not None:
                intervals.append(Interval(since, change.at))
                since = None
        if since is not None:
            intervals.append(Interval(since))
        result[agent] = intervals
    return result


def recovery_times(
    faults: Sequence[Fault], serving: Mapping[str, Sequence[Interval]]
) -> list[Recovery]:
    """One :class:`Recovery` per fault, in the order of ``faults``. An agent missing from
    ``serving`` never served, so its faults never recovered."""
    by_agent: dict[str, list[float]] = defaultdict(list)
    for f in faults:
        by_agent[f.agent].append(f.at)
    recoveries: list[Recovery] = []
    for f in faults:
        intervals = sorted(serving.get(f.agent, ()), key=lambda i: i.start)
        later = [at for at in by_agent[f.agent] if at > f.at]
        next_fault = min(later, default=float("inf"))
        during = next(
            (i for i in intervals if i.start <= f.at and (i.end is None or f.at < i.end)), None
        )
        if during is not None and (during.end is None or during.end >= next_fault):
            recoveries.append(Recovery(f, 0.0, disrupted=False))
            continue
        down_from = f.at if during is None or during.end is None else during.end
        back = next((i.start for i in intervals if i.start >= down_from), None)
        recoveries.append(Recovery(f, None if back is None else back - f.at, disrupted=True))
    return recoveries


def summarize_recoveries(recoveries: Sequence[Recovery]) -> RecoverySummary:
    """Counts, and p50/p99/max over the disrupted faults that recovered."""
    times = percentiles(r.seconds for r in recoveries if r.disrupted and r.seconds is not None)
    return RecoverySummary(
        faults=len(recoveries),
        disrupted=sum(r.disrupted for r in recoveries),
        unrecovered=sum(r.seconds is None for r in recoveries),
        p50_s=times.p50,
        p99_s=times.p99,
        max_s=times.max,
    )


def timeline_to_dict(recoveries: Sequence[Recovery], *, start: float = 0.0) -> dict[str, Any]:
    """JSON-ready: every fault (``at_s`` from ``start``) with its recovery, and the summary."""
    summary = summarize_recoveries(recoveries)
    return {
        "faults": [
            {
                "at_s": round(r.fault.at - start, 6),
                "kind": r.fault.kind,
                "agent": r.fault.agent,
                "pid": r.fault.pid,
                "disrupted": r.disrupted,
                "recovery_s": None if r.seconds is None else round(r.seconds, 6),
            }
            for r in recoveries
        ],
        "recovery_s": {
            "faults": summary.faults,
            "disrupted": summary.disrupted,
            "unrecovered": summary.unrecovered,
            "p50": summary.p50_s,
            "p99": summary.p99_s,
            "max": summary.max_s,
        },
    }


def timeline_table(recoveries: Sequence[Recovery], *, start: float = 0.0) -> Table:
    """A Rich table of faults and recovery times, p50/p99 in its caption."""
    from rich.table import Table

    summary = summarize_recoveries(recoveries)

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} s"

    table = Table(
        title="Faults and recovery",
        caption=(
            f"{summary.faults} faults, {summary.disrupted} interrupted serving, "
            f"{summary.unrecovered} never recovered; recovery p50 {seconds(summary.p50_s)}, "
            f"p99 {seconds(summary.p99_s)}, max {seconds(summary.max_s)}"
        ),
    )
    for column in ("at", "fault", "agent", "pid", "recovery"):
        table.add_column(column, justify="right" if column in ("at", "recovery") else "left")
    for r in recoveries:
        recovery = (
            "never" if r.seconds is None else seconds(r.seconds) if r.disrupted else "not down"
        )
        table.add_row(
            f"{r.fault.at - start:.3f} s",
            r.fault.kind,
            r.fault.agent,
            "-" if r.fault.pid is None else str(r.fault.pid),
            recovery,
        )
    return table
