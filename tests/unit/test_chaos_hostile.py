"""The ``hostile`` verdict of ``axon chaos`` (pure): proven on crafted records."""

from __future__ import annotations

import pytest

from axon.chaos import Fault, RequestRecord
from axon.chaos.hostile import ATTACKS, RSS_BOUND, Strike, check_hostile

MiB = 2**20


def request(agent: str, outcome: str = "ok") -> RequestRecord:
    return RequestRecord(agent, "c", 0, f"{agent}-{outcome}", 0.0, 10.0, 1.0, outcome, None)


GOOD = [
    Strike("event-bomb", 10, "ok", None),
    Strike("stop-reading", 10, "agent_crashed", "protocol"),
    Strike("ready-flood", 11, "ok", "protocol"),  # it answered before the kill
    Strike("pong-flood", 12, "agent_crashed", "hung"),
    Strike("long-line", 13, "ok", None),
    Strike("oversize-result", 13, "result_too_large", None),
]
REQUESTS = [request("a"), request("b"), request("a")]
FAULTS = [Fault("hostile", "hostile", 1.0, 10, 0), Fault("kill", "b", 1.0, 20)]


def verdict(strikes=GOOD, requests=REQUESTS, peak=300 * MiB):  # type: ignore[no-untyped-def]
    return check_hostile(strikes, requests, FAULTS, start_rss=100 * MiB, peak_rss=peak)


def test_attacks_that_ended_as_they_must_pass_and_are_counted() -> None:
    result = verdict()
    assert result.passed, result.offenders
    assert result.name == "hostile"
    assert "event-bomb 1" in result.notes[0]
    assert "300 MiB at the peak" in result.notes[1]


@pytest.mark.parametrize(
    ("strike", "why"),
    [
        (Strike("stop-reading", 10, "ok", None), "not killed"),
        (Strike("ready-flood", 10, "ok", "crashed"), "killed for something else"),
        (Strike("event-bomb", 10, "agent_crashed", "protocol"), "died"),
        (Strike("oversize-result", 10, "agent_crashed", None), "ended agent_crashed"),
        (Strike("long-line", 10, "agent_timeout", None), "ended agent_timeout"),
    ],
)
def test_an_attack_that_ended_otherwise_fails(strike: Strike, why: str) -> None:
    result = verdict(strikes=[*GOOD, strike])
    assert not result.passed, why
    assert len(result.offenders) == 1


def test_an_error_of_an_agent_no_other_fault_struck_fails() -> None:
    assert verdict(requests=[*REQUESTS, request("b", "agent_crashed")]).passed  # b was killed
    result = verdict(requests=[*REQUESTS, request("a", "agent_crashed")])
    assert not result.passed
    assert "agent a: 1 error(s)" in result.offenders[0]


def test_memory_past_the_bound_fails() -> None:
    assert verdict(peak=100 * MiB + RSS_BOUND).passed
    result = verdict(peak=100 * MiB + RSS_BOUND + 1)
    assert not result.passed
    assert "grew by" in result.offenders[0]


def test_every_attack_has_a_prompt_the_hostile_agent_understands() -> None:
    from axon.examples.hostile import _respond  # pyright: ignore[reportPrivateUsage]

    assert {a.name for a in ATTACKS} == {s.attack for s in GOOD}
    for attack in ATTACKS:
        command = attack.prompt.partition(":")[0]
        assert command in {"event-bomb", "deaf", "flood", "line", "big"}
    assert _respond  # the grammar lives there (tests/integration/test_hostile_worker.py)
