"""Pure restart policy: restart decisions, strategies, intensity and backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axon.exits import Exit
from axon.supervisor.policy import (
    RestartIntensity,
    RestartType,
    Strategy,
    backoff_base,
    backoff_delay,
    children_to_restart,
    should_restart,
)

PROPERTY = settings(max_examples=300, database=None)

# ---------------------------------------------------------------- Exit


@pytest.mark.parametrize(
    ("exit", "normal", "description"),
    [
        (Exit(code=0), True, "exit code 0"),
        (Exit(code=1), False, "exit code 1"),
        (Exit(code=3), False, "exit code 3"),
        (Exit(signal=9), False, "signal SIGKILL"),
        (Exit(signal=15), False, "signal SIGTERM"),
        (Exit(), False, "exit status unknown"),
        (Exit(requested=True), True, "stopped on request"),
        (Exit(code=1, requested=True), True, "stopped on request (exit code 1)"),
        (Exit(signal=15, requested=True), True, "stopped on request (signal SIGTERM)"),
    ],
    ids=lambda v: repr(v) if isinstance(v, Exit) else None,
)
def test_exit_normal_and_describe(exit: Exit, normal: bool, description: str) -> None:
    assert exit.normal is normal
    assert exit.describe() == description


def test_exit_unknown_signal_number_is_described_by_number() -> None:
    assert Exit(signal=200).describe() == "signal 200"


@pytest.mark.parametrize(
    "kwargs",
    [{"code": 1, "signal": 9}, {"signal": 0}, {"signal": -9}],
    ids=["code-and-signal", "signal-zero", "signal-negative"],
)
def test_exit_rejects_impossible_status(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="signal"):
        Exit(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- should_restart

CLEAN = Exit(code=0)
FAILURE = Exit(code=1)
KILLED = Exit(signal=9)
REQUESTED = Exit(requested=True)
LOST = Exit()


@pytest.mark.parametrize(
    ("restart", "exit", "expected"),
    [
        (RestartType.PERMANENT, CLEAN, True),
        (RestartType.PERMANENT, FAILURE, True),
        (RestartType.PERMANENT, KILLED, True),
        (RestartType.PERMANENT, LOST, True),
        (RestartType.PERMANENT, REQUESTED, False),
        (RestartType.TRANSIENT, CLEAN, False),
        (RestartType.TRANSIENT, FAILURE, True),
        (RestartType.TRANSIENT, KILLED, True),
        (RestartType.TRANSIENT, LOST, True),
        (RestartType.TRANSIENT, REQUESTED, False),
        (RestartType.TEMPORARY, CLEAN, False),
        (RestartType.TEMPORARY, FAILURE, False),
        (RestartType.TEMPORARY, KILLED, False),
        (RestartType.TEMPORARY, LOST, False),
        (RestartType.TEMPORARY, REQUESTED, False),
    ],
    ids=lambda v: v.describe() if isinstance(v, Exit) else None,
)
def test_should_restart(restart: RestartType, exit: Exit, expected: bool) -> None:
    assert should_restart(restart, exit) is expected


def test_enum_values() -> None:
    assert [r.value for r in RestartType] == ["permanent", "transient", "temporary"]
    assert [s.value for s in Strategy] == ["one_for_one", "one_for_all", "rest_for_one"]


# ---------------------------------------------------------------- children_to_restart


@pytest.mark.parametrize(
    ("strategy", "count", "failed", "expected"),
    [
        (Strategy.ONE_FOR_ONE, 1, 0, [0]),
        (Strategy.ONE_FOR_ONE, 4, 0, [0]),
        (Strategy.ONE_FOR_ONE, 4, 2, [2]),
        (Strategy.ONE_FOR_ONE, 4, 3, [3]),
        (Strategy.ONE_FOR_ALL, 1, 0, [0]),
        (Strategy.ONE_FOR_ALL, 4, 0, [0, 1, 2, 3]),
        (Strategy.ONE_FOR_ALL, 4, 2, [0, 1, 2, 3]),
        (Strategy.ONE_FOR_ALL, 4, 3, [0, 1, 2, 3]),
        (Strategy.REST_FOR_ONE, 1, 0, [0]),
        (Strategy.REST_FOR_ONE, 4, 0, [0, 1, 2, 3]),
        (Strategy.REST_FOR_ONE, 4, 2, [2, 3]),
        (Strategy.REST_FOR_ONE, 4, 3, [3]),
    ],
)
def test_children_to_restart(
    strategy: Strategy, count: int, failed: int, expected: list[int]
) -> None:
    assert children_to_restart(strategy, count, failed) == expected


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize(("count", "failed"), [(0, 0), (3, 3), (3, -1), (3, 10), (-1, 0)])
def test_children_to_restart_out_of_range(strategy: Strategy, count: int, failed: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        children_to_restart(strategy, count, failed)


# ---------------------------------------------------------------- RestartIntensity


def test_intensity_otp_example() -> None:
    limit = RestartIntensity(max_restarts=3, max_seconds=10)
    assert limit.record(0) is True
    assert limit.record(1) is True
    assert limit.record(2) is True
    assert limit.count(2) == 3
    assert limit.record(3) is False  # a 4th restart within 10 s: give up
    assert limit.count(3) == 4  # the refused restart is recorded too
    # At t=10.5 only the restart at 0 has left the window (0.5, 10.5]; 1, 2, the refused 3
    # and this one make 4 > 3: still refused, because refused restarts count too.
    assert limit.record(10.5) is False
    # At t=12.5 only 3 and 10.5 remain (1 and 2 are >= 10 s old); with this one: 3.
    assert limit.record(12.5) is True


def test_intensity_allows_again_once_earlier_restarts_expired() -> None:
    limit = RestartIntensity(max_restarts=3, max_seconds=10)
    assert [limit.record(t) for t in (0, 1, 2)] == [True, True, True]
    assert limit.record(10.5) is True  # 0 expired; 1, 2 and 10.5 are three
    assert limit.count(10.5) == 3


def test_intensity_restart_exactly_max_seconds_ago_is_dropped() -> None:
    limit = RestartIntensity(max_restarts=1, max_seconds=10)
    assert limit.record(0) is True
    assert limit.count(9.999) == 1
    assert limit.count(10) == 0
    assert limit.record(10) is True  # the restart at 0 is exactly 10 s old: out of the window


def test_intensity_zero_refuses_every_restart() -> None:
    limit = RestartIntensity(max_restarts=0, max_seconds=5)
    assert limit.record(0) is False
    assert limit.record(100) is False


def test_intensity_reset_forgets_everything() -> None:
    limit = RestartIntensity(max_restarts=1, max_seconds=60)
    assert limit.record(0) is True
    assert limit.record(1) is False
    limit.reset()
    assert limit.count(1) == 0
    assert limit.record(2) is True


def test_intensity_rejects_time_going_backwards() -> None:
    limit = RestartIntensity(max_restarts=5, max_seconds=60)
    limit.record(10)
    with pytest.raises(ValueError, match="backwards"):
        limit.record(9)
    assert limit.count(10) == 1


@pytest.mark.parametrize(
    ("max_restarts", "max_seconds"),
    [(-1, 10), (3, 0), (3, -1), (3, float("inf")), (3, float("nan"))],
)
def test_intensity_rejects_bad_limits(max_restarts: int, max_seconds: float) -> None:
    with pytest.raises(ValueError, match="max_"):
        RestartIntensity(max_restarts, max_seconds)


def test_intensity_exposes_limits() -> None:
    limit = RestartIntensity(max_restarts=3, max_seconds=10)
    assert (limit.max_restarts, limit.max_seconds) == (3, 10)


# Boundary-heavy timestamps: integer steps hit "exactly max_seconds ago" often.
_deltas = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=5).map(float),
        st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
    ),
    max_size=60,
)
_windows = st.one_of(
    st.integers(min_value=1, max_value=10).map(float),
    st.floats(min_value=0.01, max_value=30.0, allow_nan=False),
)


@PROPERTY
@given(
    max_restarts=st.integers(min_value=0, max_value=6),
    max_seconds=_windows,
    start=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    deltas=_deltas,
)
def test_intensity_matches_brute_force_model(
    max_restarts: int, max_seconds: float, start: float, deltas: list[float]
) -> None:
    limit = RestartIntensity(max_restarts, max_seconds)
    recorded: list[float] = []  # every restart ever recorded, refused ones included
    now = start
    for delta in deltas:
        now += delta
        recorded.append(now)
        in_window = sum(1 for t in recorded if now - max_seconds < t <= now)
        assert limit.record(now) is (in_window <= max_restarts)
        assert limit.count(now) == in_window


# ---------------------------------------------------------------- backoff


def test_backoff_examples_with_seeded_rng() -> None:
    rng = random.Random(1234)
    delays = [backoff_delay(n, initial=0.5, maximum=30.0, rng=rng) for n in range(1, 10)]
    bases = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert [backoff_base(n, initial=0.5, maximum=30.0) for n in range(1, 10)] == bases
    for delay, base in zip(delays, bases, strict=True):
        assert base / 2 <= delay <= base
    # Same seed, same delays: the jitter comes only from the injected rng.
    again = random.Random(1234)
    assert delays == [backoff_delay(n, initial=0.5, maximum=30.0, rng=again) for n in range(1, 10)]
    # And it is actually jittered, not a constant factor.
    assert len({round(d / b, 12) for d, b in zip(delays, bases, strict=True)}) > 1


class _FixedJitter(random.Random):
    """An rng whose uniform(a, b) always returns the lower or upper end."""

    def __init__(self, upper: bool) -> None:
        super().__init__(0)
        self.upper = upper
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b if self.upper else a


def test_backoff_jitter_range_is_half_to_full() -> None:
    high = _FixedJitter(upper=True)
    low = _FixedJitter(upper=False)
    assert backoff_delay(3, initial=1.0, maximum=60.0, rng=high) == 4.0
    assert backoff_delay(3, initial=1.0, maximum=60.0, rng=low) == 2.0
    assert high.calls == [(0.5, 1.0)]


@pytest.mark.parametrize("attempt", [1_000, 10_000, 10**100])
def test_backoff_huge_attempt_is_capped(attempt: int) -> None:
    assert backoff_base(attempt, initial=0.5, maximum=30.0) == 30.0
    delay = backoff_delay(attempt, initial=0.5, maximum=30.0, rng=random.Random(0))
    assert 15.0 <= delay <= 30.0


def test_backoff_zero_initial_is_zero() -> None:
    assert backoff_delay(50, initial=0.0, maximum=10.0, rng=random.Random(0)) == 0.0


@pytest.mark.parametrize(
    ("attempt", "initial", "maximum"),
    [
        (0, 1.0, 10.0),
        (-3, 1.0, 10.0),
        (1, -1.0, 10.0),
        (1, 1.0, -1.0),
        (1, float("nan"), 10.0),
        (1, 1.0, float("inf")),
    ],
)
def test_backoff_rejects_bad_arguments(attempt: int, initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match=r"attempt|initial|maximum"):
        backoff_delay(attempt, initial=initial, maximum=maximum, rng=random.Random(0))


_initials = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_subnormal=True)
_maximums = st.floats(min_value=0.0, max_value=1e9, allow_nan=False)
_attempts = st.integers(min_value=1, max_value=5_000)


@PROPERTY
@given(
    attempt=_attempts,
    initial=_initials,
    maximum=_maximums,
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_backoff_delay_bounds(attempt: int, initial: float, maximum: float, seed: int) -> None:
    base = backoff_base(attempt, initial=initial, maximum=maximum)
    delay = backoff_delay(attempt, initial=initial, maximum=maximum, rng=random.Random(seed))
    assert base / 2 <= delay <= base
    assert delay <= maximum
    assert base <= maximum
    # Below the cap the base is exactly the exponential term.
    if attempt <= 60 and initial * 2 ** (attempt - 1) <= maximum:
        assert base == initial * 2 ** (attempt - 1)


@PROPERTY
@given(attempt=_attempts, initial=_initials, maximum=_maximums)
def test_backoff_base_non_decreasing(attempt: int, initial: float, maximum: float) -> None:
    this = backoff_base(attempt, initial=initial, maximum=maximum)
    following = backoff_base(attempt + 1, initial=initial, maximum=maximum)
    assert this <= following <= maximum
