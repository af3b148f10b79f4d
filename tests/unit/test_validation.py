"""Checks of what callers send (``axon.validation``), at the edges of each bound."""

from __future__ import annotations

import math

import pytest

from axon import AgentSpec, InvalidRequest
from axon.validation import check_timeout

SPEC = AgentSpec(id="a", agent="m:a", timeout=7.0, max_timeout=30.0)


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (None, 7.0),  # the agent's own timeout
        (0.01, 0.01),
        (math.nextafter(0.01, math.inf), math.nextafter(0.01, math.inf)),
        (1, 1.0),
        (30, 30.0),
        (30.0, 30.0),
    ],
)
def test_timeout_within_bounds_is_accepted(timeout: float | None, expected: float) -> None:
    seconds = check_timeout(timeout, SPEC)
    assert seconds == expected
    assert type(seconds) is float


@pytest.mark.parametrize(
    "timeout",
    [
        5e-324,  # the smallest float: once accepted, and answered "did not answer within 4.9e-324s"
        math.nextafter(0.01, 0.0),
        0.0099,
        0.001,
        0,
        0.0,
        -0.0,
        -1,
        math.nextafter(30.0, math.inf),
        31,
        math.inf,
        -math.inf,
        math.nan,
    ],
)
def test_timeout_out_of_bounds_is_invalid(timeout: float) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_timeout(timeout, SPEC)
    assert caught.value.field == "timeout"
    assert "0.01" in caught.value.message
    assert "30" in caught.value.message


@pytest.mark.parametrize("timeout", [True, False, "5", b"5", [5], {"s": 5}])
def test_timeout_that_is_no_number_is_invalid(timeout: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_timeout(timeout, SPEC)
    assert caught.value.field == "timeout"
