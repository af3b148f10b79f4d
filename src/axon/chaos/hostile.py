"""The ``hostile`` fault of ``axon chaos``: a worker that attacks the orchestrator.

A chaos run with ``--hostile-every S`` adds one agent of its own, :data:`HOSTILE_AGENT`
(:mod:`axon.examples.hostile`, outside the load), and every ``S`` seconds makes its worker carry
out one of :data:`ATTACKS`. Then :func:`check_hostile` (pure: records in, verdict out) checks
that a worker is untrusted input: each attack ended as it must (the worker killed for what must
get it killed, the run failing alone with a typed error or answering for the rest), no other
agent that no other fault struck had a single error, and the orchestrator's memory stayed
within :data:`RSS_BOUND` of where it started (its peak is reported).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from axon.chaos.invariants import OK, Fault, RequestRecord, Verdict
from axon.config import AgentSpec

__all__ = [
    "ATTACKS",
    "HOSTILE_AGENT",
    "KILL_CAUSES",
    "RSS_BOUND",
    "Attack",
    "Strike",
    "check_hostile",
    "hostile_agent",
]

HOSTILE_AGENT = "hostile"
"""The id of the agent a hostile chaos run adds (a config must not use it)."""
RSS_BOUND = 512 * 2**20
"""Bytes the orchestrator's RSS may grow, at its peak, over what it was when the run started."""
KILL_CAUSES = frozenset({"protocol", "hung", "unresponsive"})
"""How a worker that attacks the protocol may be killed."""


@dataclass(frozen=True)
class Attack:
    """One thing the hostile worker does: its prompt to :mod:`axon.examples.hostile`, and how
    it must end: the worker killed (``kills``), or the run ending with ``outcome``."""

    name: str
    prompt: str
    kills: bool
    outcome: str = OK


ATTACKS: tuple[Attack, ...] = (
    Attack("event-bomb", "event-bomb:16000000", kills=False),  # ~1 GB as Python lists
    Attack("stop-reading", "deaf:10", kills=True),
    Attack("ready-flood", "flood:ready:30000", kills=True),
    Attack("pong-flood", "flood:pong:100000", kills=True),
    Attack("long-line", "line:200000:5000", kills=False),
    Attack("oversize-result", "big:17000000", kills=False, outcome="result_too_large"),
)
"""The attacks, chosen at random (seeded) at each strike."""


def hostile_agent() -> AgentSpec:
    """The agent a hostile chaos run adds: one worker that never exhausts its restarts."""
    from axon.config import SupervisorSpec

    return AgentSpec(
        id=HOSTILE_AGENT,
        agent="axon.examples.hostile:hostile_agent",
        timeout=30,
        supervisor=SupervisorSpec(max_restarts=10_000, max_seconds=1.0, backoff_initial=0.01),
    )


@dataclass(frozen=True)
class Strike:
    """What one attack did."""

    attack: str
    pid: int | None
    """The hostile worker it was carried out by."""
    outcome: str
    """How the attack's run ended: ``ok`` or an error type."""
    exit_cause: str | None
    """The cause of that worker's exit during the strike (``protocol``, ``hung``, ...), or None
    if it survived."""


def check_hostile(
    strikes: Sequence[Strike],
    requests: Sequence[RequestRecord],
    faults: Sequence[Fault],
    *,
    start_rss: int,
    peak_rss: int,
    attacks: Collection[Attack] = ATTACKS,
) -> Verdict:
    """The ``hostile`` verdict (see the module docstring)."""
    by_name = {a.name: a for a in attacks}
    offenders: list[str] = []
    for n, strike in enumerate(strikes, 1):
        attack = by_name[strike.attack]
        what = f"strike {n} ({strike.attack}, pid {strike.pid})"
        if attack.kills and strike.exit_cause not in KILL_CAUSES:
            offenders.append(
                f"{what}: the worker was not killed for it "
                f"(exit cause {strike.exit_cause}, run {strike.outcome})"
            )
        elif not attack.kills and strike.exit_cause is not None:
            offenders.append(f"{what}: the worker died ({strike.exit_cause}); it must survive")
        elif not attack.kills and strike.outcome != attack.outcome:
            offenders.append(f"{what}: the run ended {strike.outcome}, not {attack.outcome}")
    struck = {f.agent for f in faults if f.kind != "hostile"}
    errors = Counter(r.agent for r in requests if r.agent not in struck and str(r.outcome) != OK)
    for agent, count in sorted(errors.items()):
        offenders.append(
            f"agent {agent}: {count} error(s), though only the hostile worker was struck"
        )
    growth = peak_rss - start_rss
    if growth > RSS_BOUND:
        offenders.append(
            f"the orchestrator's RSS grew by {growth / 2**20:.0f} MiB at its peak "
            f"(bound {RSS_BOUND / 2**20:.0f} MiB)"
        )
    kinds = Counter(s.attack for s in strikes)
    notes = (
        "attacks: " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"),
        f"orchestrator RSS: {start_rss / 2**20:.0f} MiB at the start, "
        f"{peak_rss / 2**20:.0f} MiB at the peak",
    )
    summary = (
        f"{len(offenders)} problem(s) with {len(strikes)} attacks by a hostile worker"
        if offenders
        else f"{len(strikes)} attacks by a hostile worker ended as they must; the others "
        f"served without an error; peak RSS +{max(growth, 0) / 2**20:.0f} MiB"
    )
    return Verdict("hostile", not offenders, summary, tuple(offenders), notes)
