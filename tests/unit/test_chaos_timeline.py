"""Recovery times from faults and ``agent.state`` changes: exact figures on crafted timelines."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from axon.chaos import (
    Fault,
    Interval,
    Recovery,
    StateChange,
    recovery_times,
    serving_intervals,
    summarize_recoveries,
    timeline_table,
    timeline_to_dict,
)


def changes(agent: str, *steps: tuple[float, str]) -> list[StateChange]:
    return [StateChange(agent, at, state) for at, state in steps]


def test_serving_intervals_from_state_changes_in_any_order() -> None:
    steps = changes("w", (11.5, "running"), (10.0, "restarting"), (20.0, "failed"))
    steps += changes("e", (3.0, "restarting"), (3.25, "running"))
    assert serving_intervals(steps, start=0.0) == {
        "w": [Interval(0.0, 10.0), Interval(11.5, 20.0)],
        "e": [Interval(0.0, 3.0), Interval(3.25)],
    }


def test_an_agent_not_serving_at_the_start_serves_from_its_first_running() -> None:
    steps = changes("w", (1.0, "starting"), (2.0, "running"))
    assert serving_intervals(steps, start=0.0, initially_serving=False) == {"w": [Interval(2.0)]}


def test_recovery_is_fault_to_serving_again() -> None:
    serving = {"w": [Interval(0.0, 10.0), Interval(11.5, 20.0), Interval(26.0)]}
    kill = Fault("kill", "w", at=9.9, pid=7)  # noticed 0.1 s later, back 1.5 s after that
    during = Fault("kill", "w", at=10.5)  # struck while the agent was already down
    failed = Fault("kill", "w", at=19.0)  # the agent went FAILED, back after a cool-down
    assert recovery_times([kill, during, failed], serving) == [
        Recovery(kill, pytest.approx(1.6), disrupted=True),
        Recovery(during, 1.0, disrupted=True),
        Recovery(failed, 7.0, disrupted=True),
    ]


def test_a_fault_that_did_not_interrupt_serving_recovers_in_zero() -> None:
    serving = {"w": [Interval(0.0, 10.0), Interval(11.0)]}
    delay = Fault("delay", "w", at=2.0, expected_restarts=0)
    kill = Fault("kill", "w", at=9.0)
    after = Fault("delay", "w", at=12.0, expected_restarts=0)
    assert recovery_times([delay, kill, after], serving) == [
        Recovery(delay, 0.0, disrupted=False),  # the outage came after the next fault
        Recovery(kill, 2.0, disrupted=True),
        Recovery(after, 0.0, disrupted=False),
    ]


def test_a_fault_never_recovered_from_is_none() -> None:
    serving = {"w": [Interval(0.0, 10.0)]}
    kill = Fault("kill", "w", at=9.0)
    ghost = Fault("kill", "nobody", at=1.0)
    assert recovery_times([kill, ghost], serving) == [
        Recovery(kill, None, disrupted=True),
        Recovery(ghost, None, disrupted=True),
    ]
    summary = summarize_recoveries(recovery_times([kill, ghost], serving))
    assert (summary.faults, summary.disrupted, summary.unrecovered) == (2, 2, 2)
    assert (summary.p50_s, summary.p99_s, summary.max_s) == (None, None, None)


def test_percentiles_over_disrupted_recovered_faults_only() -> None:
    faults = [Fault("kill", "w", at=float(i)) for i in range(102)]
    recoveries = [Recovery(f, float(i + 1), disrupted=True) for i, f in enumerate(faults[:100])]
    recoveries += [
        Recovery(faults[100], 0.0, disrupted=False),
        Recovery(faults[101], None, disrupted=True),
    ]
    summary = summarize_recoveries(recoveries)
    assert (summary.faults, summary.disrupted, summary.unrecovered) == (102, 101, 1)
    # Inclusive (linear) percentiles of 1..100.
    assert summary.p50_s == pytest.approx(50.5)
    assert summary.p99_s == pytest.approx(99.01)
    assert summary.max_s == 100.0
    one = summarize_recoveries([Recovery(faults[0], 0.75, disrupted=True)])
    assert (one.p50_s, one.p99_s, one.max_s) == (0.75, 0.75, 0.75)


outages = st.lists(
    st.tuples(
        st.floats(0.5, 5.0),  # serving time before the fault
        st.floats(0.0, 0.5),  # fault until the agent leaves RUNNING
        st.floats(0.01, 3.0),  # down time
    ),
    min_size=1,
    max_size=20,
)


@given(outages)
def test_recovery_times_match_any_constructed_timeline(steps: list[tuple[float, ...]]) -> None:
    now, faults, state_changes, expected = 0.0, [], [], []
    for serving_for, detect, down in steps:
        at = now + serving_for
        faults.append(Fault("kill", "w", at=at))
        state_changes += changes("w", (at + detect, "restarting"), (at + detect + down, "running"))
        expected.append(detect + down)
        now = at + detect + down
    recoveries = recovery_times(faults, serving_intervals(state_changes, start=0.0))
    assert [r.disrupted for r in recoveries] == [True] * len(steps)
    assert [r.seconds for r in recoveries] == pytest.approx(expected)
    assert summarize_recoveries(recoveries).max_s == pytest.approx(max(expected))


def test_the_timeline_reports() -> None:
    serving = {"w": [Interval(100.0, 110.0), Interval(111.5)]}
    faults = [Fault("kill", "w", at=109.9, pid=4242), Fault("delay", "w", at=120.0)]
    recoveries = recovery_times(faults, serving)
    report = timeline_to_dict(recoveries, start=100.0)
    assert json.loads(json.dumps(report)) == report
    assert report == {
        "faults": [
            {
                "at_s": 9.9,
                "kind": "kill",
                "agent": "w",
                "pid": 4242,
                "disrupted": True,
                "recovery_s": 1.6,
            },
            {
                "at_s": 20.0,
                "kind": "delay",
                "agent": "w",
                "pid": None,
                "disrupted": False,
                "recovery_s": 0.0,
            },
        ],
        "recovery_s": {
            "faults": 2,
            "disrupted": 1,
            "unrecovered": 0,
            "p50": pytest.approx(1.6),
            "p99": pytest.approx(1.6),
            "max": pytest.approx(1.6),
        },
    }
    console = Console(record=True, width=200)
    console.print(timeline_table(recoveries, start=100.0))
    text = console.export_text()
    assert "9.900 s" in text
    assert "1.600 s" in text
    assert "not down" in text
    assert "recovery p50 1.600 s, p99 1.600 s" in text
