"""The chaos invariant checker catches every crafted violation, and passes a consistent run.

Each invariant gets a passing record and crafted records that break it one way at a time; the
checker must fail that invariant only, naming the offending item. The pydantic-ai message ->
exchanges helper is checked on messages of real ``Agent`` runs (``TestModel`` and
``FunctionModel``, in-process), and the whole checker once on a real runtime's records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from rich.console import Console

from axon import AgentCrashed, AgentSpec
from axon.chaos import (
    STORE,
    TYPED_ERRORS,
    AgentObservation,
    ChaosRecord,
    ConversationHistory,
    Exchange,
    Fault,
    RequestRecord,
    Verdict,
    check_invariants,
    exchanges_from_messages,
    exit_code,
    observe_agent,
    verdict_table,
    verdicts_to_dict,
)
from axon.chaos.invariants import check_cleanup, check_deadlines, check_history, check_isolation
from axon.status import AgentStatus, WorkerStatus
from axon.testing import capture_events, kill_worker, wait_until_serving

from ..conftest import MISBEHAVING, StartAxon, pid_alive

NAMES = ["deadlines", "history", "isolation", "cleanup"]

# ------------------------------------------------------------------------- a consistent run


def req(
    conversation: str,
    turn: int,
    outcome: str | None = "ok",
    *,
    agent: str = "weather",
    started: float | None = None,
    took: float | None = 0.2,
    deadline_s: float = 5.0,
    output: object = None,
) -> RequestRecord:
    """Request ``turn`` of ``conversation``, prompt ``<conversation>-<turn>``."""
    begin = 100.0 + 10 * turn if started is None else started
    prompt = f"{conversation}-{turn}"
    return RequestRecord(
        agent=agent,
        conversation=conversation,
        turn=turn,
        prompt=prompt,
        started=begin,
        deadline_s=deadline_s,
        ended=None if took is None else begin + took,
        outcome=outcome,
        output=f"echo: {prompt}" if output is None and outcome == "ok" else output,
    )


def hist(conversation: str, *prompts: str | Exchange) -> ConversationHistory:
    """A history of answered exchanges (or the given ``Exchange`` objects)."""
    return ConversationHistory(
        conversation,
        tuple(p if isinstance(p, Exchange) else Exchange(p, output=f"echo: {p}") for p in prompts),
    )


def obs(
    agent: str, restarts: int, *, events: int | None = None, failed: int = 0
) -> AgentObservation:
    return AgentObservation(
        agent=agent,
        restarts_before=1,
        restarts_after=1 + restarts,
        worker_restarts_before=1,
        worker_restarts_after=1 + restarts,
        restart_events=restarts if events is None else events,
        failed_events=failed,
    )


# weather (targeted, killed twice): c1 turn 1 crashed, turn 3 lost its connection but committed.
# echo (untargeted): two conversations, all ok.
REQUESTS = (
    req("c1", 0),
    req("c1", 1, "agent_crashed"),
    req("c1", 2),
    req("c1", 3, "unknown"),
    req("c1", 4),
    req("e1", 0, agent="echo"),
    req("e1", 1, agent="echo"),
    req("e2", 0, agent="echo"),
)
HISTORIES = (
    hist("c1", "c1-0", "c1-2", "c1-3", "c1-4"),
    hist("e1", "e1-0", "e1-1"),
    hist("e2", "e2-0"),
)
FAULTS = (
    Fault("kill", "weather", at=105.0, pid=4242),
    Fault("kill", "weather", at=125.0, pid=4243),
)
AGENTS = (obs("weather", 2), obs("echo", 0))
GOOD = ChaosRecord(
    requests=REQUESTS,
    histories=HISTORIES,
    faults=FAULTS,
    agents=AGENTS,
    leftover_pids=(),
    targeted=frozenset({"weather"}),
)


def verdicts_of(record: ChaosRecord, **kw: Any) -> dict[str, Verdict]:
    verdicts = check_invariants(record, unknown_ok=True, **kw)
    assert [v.name for v in verdicts] == NAMES
    return {v.name: v for v in verdicts}


def only_failure(record: ChaosRecord, name: str, **kw: Any) -> Verdict:
    """The verdict ``name``, which must be the only one failing."""
    verdicts = verdicts_of(record, **kw)
    assert [n for n, v in verdicts.items() if not v.passed] == [name]
    assert exit_code(list(verdicts.values())) == 1
    return verdicts[name]


def with_requests(*requests: RequestRecord, record: ChaosRecord = GOOD) -> ChaosRecord:
    return dataclasses.replace(record, requests=tuple(requests))


def replace_request(old: RequestRecord, new: RequestRecord) -> ChaosRecord:
    return with_requests(*(new if r is old else r for r in REQUESTS))


def replace_history(conversation: str, *prompts: str | Exchange) -> ChaosRecord:
    histories = tuple(h for h in HISTORIES if h.conversation != conversation)
    return dataclasses.replace(GOOD, histories=(*histories, hist(conversation, *prompts)))


def test_a_consistent_run_passes_every_invariant() -> None:
    verdicts = check_invariants(GOOD, unknown_ok=True)
    assert [(v.name, v.passed, v.offenders) for v in verdicts] == [(n, True, ()) for n in NAMES]
    assert exit_code(verdicts) == 0
    assert verdicts[0].summary == (
        "all 8 requests ended by their deadline + 1 s with ok or a typed error"
    )
    assert verdicts[1].summary.startswith("6 acknowledged exchanges in 3 conversations")
    assert verdicts[2].notes == ("agent echo: 0 of 3 requests failed (0.00%)",)


def test_no_verdicts_is_not_a_pass() -> None:
    assert exit_code([]) == 1


def test_typed_errors_are_exactly_the_error_family() -> None:
    assert {"agent_crashed", "agent_timeout", "agent_unavailable", "store_unavailable"} <= (
        TYPED_ERRORS
    )
    assert "axon_error" not in TYPED_ERRORS  # what a client makes of a type it does not know
    assert "ok" not in TYPED_ERRORS
    assert "unknown" not in TYPED_ERRORS


# ---------------------------------------------------------------------------------- deadlines


def test_a_request_past_its_deadline_plus_grace_is_caught() -> None:
    late = req("c1", 2, took=6.01)  # deadline 5 s + grace 1 s
    verdict = only_failure(replace_request(REQUESTS[2], late), "deadlines")
    assert verdict.offenders == (
        "weather/c1 turn 2 ('c1-2'): ended after 6.010 s, past its deadline 5 s + grace 1 s",
    )
    assert verdict.summary.startswith("1 of 8 requests did not end")


def test_a_request_within_the_grace_passes_and_the_grace_is_a_parameter() -> None:
    record = replace_request(REQUESTS[2], req("c1", 2, took=5.9))
    assert verdicts_of(record)["deadlines"].passed
    tight = verdicts_of(record, grace_s=0.5)["deadlines"]
    assert not tight.passed
    assert "past its deadline 5 s + grace 0.5 s" in tight.offenders[0]


def test_a_request_with_no_ending_is_caught() -> None:
    record = replace_request(REQUESTS[3], req("c1", 3, None, took=None))
    verdict = only_failure(record, "deadlines")
    assert verdict.offenders == ("weather/c1 turn 3 ('c1-3'): never ended",)


@pytest.mark.parametrize("outcome", ["ValueError", "cancelled", "axon_error", "internal_error"])
def test_an_untyped_outcome_is_caught(outcome: str) -> None:
    record = replace_request(REQUESTS[1], req("c1", 1, outcome))
    verdict = only_failure(record, "deadlines")
    assert verdict.offenders == (
        f"weather/c1 turn 1 ('c1-1'): ended with {outcome!r}, not ok or a typed error",
    )


def test_unknown_outcomes_fail_unless_the_run_allows_them() -> None:
    strict = check_deadlines(REQUESTS)
    assert not strict.passed
    assert strict.offenders == (
        "weather/c1 turn 3 ('c1-3'): the client lost the connection (outcome unknown)",
    )
    assert check_deadlines(REQUESTS, unknown_ok=True).passed


def test_no_requests_prove_nothing() -> None:
    verdict = check_deadlines([])
    assert not verdict.passed
    assert verdict.summary == "no request was recorded: nothing was proven"


# ------------------------------------------------------------------------------------ history


def test_a_duplicated_exchange_is_caught() -> None:
    verdict = only_failure(replace_history("c1", "c1-0", "c1-2", "c1-2", "c1-3", "c1-4"), "history")
    assert verdict.offenders == (
        "weather/c1 turn 2 ('c1-2'): acknowledged, in the history 2 times",
    )


def test_a_missing_acknowledged_exchange_is_caught() -> None:
    verdict = only_failure(replace_history("c1", "c1-0", "c1-3", "c1-4"), "history")
    assert verdict.offenders == (
        "weather/c1 turn 2 ('c1-2'): acknowledged but missing from the history",
    )


def test_a_conversation_without_any_history_misses_every_acknowledged_exchange() -> None:
    record = dataclasses.replace(GOOD, histories=HISTORIES[:2])
    verdict = only_failure(record, "history")
    assert verdict.offenders == (
        "echo/e2 turn 0 ('e2-0'): acknowledged but missing from the history",
    )


def test_out_of_order_exchanges_are_caught() -> None:
    verdict = only_failure(replace_history("c1", "c1-2", "c1-0", "c1-3", "c1-4"), "history")
    assert verdict.offenders == (
        "weather/c1 turn 2 ('c1-2'): committed before turn 0 ('c1-0'), which was acknowledged "
        "first",
    )


def test_a_failed_requests_exchange_in_the_history_is_caught() -> None:
    verdict = only_failure(replace_history("c1", "c1-0", "c1-1", "c1-2", "c1-3", "c1-4"), "history")
    assert verdict.offenders == (
        "weather/c1 turn 1 ('c1-1'): failed with agent_crashed but is in the history",
    )


def test_a_partial_exchange_is_caught() -> None:
    record = replace_history("c1", "c1-0", "c1-2", Exchange("c1-3", answered=False), "c1-4")
    verdict = only_failure(record, "history")
    assert verdict.offenders == (
        "conversation c1: partial exchange at position 2 ('c1-3' has no final response)",
    )


def test_a_prompt_no_request_sent_is_caught() -> None:
    verdict = only_failure(replace_history("c1", "c1-0", "c1-2", "intruder", "c1-4"), "history")
    assert verdict.offenders == ("conversation c1: holds 'intruder', which no request sent",)


def test_a_prompt_sent_to_another_conversation_is_caught() -> None:
    verdict = only_failure(replace_history("e2", "e2-0", "e1-1"), "history")
    assert verdict.offenders == ("conversation e2: holds 'e1-1', sent to conversation e1",)


def test_an_unknown_outcome_may_be_committed_at_most_once() -> None:
    # Absent is fine (the run never reached the store) ...
    assert verdicts_of(replace_history("c1", "c1-0", "c1-2", "c1-4"))["history"].passed
    # ... twice is not.
    record = replace_history("c1", "c1-0", "c1-2", "c1-3", "c1-3", "c1-4")
    verdict = only_failure(record, "history")
    assert verdict.offenders == (
        "weather/c1 turn 3 ('c1-3'): outcome unknown, in the history 2 times",
    )


def test_a_commit_sent_but_unconfirmed_may_be_in_the_history_at_most_once() -> None:
    """``store_unavailable`` with ``maybe_committed``: the store got the COMMIT, its answer was
    lost. Unlike any other typed error, its exchange may be in the history (once)."""
    unconfirmed = req("c1", 1, "store_unavailable")
    unconfirmed = dataclasses.replace(unconfirmed, maybe_committed=True)
    committed = replace_history("c1", "c1-0", "c1-1", "c1-2", "c1-3", "c1-4")
    record = dataclasses.replace(
        committed, requests=replace_request(REQUESTS[1], unconfirmed).requests
    )
    verdicts = verdicts_of(record)
    assert all(v.passed for v in verdicts.values())  # a typed error, in time: deadlines hold
    assert verdicts["history"].notes == (
        "1 request(s) failed with a commit sent but not confirmed (the store's answer was "
        "lost); 1 of them committed, once each",
    )
    absent = dataclasses.replace(record, histories=HISTORIES)  # rolled back after all: fine
    assert verdicts_of(absent)["history"].passed
    twice = dataclasses.replace(
        record,
        histories=(
            *HISTORIES[1:],
            hist("c1", "c1-0", "c1-1", "c1-1", "c1-2", "c1-3", "c1-4"),
        ),
    )
    assert only_failure(twice, "history").offenders == (
        "weather/c1 turn 1 ('c1-1'): outcome store_unavailable, in the history 2 times",
    )
    # Without the flag, the same store_unavailable promised nothing was written.
    plain = req("c1", 1, "store_unavailable")
    broken = dataclasses.replace(committed, requests=replace_request(REQUESTS[1], plain).requests)
    assert only_failure(broken, "history").offenders == (
        "weather/c1 turn 1 ('c1-1'): failed with store_unavailable but is in the history",
    )


def test_a_committed_answer_that_is_not_the_reply_is_caught() -> None:
    record = replace_history("e2", Exchange("e2-0", output="something else"))
    verdict = only_failure(record, "history")
    assert verdict.offenders == (
        "echo/e2 turn 0 ('e2-0'): the history's answer 'something else' is not the reply's "
        "'echo: e2-0'",
    )


def test_prompts_must_be_unique() -> None:
    twin = dataclasses.replace(req("e2", 1, agent="echo"), prompt="e2-0")
    verdict = only_failure(with_requests(*REQUESTS, twin), "history")
    assert "prompt 'e2-0' was sent by 2 requests: prompts must be unique" in verdict.offenders


def test_two_requests_claiming_one_turn_are_caught() -> None:
    twin = dataclasses.replace(
        req("e2", 0, agent="echo"), prompt="e2-other", output="echo: e2-other"
    )
    record = dataclasses.replace(
        with_requests(*REQUESTS, twin), histories=(*HISTORIES[:2], hist("e2", "e2-0", "e2-other"))
    )
    verdict = only_failure(record, "history")
    assert verdict.offenders == ("conversation e2: 2 requests claim turn 0",)


ACKED = [f"a-{turn}" for turn in range(6)]


def acked_run(order: Sequence[str]) -> tuple[list[RequestRecord], list[ConversationHistory]]:
    requests = [
        dataclasses.replace(req("a", turn), prompt=prompt, output=None)
        for turn, prompt in enumerate(ACKED)
    ]
    return requests, [ConversationHistory("a", tuple(Exchange(p) for p in order))]


@given(st.permutations(ACKED))
def test_any_reordering_of_a_history_is_caught(order: list[str]) -> None:
    verdict = check_history(*acked_run(order))
    assert verdict.passed == (order == ACKED)
    if order != ACKED:
        assert all("committed before turn" in o for o in verdict.offenders)
        # Every exchange committed before one acknowledged earlier is named.
        late = {
            p
            for i, p in enumerate(order)
            if any(ACKED.index(q) < ACKED.index(p) for q in order[i + 1 :])
        }
        assert {o.split("'")[1] for o in verdict.offenders} == late


@given(st.sets(st.sampled_from(ACKED), min_size=1))
def test_every_dropped_exchange_is_named(dropped: set[str]) -> None:
    verdict = check_history(*acked_run([p for p in ACKED if p not in dropped]))
    assert not verdict.passed
    assert {o.split("'")[1] for o in verdict.offenders} == dropped
    assert all(o.endswith("acknowledged but missing from the history") for o in verdict.offenders)


# ---------------------------------------------------------------------------------- isolation


def echo_requests(total: int, errors: dict[str, int]) -> list[RequestRecord]:
    outcomes = [kind for kind, n in errors.items() for _ in range(n)]
    outcomes += ["ok"] * (total - len(outcomes))
    return [
        req(f"i{turn}", 0, outcome, agent="echo", started=float(turn))
        for turn, outcome in enumerate(outcomes)
    ]


def test_an_untargeted_agent_with_errors_above_the_threshold_is_caught() -> None:
    requests = echo_requests(200, {"agent_timeout": 1, "agent_crashed": 1})  # 1 %
    verdict = check_isolation(requests, {"weather"}, AGENTS)
    assert not verdict.passed
    assert verdict.offenders == (
        "agent echo: 2 of 200 requests failed (1.00%): agent_crashed 1, agent_timeout 1, "
        "above 0.50%",
    )


def test_the_threshold_is_inclusive_and_a_parameter() -> None:
    requests = echo_requests(200, {"agent_timeout": 1})  # exactly 0.5 %
    assert check_isolation(requests, {"weather"}, AGENTS).passed
    assert not check_isolation(requests, {"weather"}, AGENTS, error_threshold=0.0).passed


def test_errors_of_targeted_agents_do_not_count() -> None:
    crashed = [req(f"w{i}", 0, "agent_crashed", started=float(i)) for i in range(50)]
    verdict = check_isolation([*crashed, *echo_requests(10, {})], {"weather"}, AGENTS)
    assert verdict.passed
    assert verdict.summary == "1 untargeted agents kept serving (error rate at most 0.50%)"


def test_an_untargeted_agent_that_served_nothing_did_not_keep_serving() -> None:
    verdict = check_isolation(REQUESTS[:5], {"weather"}, AGENTS)
    assert verdict.offenders == ("agent echo: served no request, so it did not keep serving",)


def test_the_agent_of_a_fault_is_targeted_even_if_undeclared() -> None:
    record = dataclasses.replace(GOOD, targeted=frozenset())
    assert record.targeted_agents == {"weather"}
    assert verdicts_of(record)["isolation"].passed


def test_isolation_failure_through_the_whole_checker() -> None:
    record = with_requests(*REQUESTS[:5], *echo_requests(100, {"overloaded": 1}))
    record = dataclasses.replace(
        record, histories=(HISTORIES[0], *(hist(f"i{t}", f"i{t}-0") for t in range(1, 100)))
    )
    verdict = only_failure(record, "isolation")
    assert verdict.offenders == (
        "agent echo: 1 of 100 requests failed (1.00%): overloaded 1, above 0.50%",
    )


def test_a_store_outage_excuses_only_store_errors_of_untargeted_agents() -> None:
    """A store outage strikes every agent: the untargeted agent's ``store_unavailable`` errors
    are named but not counted; its other errors still are; without an outage they all count."""
    outage = Fault("outage", STORE, at=110.0, pid=None, expected_restarts=0)
    requests = (*REQUESTS[:5], *echo_requests(100, {"store_unavailable": 30}))
    histories = (HISTORIES[0], *(hist(f"i{t}", f"i{t}-0") for t in range(30, 100)))
    record = dataclasses.replace(
        GOOD, requests=requests, histories=histories, faults=(*FAULTS, outage)
    )
    assert record.targeted_agents == {"weather"}  # the store is no agent
    verdicts = verdicts_of(record)
    assert all(v.passed for v in verdicts.values()), verdicts
    assert verdicts["isolation"].notes == (
        "agent echo: 0 of 100 requests failed (0.00%) (not counted, caused by faults of the "
        "shared store: store_unavailable 30)",
    )
    assert "outage" not in verdicts["cleanup"].summary  # no restart expected of any agent
    no_outage = dataclasses.replace(record, faults=FAULTS)
    assert only_failure(no_outage, "isolation").offenders == (
        "agent echo: 30 of 100 requests failed (30.00%): store_unavailable 30, above 0.50%",
    )
    other = echo_requests(100, {"store_unavailable": 30, "agent_crashed": 1})
    still = check_isolation(other, {"weather"}, AGENTS, excused={"store_unavailable"})
    assert still.offenders == (
        "agent echo: 1 of 100 requests failed (1.00%): agent_crashed 1 (not counted, caused by "
        "faults of the shared store: store_unavailable 30), above 0.50%",
    )


# ------------------------------------------------------------------------------------ cleanup


def test_a_leftover_worker_pid_is_caught() -> None:
    verdict = only_failure(dataclasses.replace(GOOD, leftover_pids=(31337,)), "cleanup")
    assert verdict.offenders == ("worker pid 31337 is still alive after the run",)


@pytest.mark.parametrize("restarts", [1, 3])
def test_restart_count_off_by_one_vs_faults_is_caught(restarts: int) -> None:
    record = dataclasses.replace(GOOD, agents=(obs("weather", restarts), AGENTS[1]))
    verdict = only_failure(record, "cleanup")
    assert verdict.offenders == (
        f"agent weather: {restarts} restart(s), but the faults injected (kill 2) account for 2",
    )


def test_a_restart_on_an_agent_no_fault_struck_is_caught() -> None:
    record = dataclasses.replace(GOOD, agents=(AGENTS[0], obs("echo", 1)))
    verdict = only_failure(record, "cleanup")
    assert verdict.offenders == (
        "agent echo: 1 restart(s), but the faults injected (none) account for 0",
    )


def test_restart_count_off_by_one_vs_logs_is_caught() -> None:
    record = dataclasses.replace(GOOD, agents=(obs("weather", 2, events=3), AGENTS[1]))
    verdict = only_failure(record, "cleanup")
    assert verdict.offenders == (
        "agent weather: 3 agent.restart event(s) in the logs, but its workers were restarted "
        "2 time(s)",
    )


def test_faults_that_cause_no_restart_expect_none() -> None:
    faults = (*FAULTS, Fault("delay", "weather", at=130.0, pid=4244, expected_restarts=0))
    assert check_cleanup(faults, AGENTS, ()).passed
    hang = Fault("hang", "weather", at=130.0, pid=4244)
    assert not check_cleanup((*FAULTS, hang), AGENTS, ()).passed


def test_an_agent_that_went_failed_may_restart_less_and_the_verdict_says_why() -> None:
    faults = tuple(Fault("kill", "weather", at=100.0 + i) for i in range(5))
    # 5 kills, intensity exceeded once: the 5th exit is not restarted; 4 restarts.
    verdict = check_cleanup(faults, [obs("weather", 4, failed=1)], ())
    assert verdict.passed
    assert verdict.notes == (
        "agent weather went FAILED 1 time(s): 4 restart(s) for 5 expected from faults (kill 5); "
        "at most 4 allowed",
    )
    # Fewer still (a fault struck a worker the failing agent was stopping) is explained too.
    assert check_cleanup(faults, [obs("weather", 3, failed=1)], ()).passed
    # More than the faults can cause is not.
    too_many = check_cleanup(faults, [obs("weather", 5, failed=1)], ())
    assert too_many.offenders == (
        "agent weather: 5 restart(s), more than the 4 its faults (kill 5) can cause once it went "
        "FAILED 1 time(s)",
    )


def test_a_fault_on_an_unobserved_agent_is_caught() -> None:
    verdict = check_cleanup(FAULTS, [AGENTS[1]], ())
    assert verdict.offenders == ("agent weather: faults were injected but it was not observed",)


def status(agent: str, restarts: int, worker_restarts: Sequence[int]) -> AgentStatus:
    workers = [
        WorkerStatus(i, 1000 + i, "running", 1, n, 0, None) for i, n in enumerate(worker_restarts)
    ]
    return AgentStatus(agent, "running", restarts, workers)


def test_observe_agent_reads_snapshots_and_counts_only_its_own_events() -> None:
    events = [
        ("agent.restart", {"agent": "w", "worker": 0}),
        ("agent.restart", {"agent": "w", "worker": 1}),
        ("agent.restart", {"agent": "other", "worker": 0}),
        ("agent.failed", {"agent": "w"}),
        ("run.finished", {"agent": "w", "outcome": "ok"}),
    ]
    seen = observe_agent(status("w", 2, [1, 1]), status("w", 3, [2, 2]), events)
    assert seen == AgentObservation("w", 2, 3, 2, 4, restart_events=2, failed_events=1)
    assert (seen.restarts, seen.worker_restarts) == (1, 2)


# -------------------------------------------------------------------------------- the reports


def test_the_reports_name_every_verdict_and_offender() -> None:
    record = dataclasses.replace(GOOD, leftover_pids=tuple(range(1, 8)))
    verdicts = check_invariants(record, unknown_ok=True)
    report = verdicts_to_dict(verdicts)
    assert json.loads(json.dumps(report)) == report
    assert report["passed"] is False
    assert [(v["name"], v["passed"]) for v in report["invariants"]] == [
        ("deadlines", True),
        ("history", True),
        ("isolation", True),
        ("cleanup", False),
    ]
    assert report["invariants"][3]["offenders"][0] == "worker pid 1 is still alive after the run"

    console = Console(record=True, width=200)
    console.print(verdict_table(verdicts, max_offenders=5))
    text = console.export_text()
    assert text.count("PASS") == 3
    assert text.count("FAIL") == 1
    assert "worker pid 5 is still alive after the run" in text
    assert "worker pid 6 is" not in text
    assert "... and 2 more" in text


# ---------------------------------------------------- pydantic-ai messages -> exchanges (real)


class Numbers(BaseModel):
    n: int


def tool_agent() -> Agent[None, str]:
    agent = Agent(TestModel())

    @agent.tool_plain
    def lookup(city: str) -> str:
        return f"sunny in {city}"

    return agent


async def test_exchanges_of_real_text_runs_with_tool_calls() -> None:
    agent = tool_agent()
    first = await agent.run("first")
    second = await agent.run("second", message_history=first.all_messages())
    messages = second.all_messages()
    # The first run: prompt, tool call, tool return, answer; TestModel calls its tools once.
    assert len(messages) == 6
    assert exchanges_from_messages(messages) == (
        Exchange("first", answered=True, output=first.output),
        Exchange("second", answered=True, output=second.output),
    )


async def test_a_run_cut_after_its_tool_return_is_partial() -> None:
    messages = (await tool_agent().run("first")).all_messages()
    assert isinstance(messages[2], ModelRequest)  # the tool's return; the answer is [3]
    assert exchanges_from_messages(messages[:3]) == (Exchange("first", answered=False),)
    assert exchanges_from_messages(messages[:2]) == (Exchange("first", answered=False),)
    assert exchanges_from_messages(messages[:1]) == (Exchange("first", answered=False),)


async def test_a_structured_output_run_is_answered() -> None:
    agent = Agent(TestModel(), output_type=Numbers)
    messages = (await agent.run("numbers")).all_messages()
    response = messages[1]
    assert isinstance(response, ModelResponse)
    assert [type(p) for p in response.parts] == [ToolCallPart]  # the output tool
    assert exchanges_from_messages(messages) == (Exchange("numbers", answered=True),)


async def test_an_output_retry_is_answered_only_once_the_retry_is() -> None:
    calls = 0

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        tool = info.output_tools[0].name
        args = {"n": "not a number"} if calls == 1 else {"n": 7}
        return ModelResponse(parts=[ToolCallPart(tool, args)])

    agent = Agent(FunctionModel(model), output_type=Numbers)
    result = await agent.run("retry me")
    assert result.output == Numbers(n=7)
    messages = result.all_messages()
    assert len(messages) == 5  # prompt, bad call, retry, good call, its return
    assert exchanges_from_messages(messages) == (Exchange("retry me", answered=True),)
    # Cut right after the retry request: the model was sent back to work and never answered.
    assert exchanges_from_messages(messages[:3]) == (Exchange("retry me", answered=False),)


def test_hand_built_messages_and_the_history_check_agree() -> None:
    messages: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart("c1-0")]),
        ModelResponse(parts=[TextPart("echo: c1-0")]),
        ModelRequest(parts=[UserPromptPart("c1-2")]),
        ModelResponse(parts=[TextPart("echo: "), TextPart("c1-2")]),
        ModelRequest(parts=[UserPromptPart("c1-4")]),
        ModelResponse(parts=[ToolCallPart("lookup", {"city": "Paris"})]),
    ]
    history = ConversationHistory.from_messages("c1", messages)
    assert history.exchanges == (
        Exchange("c1-0", output="echo: c1-0"),
        Exchange("c1-2", output="echo: c1-2"),
        Exchange("c1-4", answered=False),
    )
    verdict = check_history(REQUESTS[:5], [history])
    assert verdict.offenders == (
        "conversation c1: partial exchange at position 2 ('c1-4' has no final response)",
    )


# ------------------------------------------------------------ the checker on a real runtime


async def test_the_checker_on_a_real_runtime_with_a_killed_worker(start_axon: StartAxon) -> None:
    """Real records: two conversations of the misbehaving agent, one worker SIGKILLed during a
    run. Every invariant holds; then dropping a committed exchange from the real history, or
    miscounting the kill, fails the checker."""
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING), AgentSpec(id="calm", agent=MISBEHAVING)
    )
    before = {a.id: a for a in axon.agents()}
    requests: list[RequestRecord] = []
    faults: list[Fault] = []
    seen_pids: set[int] = {w.pid for a in before.values() for w in a.workers if w.pid}

    async def send(agent: str, cid: str, turn: int, prompt: str) -> None:
        started = time.monotonic()
        try:
            reply = await axon.send_message(agent, prompt, conversation_id=cid, timeout=10)
            outcome, output = "ok", reply.output
        except AgentCrashed as exc:
            outcome, output = exc.type, None
        requests.append(
            RequestRecord(agent, cid, turn, prompt, started, 10, time.monotonic(), outcome, output)
        )

    with capture_events() as events:
        await send("m", "conv-m", 0, "hello m")
        await send("calm", "conv-calm", 0, "hello calm")
        # Turn 1 sleeps in its worker until the worker is killed.
        sending = asyncio.create_task(send("m", "conv-m", 1, "sleep:30"))
        await events.wait_for("run.routed", agent="m")
        pid = kill_worker(axon, "m", sig=signal.SIGKILL)
        faults.append(Fault("kill", "m", at=time.monotonic(), pid=pid))
        await sending
        await wait_until_serving(axon, "m", replaced=[pid])
        await send("m", "conv-m", 2, "after the crash")
        await send("calm", "conv-calm", 1, "still calm")
        after = {a.id: a for a in axon.agents()}
        seen_pids |= {w.pid for a in after.values() for w in a.workers if w.pid}
        histories = [
            ConversationHistory.from_messages(cid, await axon.history(cid))
            for cid in ("conv-m", "conv-calm")
        ]
        exported = await axon.export_conversation("conv-m")
    await axon.stop()
    logged = [(e.name, e.fields) for e in events.records]
    record = ChaosRecord(
        requests=tuple(requests),
        histories=tuple(histories),
        faults=tuple(faults),
        agents=tuple(observe_agent(before[a], after[a], logged) for a in ("m", "calm")),
        leftover_pids=tuple(sorted(p for p in seen_pids if pid_alive(p))),
        targeted=frozenset({"m"}),
    )
    assert len(seen_pids) == 3  # two workers at the start, and m's replacement
    assert [r.outcome for r in requests] == ["ok", "ok", "agent_crashed", "ok", "ok"]
    verdicts = check_invariants(record)
    assert [(v.name, v.passed, v.offenders) for v in verdicts] == [(n, True, ()) for n in NAMES]
    assert histories[0].exchanges == (
        Exchange("hello m", output="echo: hello m"),
        Exchange("after the crash", output="echo: after the crash"),
    )
    # The JSON forms (export, and the HTTP body's parsed "messages") give the same exchanges.
    assert ConversationHistory.from_json("conv-m", exported) == histories[0]
    assert ConversationHistory.from_json("conv-m", json.loads(exported)) == histories[0]

    dropped = dataclasses.replace(
        record,
        histories=(ConversationHistory("conv-m", histories[0].exchanges[1:]), histories[1]),
    )
    assert check_history(dropped.requests, dropped.histories).offenders == (
        "m/conv-m turn 0 ('hello m'): acknowledged but missing from the history",
    )
    uncounted = dataclasses.replace(record, faults=())
    assert check_cleanup(uncounted.faults, uncounted.agents, ()).offenders == (
        "agent m: 1 restart(s), but the faults injected (none) account for 0",
    )
