"""What a load run produces: one :class:`RequestRecord` per request, and the :class:`LoadReport`.

The records are the raw data; every figure (:mod:`axon.loadtest.stats`) is computed from them,
and ``axon chaos`` checks its invariants against them (every request ended by its deadline,
every acknowledged exchange is in its conversation's history, ...). So a record carries what
such a check needs: where the request went, the exact prompt, when it started and ended on the
monotonic clock, the deadline it was given, and how it ended.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OK", "LoadReport", "RequestRecord"]

OK = "ok"
"""The outcome of a request that got its committed reply."""


@dataclass(frozen=True)
class RequestRecord:
    """One finished request of a load run.

    Times are ``time.monotonic()`` seconds of the process that ran the load.
    """

    index: int
    """The request's number in the run, in the order requests were issued (from 0): the ``r``
    of the prompt tag."""
    agent: str
    conversation_id: str
    """Chosen by the load generator (``bench-<run>-<n>``), so even a first turn that failed is
    findable."""
    user: int
    """Closed loop: the virtual user (0 .. concurrency-1) that sent it. Open loop: the session
    (one arrival, a conversation of ``turns`` requests) it belongs to."""
    turn: int
    """The request's turn in its conversation (from 0)."""
    prompt: str
    """The exact prompt sent (unique per request with the default tag)."""
    started: float
    ended: float
    deadline: float
    """``started`` + the run timeout: the server must have answered (success or a typed error)
    by then. With no ``timeout`` in the plan, the agent's own timeout in process, else
    :data:`~axon.loadtest.workload.DEFAULT_TIMEOUT`."""
    outcome: str
    """``"ok"`` or the error's type: an Axon error type (``agent_crashed``, ``agent_timeout``,
    ``overloaded``, ...) or a client-side one (``server_unreachable``, ``connection_lost``,
    ``client_timeout`` when not even the deadline plus the grace brought an answer)."""
    output: Any = None
    """The reply's output (``ok`` only)."""
    error: str | None = None
    """The error's message (errors only)."""
    maybe_committed: bool = False
    """The error said the run may have been committed all the same (a ``store_unavailable``
    whose commit was sent but not confirmed): the history may hold this exchange."""
    scheduled: float | None = None
    """Open loop: when the request was due to start (``started - scheduled`` is the lag)."""
    token_times: tuple[float, ...] = field(default=(), repr=False)
    """Streamed runs: when each text chunk arrived."""

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def ttft(self) -> float | None:
        """Seconds from the start to the first text chunk (streamed runs that got one)."""
        return self.token_times[0] - self.started if self.token_times else None

    @property
    def token_gaps(self) -> list[float]:
        """Seconds between consecutive text chunks."""
        times = self.token_times
        return [b - a for a, b in itertools.pairwise(times)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as given, plus ``latency_s`` and ``ttft_s``)."""
        return {
            "index": self.index,
            "agent": self.agent,
            "conversation_id": self.conversation_id,
            "user": self.user,
            "turn": self.turn,
            "prompt": self.prompt,
            "scheduled": self.scheduled,
            "started": self.started,
            "ended": self.ended,
            "deadline": self.deadline,
            "outcome": self.outcome,
            "error": self.error,
            "maybe_committed": self.maybe_committed,
            "output": self.output,
            "latency_s": self.latency,
            "ttft_s": self.ttft,
        }


@dataclass
class LoadReport:
    """Everything a load run did: its records in the order they finished, and the counters of
    what never became a record."""

    mode: str
    """``"closed"`` (``concurrency`` users) or ``"open"`` (``rate`` arrivals per second)."""
    started: float
    """Monotonic time the load began."""
    ended: float
    """Monotonic time the last request finished."""
    records: list[RequestRecord] = field(default_factory=list)
    missed: int = 0
    """Open loop: arrivals not sent because ``max_in_flight`` requests were already in flight
    when they were due (each would have been one session)."""

    @property
    def duration(self) -> float:
        return max(self.ended - self.started, 0.0)
