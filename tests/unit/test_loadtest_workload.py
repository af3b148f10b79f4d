"""The closed- and open-loop schedulers against a fake target that only sleeps (a stand-in for
the server at the model boundary): request counts, turn order, open-loop start times, bounds."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict

import pytest

from axon.errors import AgentCrashed
from axon.loadtest import Exchange, Plan, PlanError, RequestRecord, run_load, summarize


class SleepyTarget:
    """Answers every request after ``delay`` seconds; ``crash`` in a prompt raises
    ``AgentCrashed``, ``boom`` a ``ValueError``; streamed answers have two chunks."""

    def __init__(self, delay: float, timeout: float | None = None) -> None:
        self.delay = delay
        self.timeout = timeout
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[tuple[str, str, str, float | None, bool]] = []

    @property
    def name(self) -> str:
        return "sleepy"

    def agent_timeout(self, agent: str) -> float | None:
        return self.timeout

    async def send(
        self, agent: str, prompt: str, conversation_id: str, timeout: float | None, stream: bool
    ) -> Exchange:
        self.calls.append((agent, prompt, conversation_id, timeout, stream))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            exchange = Exchange(f"answer to {prompt}")
            if stream:
                await asyncio.sleep(self.delay / 2)
                exchange.token_times.append(time.monotonic())
            await asyncio.sleep(self.delay / 2 if stream else self.delay)
            if stream:
                exchange.token_times.append(time.monotonic())
            if "crash" in prompt:
                raise AgentCrashed(agent, pid=1, exit_code=13, signal=None)
            if "boom" in prompt:
                raise ValueError("unexpected")
            return exchange
        finally:
            self.in_flight -= 1


async def test_closed_loop_runs_conversations_turn_by_turn() -> None:
    target = SleepyTarget(0.02)
    seen: list[RequestRecord] = []
    plan = Plan(agents=["a", "b"], concurrency=3, requests=12, turns=2)
    report = await run_load(target, plan, seen.append)

    assert len(report.records) == 12 == len(target.calls)
    assert seen == report.records  # every record delivered as it finished
    assert sorted(r.index for r in report.records) == list(range(12))
    assert target.max_in_flight == 3
    assert all(r.ok and r.output == f"answer to {r.prompt}" for r in report.records)
    # prompts are unique and carry the tag
    assert len({r.prompt for r in report.records}) == 12
    first = min(report.records, key=lambda r: r.index)
    assert first.prompt == "What is the weather in Paris? [u0 t0 r0]"
    # each user's requests are sequential; each conversation is turns 0, 1 in order on one agent
    by_user: dict[int, list[RequestRecord]] = defaultdict(list)
    by_conversation: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in sorted(report.records, key=lambda r: r.started):
        by_user[r.user].append(r)
        by_conversation[r.conversation_id].append(r)
    assert sorted(by_user) == [0, 1, 2]
    for records in by_user.values():
        for before, after in itertools.pairwise(records):
            assert after.started >= before.ended
    assert len(by_conversation) == 6
    for records in by_conversation.values():
        assert [r.turn for r in records] == [0, 1]
        assert len({(r.agent, r.user) for r in records}) == 1
        assert all(f"t{r.turn} r{r.index}]" in r.prompt for r in records)
    # conversations go to the agents in turn
    agents = [by_conversation[c][0].agent for c in sorted(by_conversation, key=_number)]
    assert agents == ["a", "b"] * 3


def _number(conversation: str) -> int:
    return int(conversation.rsplit("-", 1)[1])


async def test_only_the_last_conversation_is_cut_short_by_the_request_budget() -> None:
    report = await run_load(
        SleepyTarget(0.01), Plan(agents=["a"], concurrency=2, requests=7, turns=3)
    )
    turns: dict[str, list[int]] = defaultdict(list)
    for r in sorted(report.records, key=lambda r: r.started):
        turns[r.conversation_id].append(r.turn)
    assert sorted(turns.values()) == [[0], [0, 1, 2], [0, 1, 2]]


async def test_closed_loop_duration_bound() -> None:
    target = SleepyTarget(0.05)
    t0 = time.monotonic()
    report = await run_load(target, Plan(agents=["a"], concurrency=4, duration=0.3))
    elapsed = time.monotonic() - t0
    assert all(r.started < report.started + 0.3 for r in report.records)
    assert elapsed < 0.3 + 0.05 + 0.15
    assert 16 <= len(report.records) <= 28  # 4 users x ~6 requests of 50 ms in 300 ms


async def test_open_loop_starts_requests_on_schedule() -> None:
    target = SleepyTarget(0.01)
    report = await run_load(target, Plan(agents=["a"], rate=50, requests=20))
    records = sorted(report.records, key=lambda r: r.index)
    assert len(records) == 20
    for i, r in enumerate(records):
        assert r.scheduled == pytest.approx(report.started + i / 50, abs=1e-9)
        assert r.started is not None
        assert 0 <= r.started - r.scheduled < 0.02
    assert summarize(report).start_lag_s.count == 20


async def test_open_loop_does_not_wait_for_slow_answers() -> None:
    target = SleepyTarget(0.5)
    t0 = time.monotonic()
    report = await run_load(target, Plan(agents=["a"], rate=50, duration=0.2))
    elapsed = time.monotonic() - t0
    assert len(report.records) == 10  # due at 0, 20, ..., 180 ms
    assert target.max_in_flight == 10  # all started before the first one answered
    assert max(r.started for r in report.records) - report.started < 0.25
    assert 0.65 < elapsed < 0.9
    assert report.missed == 0


async def test_open_loop_caps_in_flight_and_counts_missed_arrivals() -> None:
    target = SleepyTarget(0.5)
    plan = Plan(agents=["a"], rate=100, duration=0.2, max_in_flight=5)
    report = await run_load(target, plan)
    assert target.max_in_flight == 5
    assert len(report.records) == 5
    assert report.missed == 15  # 20 arrivals due in 200 ms, 5 sent


async def test_open_loop_sessions_run_their_turns_in_order() -> None:
    target = SleepyTarget(0.01)
    report = await run_load(target, Plan(agents=["a"], rate=40, requests=9, turns=3))
    by_conversation: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in sorted(report.records, key=lambda r: r.started):
        by_conversation[r.conversation_id].append(r)
    assert len(report.records) == 9
    for records in by_conversation.values():
        assert [r.turn for r in records] == list(range(len(records)))
        assert records[0].scheduled is not None
        assert all(r.scheduled is None for r in records[1:])
        for before, after in itertools.pairwise(records):
            assert after.started >= before.ended


async def test_errors_are_records_by_type() -> None:
    target = SleepyTarget(0.01, timeout=7.0)
    plan = Plan(agents=["a"], concurrency=1, requests=2, prompt="{conversation}", tag=" #{request}")
    report = await run_load(target, plan)
    assert [r.outcome for r in report.records] == ["ok", "ok"]
    assert [r.prompt for r in report.records] == [
        f"{r.conversation_id} #{r.index}" for r in report.records
    ]
    # no timeout in the plan: the deadline is the agent's own timeout (as the target knows it)
    assert all(r.deadline == pytest.approx(r.started + 7.0) for r in report.records)
    assert [call[3] for call in target.calls] == [None, None]

    crash = Plan(agents=["a"], concurrency=2, requests=4, prompt="crash", tag="")
    report = await run_load(target, crash)
    assert summarize(report).errors == {"agent_crashed": 4}
    assert all(r.prompt == "crash" and r.error and r.output is None for r in report.records)

    boom = Plan(agents=["a"], concurrency=1, requests=1, prompt="boom", tag="")
    (record,) = (await run_load(target, boom)).records
    assert (record.outcome, record.error) == ("client_error", "ValueError: unexpected")


async def test_a_request_past_its_deadline_and_grace_is_a_client_timeout() -> None:
    target = SleepyTarget(5.0)
    plan = Plan(agents=["a"], concurrency=1, requests=1, timeout=0.05, grace=0.05)
    (record,) = (await run_load(target, plan)).records
    assert record.outcome == "client_timeout"
    assert record.deadline == pytest.approx(record.started + 0.05)
    assert 0.1 <= record.latency < 0.3
    assert target.calls[0][3] == 0.05  # the timeout is sent with the request


async def test_streamed_requests_record_their_chunks() -> None:
    target = SleepyTarget(0.04)
    report = await run_load(target, Plan(agents=["a"], concurrency=2, requests=4, stream=True))
    s = summarize(report)
    assert s.ttft_s.count == 4
    assert s.ttft_s.p50 is not None
    assert 0.02 <= s.ttft_s.p50 < 0.035
    assert s.inter_token_s.count == 4
    assert all(call[4] for call in target.calls)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agents": []}, "at least one agent"),
        ({"concurrency": 1, "rate": 1.0}, "exactly one of"),
        ({}, "exactly one of"),
        ({"concurrency": 0}, "concurrency must be"),
        ({"rate": float("inf")}, "rate must be"),
        ({"concurrency": 1, "requests": None, "duration": None}, "must end by itself"),
        ({"concurrency": 1, "turns": 0}, "turns must be"),
        ({"concurrency": 1, "timeout": -1.0}, "timeout must be"),
        ({"concurrency": 1, "prompt": "{nope}"}, "not a valid template"),
        ({"concurrency": 1, "tag": " {"}, "not a valid template"),
    ],
)
def test_bad_plans_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"agents": ["a"], "requests": 1, **kwargs}
    with pytest.raises(PlanError, match=message):
        Plan(**args)  # type: ignore[arg-type]
