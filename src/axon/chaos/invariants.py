"""The invariants a chaos run must keep, checked after the run from what it recorded.

Pure on purpose: a :class:`ChaosRecord` goes in, one :class:`Verdict` per invariant comes out;
no I/O, no clock, no processes. So each invariant is first proved to catch its violations on
crafted records (``tests/unit/test_chaos_invariants.py``) before a real run trusts it, and the
run that collects the record (``axon chaos``) stays a separate concern.

The four invariants (docs/chaos.md says why each holds in Axon):

- ``deadlines``: every request ended by its deadline plus a grace, with ``ok`` or a typed error;
- ``history``: every acknowledged exchange is in its conversation's history exactly once, in
  turn order; nothing of a failed request, no partial exchange, nothing no request sent;
- ``isolation``: agents no fault targeted kept serving (error rate at most a threshold);
- ``cleanup``: no worker process outlived the run; restart counts match the faults injected
  and the ``agent.restart`` events in the logs.

A run passes only when every verdict passed (:func:`exit_code`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import axon.errors

if TYPE_CHECKING:
    from rich.table import Table

    from axon.status import AgentStatus

__all__ = [
    "OK",
    "STORE",
    "TYPED_ERRORS",
    "UNKNOWN",
    "AgentObservation",
    "ChaosRecord",
    "ConversationHistory",
    "Exchange",
    "Fault",
    "RequestRecord",
    "Verdict",
    "check_cleanup",
    "check_deadlines",
    "check_history",
    "check_invariants",
    "check_isolation",
    "exchanges_from_messages",
    "exit_code",
    "observe_agent",
    "verdict_table",
    "verdicts_to_dict",
]

OK = "ok"
"""The outcome of a request that got its reply."""
UNKNOWN = "unknown"
"""The outcome of a request whose client lost the connection: whether it ran cannot be known."""


def _typed_errors() -> frozenset[str]:
    types: set[str] = set()
    for name in axon.errors.__all__:
        cls = getattr(axon.errors, name)
        if isinstance(cls, type) and issubclass(cls, axon.errors.AxonError) and not cls.internal:
            types.add(cls.type)
    # The bare base type is what a client makes of an error type it does not know.
    return frozenset(types - {axon.errors.AxonError.type})


TYPED_ERRORS: frozenset[str] = _typed_errors()
"""The ``type`` of every error of Axon's error family (``agent_crashed``, ``agent_timeout``,
...): the outcomes a request may end with besides ``ok``. Derived from :mod:`axon.errors`, so
a new error class is typed here the day it is added."""

STORE = "<store>"
"""The ``agent`` of a fault that strikes the conversation store every agent shares (a store
outage): no agent id can take this form."""
SHARED_FAULT_ERRORS = {"outage": frozenset({"store_unavailable"})}
"""Error types a fault of each kind causes on every agent, targeted or not: they do not count
against an untargeted agent's isolation."""

DEFAULT_GRACE_S = 1.0
DEFAULT_ERROR_THRESHOLD = 0.005


# -- what a run records --------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request a chaos run sent, as its client saw it."""

    agent: str
    conversation: str
    turn: int
    """Its position in the conversation (0, 1, ...): the client sends turn k+1 after turn k
    ended, so the turn order is the order exchanges were acknowledged in."""
    prompt: str
    """Unique across the run, so the exchange it commits can be found in any history."""
    started: float
    """Monotonic seconds when the client sent it."""
    deadline_s: float
    """The request's timeout, as sent."""
    ended: float | None = None
    """Monotonic seconds when the client got its outcome; None if it never ended."""
    outcome: str | None = None
    """``ok``, an error type (``agent_crashed``, ...), ``unknown``, or None if it never ended.
    Anything else names an untyped failure (an exception outside the Axon error family)."""
    output: object = None
    """The reply's output, for ``ok``."""
    maybe_committed: bool = False
    """The typed error said the run may have been committed all the same
    (``StoreUnavailable.maybe_committed``: the store's confirmation was lost). Such a request
    may be in its history, at most once, like an ``unknown`` one."""

    @property
    def name(self) -> str:
        """How verdicts name this request."""
        return f"{self.agent}/{self.conversation} turn {self.turn} ({self.prompt!r})"

    @property
    def failed(self) -> bool:
        """Ended with a typed error that promises nothing was committed."""
        return self.outcome in TYPED_ERRORS and not self.maybe_committed


@dataclass(frozen=True)
class Exchange:
    """One user prompt in a committed history, and whether a final model response follows it."""

    prompt: str
    answered: bool = True
    output: str | None = None
    """The text of the final response, when there is one (compared with the reply's output)."""


@dataclass(frozen=True)
class ConversationHistory:
    """A conversation's committed history after the run, as exchanges in order."""

    conversation: str
    exchanges: tuple[Exchange, ...] = ()

    @classmethod
    def from_messages(cls, conversation: str, messages: Sequence[Any]) -> ConversationHistory:
        """From pydantic-ai ``ModelMessage`` objects (``axon.history(conversation)``)."""
        return cls(conversation, exchanges_from_messages(messages))

    @classmethod
    def from_json(
        cls, conversation: str, messages: bytes | str | Sequence[Any]
    ) -> ConversationHistory:
        """From pydantic-ai JSON: ``axon.export_conversation(cid)`` (bytes), or the
        ``messages`` of ``GET /v1/conversations/{id}`` (parsed JSON, a list)."""
        from pydantic_ai import ModelMessagesTypeAdapter

        parsed = (
            ModelMessagesTypeAdapter.validate_json(messages)
            if isinstance(messages, bytes | str)
            else ModelMessagesTypeAdapter.validate_python(messages)
        )
        return cls.from_messages(conversation, parsed)


@dataclass(frozen=True)
class Fault:
    """One fault the run injected."""

    kind: str
    """``kill``, ``hang``, ``cut``, ``outage``, ... (the chaos schedule's names)."""
    agent: str
    """The agent it struck, or :data:`STORE` for a fault of the shared store."""
    at: float
    """Monotonic seconds when it was injected."""
    pid: int | None = None
    """The worker it struck, if it struck one."""
    expected_restarts: int = 1
    """Restarts it must cause: 1 for a worker killed, hung or cut off; 0 for a fault the
    worker survives (added latency, say)."""


@dataclass(frozen=True)
class AgentObservation:
    """What the runtime and its logs said about one agent, before and after the run."""

    agent: str
    restarts_before: int
    """``AgentStatus.restarts`` before the run: restart decisions, one per unexpected exit."""
    restarts_after: int
    worker_restarts_before: int
    """The sum of the workers' ``restarts`` before the run: workers restarted (a
    ``one_for_all`` decision restarts every worker of the agent)."""
    worker_restarts_after: int
    restart_events: int
    """``agent.restart`` events logged during the run (one per worker restarted)."""
    failed_events: int = 0
    """``agent.failed`` events logged during the run."""

    @property
    def restarts(self) -> int:
        return self.restarts_after - self.restarts_before

    @property
    def worker_restarts(self) -> int:
        return self.worker_restarts_after - self.worker_restarts_before


def observe_agent(
    before: AgentStatus,
    after: AgentStatus,
    events: Iterable[tuple[str, Mapping[str, Any]]],
) -> AgentObservation:
    """An :class:`AgentObservation` from two ``axon.agent(id)`` snapshots and the run's
    ``(event, fields)`` pairs (those of every agent: this one's are picked out)."""
    counts = Counter(name for name, fields in events if fields.get("agent") == after.id)
    return AgentObservation(
        agent=after.id,
        restarts_before=before.restarts,
        restarts_after=after.restarts,
        worker_restarts_before=sum(w.restarts for w in before.workers),
        worker_restarts_after=sum(w.restarts for w in after.workers),
        restart_events=counts["agent.restart"],
        failed_events=counts["agent.failed"],
    )


@dataclass(frozen=True)
class ChaosRecord:
    """Everything a chaos run collected, for :func:`check_invariants`."""

    requests: tuple[RequestRecord, ...]
    histories: tuple[ConversationHistory, ...]
    faults: tuple[Fault, ...] = ()
    agents: tuple[AgentObservation, ...] = ()
    leftover_pids: tuple[int, ...] = ()
    """Worker pids still alive after the runtime stopped (must be none)."""
    targeted: frozenset[str] = frozenset()
    """Agents the run meant to strike (the agent of every fault counts too)."""

    @property
    def targeted_agents(self) -> frozenset[str]:
        return self.targeted | {f.agent for f in self.faults if f.agent != STORE}

    @property
    def shared_errors(self) -> frozenset[str]:
        """Error types the run's shared faults (a store outage) cause on every agent."""
        return frozenset().union(*(SHARED_FAULT_ERRORS.get(f.kind, ()) for f in self.faults))


# -- pydantic-ai messages -> exchanges -----------------------------------------------------------


def exchanges_from_messages(
    messages: Sequence[Any], *, output_tool_prefix: str = "final_result"
) -> tuple[Exchange, ...]:
    """The exchanges of a pydantic-ai message history: one per user prompt, in order.

    An exchange is answered when its last model response is final: it calls no tool (a text
    answer), or it calls an output tool (pydantic-ai names them ``final_result...`` unless told
    otherwise: ``output_tool_prefix``), and no retry prompt follows it. A history that ends
    after a tool's return, or after a request, is a partial exchange.
    """
    from pydantic_ai.messages import (
        ModelRequest,
        ModelResponse,
        ToolCallPart,
        UserPromptPart,
    )

    groups: list[tuple[str, list[Any]]] = []
    for message in messages:
        prompts = (
            [p.content for p in message.parts if isinstance(p, UserPromptPart)]
            if isinstance(message, ModelRequest)
            else []
        )
        if prompts:
            content = prompts[-1]
            groups.append((content if isinstance(content, str) else repr(content), []))
        if groups:
            groups[-1][1].append(message)

    exchanges: list[Exchange] = []
    for prompt, group in groups:
        last = max((i for i, m in enumerate(group) if isinstance(m, ModelResponse)), default=None)
        if last is None:
            exchanges.append(Exchange(prompt, answered=False))
            continue
        response: ModelResponse = group[last]
        calls = [p for p in response.parts if isinstance(p, ToolCallPart)]
        retried = any(
            _asks_retry(p)
            for m in group[last + 1 :]
            if isinstance(m, ModelRequest)
            for p in m.parts
        )
        final = not retried and (
            not calls or any(c.tool_name.startswith(output_tool_prefix) for c in calls)
        )
        exchanges.append(
            Exchange(prompt, answered=final, output=response.text if final and not calls else None)
        )
    return tuple(exchanges)


def _asks_retry(part: Any) -> bool:
    """A request part that sends the model back to work (pydantic-ai 2 marks a retried tool
    return with ``outcome="retried"``; older histories carry a ``retry-prompt`` part)."""
    kind = getattr(part, "part_kind", None)
    return kind in ("retry-prompt", "retry-feedback") or (
        kind == "tool-return" and getattr(part, "outcome", None) == "retried"
    )


# -- verdicts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether one invariant held, in one line, with every offending item named."""

    name: str
    passed: bool
    summary: str
    offenders: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """Facts a reader needs that are not failures (an agent went FAILED, say)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "summary": self.summary,
            "offenders": list(self.offenders),
            "notes": list(self.notes),
        }


def check_invariants(
    run: ChaosRecord,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    error_threshold: float = DEFAULT_ERROR_THRESHOLD,
    unknown_ok: bool = False,
) -> list[Verdict]:
    """Every invariant's verdict, in a fixed order: deadlines, history, isolation, cleanup."""
    return [
        check_deadlines(run.requests, grace_s=grace_s, unknown_ok=unknown_ok),
        check_history(run.requests, run.histories),
        check_isolation(
            run.requests,
            run.targeted_agents,
            run.agents,
            error_threshold=error_threshold,
            excused=run.shared_errors,
        ),
        check_cleanup(run.faults, run.agents, run.leftover_pids),
    ]


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 only when there are verdicts and every one passed; 1 otherwise."""
    return 0 if verdicts and all(v.passed for v in verdicts) else 1


def check_deadlines(
    requests: Sequence[RequestRecord],
    *,
    grace_s: float = DEFAULT_GRACE_S,
    unknown_ok: bool = False,
) -> Verdict:
    """Every request ended within ``deadline_s + grace_s`` of being sent, with ``ok`` or a typed
    error. ``unknown`` (the client lost the connection) counts as a failure unless
    ``unknown_ok``: a run that does not cut its clients off has no excuse for one."""
    offenders: list[str] = []
    bad = 0
    for r in requests:
        before = len(offenders)
        if r.ended is None or r.outcome is None:
            offenders.append(f"{r.name}: never ended")
            bad += 1
            continue
        took = r.ended - r.started
        if took < 0:
            offenders.append(f"{r.name}: ended {-took:.3f} s before it started")
        elif took > r.deadline_s + grace_s:
            offenders.append(
                f"{r.name}: ended after {took:.3f} s, past its deadline "
                f"{r.deadline_s:g} s + grace {grace_s:g} s"
            )
        if r.outcome == UNKNOWN:
            if not unknown_ok:
                offenders.append(f"{r.name}: the client lost the connection (outcome unknown)")
        elif r.outcome != OK and r.outcome not in TYPED_ERRORS:
            offenders.append(f"{r.name}: ended with {r.outcome!r}, not ok or a typed error")
        bad += len(offenders) > before
    if not requests:
        return Verdict("deadlines", False, "no request was recorded: nothing was proven")
    if offenders:
        summary = (
            f"{bad} of {len(requests)} requests did not end by their deadline + {grace_s:g} s "
            "with ok or a typed error"
        )
    else:
        summary = (
            f"all {len(requests)} requests ended by their deadline + {grace_s:g} s "
            "with ok or a typed error"
        )
    return Verdict("deadlines", not offenders, summary, tuple(offenders))


def check_history(
    requests: Sequence[RequestRecord], histories: Sequence[ConversationHistory]
) -> Verdict:
    """Every ``ok`` exchange is in its conversation's history exactly once, in turn order; a
    request that failed with a typed error left nothing; an ``unknown`` one (or one that never
    ended, or whose error says it may have committed) is there at most once; no exchange is
    partial; every prompt there was sent, by a request of that conversation. A conversation
    with no history record counts as empty."""
    offenders: list[str] = []
    senders: dict[str, list[RequestRecord]] = defaultdict(list)
    by_conversation: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in requests:
        senders[r.prompt].append(r)
        by_conversation[r.conversation].append(r)
    for prompt, rs in senders.items():
        if len(rs) > 1:
            offenders.append(
                f"prompt {prompt!r} was sent by {len(rs)} requests: prompts must be unique"
            )
    by_history: dict[str, ConversationHistory] = {}
    for h in histories:
        if h.conversation in by_history:
            offenders.append(f"conversation {h.conversation}: two history records")
        by_history[h.conversation] = h

    conversations = sorted(set(by_conversation) | set(by_history))
    acknowledged = unconfirmed = unconfirmed_found = 0
    for cid in conversations:
        exchanges = by_history.get(cid, ConversationHistory(cid)).exchanges
        counts = Counter(e.prompt for e in exchanges)
        first: dict[str, int] = {}
        for position, e in enumerate(exchanges):
            first.setdefault(e.prompt, position)
            if not e.answered:
                offenders.append(
                    f"conversation {cid}: partial exchange at position {position} "
                    f"({e.prompt!r} has no final response)"
                )
        for prompt in counts:
            owners = senders.get(prompt, [])
            if not owners:
                offenders.append(f"conversation {cid}: holds {prompt!r}, which no request sent")
            elif all(o.conversation != cid for o in owners):
                offenders.append(
                    f"conversation {cid}: holds {prompt!r}, sent to conversation "
                    f"{owners[0].conversation}"
                )
        turns = sorted(by_conversation.get(cid, []), key=lambda r: r.turn)
        seen_turns = Counter(r.turn for r in turns)
        for turn, n in sorted(seen_turns.items()):
            if n > 1:
                offenders.append(f"conversation {cid}: {n} requests claim turn {turn}")
        latest: RequestRecord | None = None
        for r in turns:
            n = counts[r.prompt]
            if r.outcome == OK:
                acknowledged += 1
                if n == 0:
                    offenders.append(f"{r.name}: acknowledged but missing from the history")
                    continue
                if n > 1:
                    offenders.append(f"{r.name}: acknowledged, in the history {n} times")
                exchange = exchanges[first[r.prompt]]
                if (
                    exchange.output is not None
                    and isinstance(r.output, str)
                    and exchange.output != r.output
                ):
                    offenders.append(
                        f"{r.name}: the history's answer {exchange.output!r} is not the "
                        f"reply's {r.output!r}"
                    )
                if latest is not None and first[r.prompt] < first[latest.prompt]:
                    offenders.append(
                        f"{r.name}: committed before turn {latest.turn} ({latest.prompt!r}), "
                        "which was acknowledged first"
                    )
                if latest is None or first[r.prompt] > first[latest.prompt]:
                    latest = r
            elif r.failed:
                if n:
                    offenders.append(f"{r.name}: failed with {r.outcome} but is in the history")
            elif n > 1:
                offenders.append(f"{r.name}: outcome {r.outcome}, in the history {n} times")
            if r.maybe_committed:
                unconfirmed += 1
                unconfirmed_found += n > 0
    if offenders:
        summary = f"{len(offenders)} problem(s) in {len(conversations)} conversation histories"
    else:
        summary = (
            f"{acknowledged} acknowledged exchanges in {len(conversations)} conversations: each "
            "committed once, in order; nothing failed, partial or unsent committed"
        )
    notes = (
        (
            f"{unconfirmed} request(s) failed with a commit sent but not confirmed (the store's "
            f"answer was lost); {unconfirmed_found} of them committed, once each",
        )
        if unconfirmed
        else ()
    )
    return Verdict("history", not offenders, summary, tuple(offenders), notes)


def check_isolation(
    requests: Sequence[RequestRecord],
    targeted: Iterable[str],
    agents: Sequence[AgentObservation] = (),
    *,
    error_threshold: float = DEFAULT_ERROR_THRESHOLD,
    excused: Collection[str] = (),
) -> Verdict:
    """Every agent no fault targeted kept serving: it served requests, and at most
    ``error_threshold`` of them (a fraction: 0.005 is 0.5 %) ended in anything but ``ok``.
    Errors of an ``excused`` type (caused by a fault of what every agent shares: a store
    outage) are named in the notes but not counted."""
    struck = set(targeted)
    by_agent: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in requests:
        by_agent[r.agent].append(r)
    untargeted = sorted((set(by_agent) | {a.agent for a in agents}) - struck)
    offenders: list[str] = []
    lines: list[str] = []
    for agent in untargeted:
        served = by_agent.get(agent, [])
        if not served:
            offenders.append(f"agent {agent}: served no request, so it did not keep serving")
            continue
        errors = Counter(str(r.outcome) for r in served if r.outcome != OK)
        shared = Counter({kind: n for kind, n in errors.items() if kind in excused})
        errors -= shared
        rate = sum(errors.values()) / len(served)
        line = (
            f"agent {agent}: {sum(errors.values())} of {len(served)} requests failed ({rate:.2%})"
        )
        if errors:
            line += ": " + ", ".join(f"{kind} {n}" for kind, n in sorted(errors.items()))
        if shared:
            line += " (not counted, caused by faults of the shared store: " + ", ".join(
                f"{kind} {n}" for kind, n in sorted(shared.items())
            )
            line += ")"
        lines.append(line)
        if rate > error_threshold:
            offenders.append(f"{line}, above {error_threshold:.2%}")
    if not untargeted:
        return Verdict(
            "isolation", True, "every agent was targeted: no agent to check isolation on"
        )
    summary = (
        f"{len(offenders)} of {len(untargeted)} untargeted agents did not keep serving "
        f"(error rate above {error_threshold:.2%})"
        if offenders
        else f"{len(untargeted)} untargeted agents kept serving "
        f"(error rate at most {error_threshold:.2%})"
    )
    return Verdict("isolation", not offenders, summary, tuple(offenders), tuple(lines))


def check_cleanup(
    faults: Sequence[Fault],
    agents: Sequence[AgentObservation],
    leftover_pids: Sequence[int],
) -> Verdict:
    """No worker outlived the run, and each agent restarted exactly as often as its faults
    require (fewer if it went FAILED, which the notes explain) and as the logs say."""
    offenders = [f"worker pid {pid} is still alive after the run" for pid in leftover_pids]
    notes: list[str] = []
    expected: Counter[str] = Counter()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for f in faults:
        if f.agent == STORE:
            continue  # the store's faults restart no worker
        expected[f.agent] += f.expected_restarts
        kinds[f.agent][f.kind] += 1
    observed = {a.agent: a for a in agents}
    for agent in sorted(set(expected) - set(observed)):
        offenders.append(f"agent {agent}: faults were injected but it was not observed")
    for agent, obs in sorted(observed.items()):
        want = expected[agent]
        why = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds[agent].items())) or "none"
        if obs.failed_events:
            # The exit that trips FAILED is not restarted, and a fault that strikes a worker
            # the failing agent is stopping restarts nothing: fewer restarts are expected.
            ceiling = max(want - obs.failed_events, 0)
            notes.append(
                f"agent {agent} went FAILED {obs.failed_events} time(s): {obs.restarts} "
                f"restart(s) for {want} expected from faults ({why}); at most {ceiling} allowed"
            )
            if obs.restarts > ceiling:
                offenders.append(
                    f"agent {agent}: {obs.restarts} restart(s), more than the {ceiling} its "
                    f"faults ({why}) can cause once it went FAILED {obs.failed_events} time(s)"
                )
        elif obs.restarts != want:
            offenders.append(
                f"agent {agent}: {obs.restarts} restart(s), but the faults injected ({why}) "
                f"account for {want}"
            )
        if obs.restart_events != obs.worker_restarts:
            offenders.append(
                f"agent {agent}: {obs.restart_events} agent.restart event(s) in the logs, but "
                f"its workers were restarted {obs.worker_restarts} time(s)"
            )
    if offenders:
        summary = f"{len(offenders)} problem(s): leftover workers or restart counts off"
    else:
        summary = (
            f"no worker outlived the run; restarts of {len(observed)} agents match "
            f"{len(faults)} faults and the logs"
        )
    return Verdict("cleanup", not offenders, summary, tuple(offenders), tuple(notes))


# -- reports -------------------------------------------------------------------------------------


def verdicts_to_dict(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """A JSON-ready report: ``{"passed": bool, "invariants": [verdict, ...]}``."""
    return {
        "passed": exit_code(verdicts) == 0,
        "invariants": [v.to_dict() for v in verdicts],
    }


def verdict_table(verdicts: Sequence[Verdict], *, max_offenders: int = 5) -> Table:
    """A Rich table: one row per invariant (PASS/FAIL, summary), its first ``max_offenders``
    offending items and its notes beneath the summary."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Invariants", show_lines=True)
    table.add_column("invariant", style="bold")
    table.add_column("result")
    table.add_column("details")
    for v in verdicts:
        details = Text(v.summary)
        for offender in v.offenders[:max_offenders]:
            details.append(f"\n- {offender}", style="red")
        if len(v.offenders) > max_offenders:
            details.append(f"\n  ... and {len(v.offenders) - max_offenders} more", style="red")
        for note in v.notes:
            details.append(f"\n{note}", style="dim")
        result = Text("PASS", style="bold green") if v.passed else Text("FAIL", style="bold red")
        table.add_row(v.name, result, details)
    return table
