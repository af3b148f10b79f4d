"""Pure restart decisions: whether to restart, which siblings, how often and after how long.

These are the rules of OTP's ``supervisor`` (``do_restart`` / ``add_restart``) with no
processes, clocks or I/O attached: callers pass in the facts (how a worker exited, the current
monotonic time, a random generator) and act on the answer.
"""

from __future__ import annotations

import math
import random
from collections import deque
from enum import StrEnum

from axon.exits import Exit

__all__ = [
    "RestartIntensity",
    "RestartType",
    "Strategy",
    "backoff_base",
    "backoff_delay",
    "children_to_restart",
    "should_restart",
]


class RestartType(StrEnum):
    """When a worker that ended is restarted (OTP child ``restart`` option)."""

    PERMANENT = "permanent"
    """Always restarted, unless the supervisor itself stopped it."""
    TRANSIENT = "transient"
    """Restarted only when it ended abnormally (see :attr:`Exit.normal`)."""
    TEMPORARY = "temporary"
    """Never restarted."""


class Strategy(StrEnum):
    """Which siblings are restarted along with a worker that died (OTP restart strategy)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the worker that died."""
    ONE_FOR_ALL = "one_for_all"
    """Every worker of the agent."""
    REST_FOR_ONE = "rest_for_one"
    """The worker that died and every worker started after it."""


def should_restart(restart: RestartType, exit: Exit) -> bool:
    """Whether a worker with restart type ``restart`` that ended with ``exit`` is restarted.

    Permanent workers are restarted unless the stop was requested; transient workers only
    when the exit was not normal (a crash, a signal, a non-zero code or an unknown status);
    temporary workers never.
    """
    match restart:
        case RestartType.PERMANENT:
            return not exit.requested
        case RestartType.TRANSIENT:
            return not exit.normal
        case RestartType.TEMPORARY:
            return False


def children_to_restart(strategy: Strategy, count: int, failed: int) -> list[int]:
    """Indices (0-based, in start order) of the workers to restart when worker ``failed``
    of ``count`` died.

    ``one_for_one`` gives ``[failed]``, ``one_for_all`` every index, ``rest_for_one``
    ``failed`` and every later index. The dead worker itself is always included. Raises
    :class:`ValueError` unless ``0 <= failed < count``.
    """
    if not 0 <= failed < count:
        raise ValueError(f"worker index {failed} out of range for {count} workers")
    match strategy:
        case Strategy.ONE_FOR_ONE:
            return [failed]
        case Strategy.ONE_FOR_ALL:
            return list(range(count))
        case Strategy.REST_FOR_ONE:
            return list(range(failed, count))


class RestartIntensity:
    """Restart intensity limit: at most ``max_restarts`` restarts within ``max_seconds``.

    As in OTP, every restart is first recorded and then the restarts inside the window
    ``(now - max_seconds, now]`` are counted: more than ``max_restarts`` means give up. A
    restart exactly ``max_seconds`` old has left the window. Refused restarts are recorded
    too, so a supervisor that keeps trying stays refused until it slows down; call
    :meth:`reset` when starting afresh (after a cool-down or a manual restart).

    ``max_restarts=0`` refuses every restart. Times are monotonic clock readings and must not
    decrease from one :meth:`record` to the next.
    """

    def __init__(self, max_restarts: int, max_seconds: float) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        if not (max_seconds > 0 and math.isfinite(max_seconds)):
            raise ValueError(f"max_seconds must be a positive finite number, got {max_seconds}")
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._times: deque[float] = deque()

    @property
    def max_restarts(self) -> int:
        """Most restarts allowed inside one window."""
        return self._max_restarts

    @property
    def max_seconds(self) -> float:
        """Length of the window, in seconds."""
        return self._max_seconds

    def record(self, now: float) -> bool:
        """Record one restart at time ``now``; True if it is allowed, False if the limit is
        exceeded (more than ``max_restarts`` restarts, this one included, in the window).

        Raises :class:`ValueError` if ``now`` is earlier than the previous recorded restart.
        """
        if self._times and now < self._times[-1]:
            raise ValueError(f"time went backwards: {now} < {self._times[-1]}")
        self._times.append(now)
        self._expire(now)
        return len(self._times) <= self._max_restarts

    def count(self, now: float) -> int:
        """Number of recorded restarts (refused ones included) in ``(now - max_seconds, now]``."""
        horizon = now - self._max_seconds
        return sum(1 for t in self._times if horizon < t <= now)

    def reset(self) -> None:
        """Forget every recorded restart."""
        self._times.clear()

    def _expire(self, now: float) -> None:
        horizon = now - self._max_seconds
        while self._times and self._times[0] <= horizon:
            self._times.popleft()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_restarts={self._max_restarts}, "
            f"max_seconds={self._max_seconds!r}, recorded={len(self._times)})"
        )


def backoff_base(attempt: int, *, initial: float, maximum: float) -> float:
    """The un-jittered delay before restart ``attempt`` (1 for the first restart).

    ``min(maximum, initial * 2 ** (attempt - 1))``: non-decreasing in ``attempt`` and never
    above ``maximum``, for any attempt however large. Raises :class:`ValueError` when
    ``attempt < 1`` or ``initial`` / ``maximum`` is negative or not finite.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not (initial >= 0 and math.isfinite(initial)):
        raise ValueError(f"initial must be a finite number >= 0, got {initial}")
    if not (maximum >= 0 and math.isfinite(maximum)):
        raise ValueError(f"maximum must be a finite number >= 0, got {maximum}")
    try:
        # ldexp scales by an exact power of two and takes any int exponent; it raises
        # OverflowError instead of returning inf once the product no longer fits a float.
        grown = math.ldexp(initial, attempt - 1)
    except OverflowError:
        return maximum
    return min(maximum, grown)


def backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Capped exponential backoff with jitter before restart ``attempt`` (1 for the first).

    Returns ``base * rng.uniform(0.5, 1.0)`` where ``base`` is :func:`backoff_base`, so the
    delay lies in ``[base / 2, base]`` and never exceeds ``maximum``. The jitter keeps
    workers that died together from restarting in lock-step. Raises :class:`ValueError` like
    :func:`backoff_base`.
    """
    base = backoff_base(attempt, initial=initial, maximum=maximum)
    return base * rng.uniform(0.5, 1.0)
