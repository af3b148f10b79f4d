"""Snapshots of agents and their workers, as ``axon.agents()`` returns them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AgentStatus", "ExitRecord", "Readiness", "WorkerStatus"]


@dataclass(frozen=True)
class ExitRecord:
    """One exit of a worker process."""

    at: float
    """Wall-clock time (``time.time()``) of the exit."""
    worker: int
    pid: int | None
    exit_code: int | None
    signal: int | None
    reason: str | None
    during_startup: bool
    cause: str = "crashed"
    """How the exit is counted: ``requested``, ``crashed``, ``exited``, ``startup_failed``,
    ``spawn_failed``, or why Axon killed it (``hung``, ``ignored_cancel``, ``startup_timeout``,
    ``protocol``, ``connection_lost``)."""


@dataclass(frozen=True)
class WorkerStatus:
    index: int
    pid: int | None
    state: str
    generation: int
    restarts: int
    in_flight: int
    last_exit: ExitRecord | None


@dataclass(frozen=True)
class AgentStatus:
    id: str
    state: str
    restarts: int
    workers: list[WorkerStatus] = field(default_factory=list)
    recent_exits: list[ExitRecord] = field(default_factory=list)
    queued: int = 0
    """Requests waiting in the agent's queue for a free worker slot."""

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.workers)

    @property
    def serving(self) -> bool:
        return any(w.state == "running" for w in self.workers)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "in_flight": self.in_flight}


@dataclass(frozen=True)
class Readiness:
    """Whether the runtime can serve requests now (``/readyz``)."""

    ready: bool
    store_error: str | None
    """Why the store did not answer, or None if it did."""
    agents: dict[str, str]
    """Every agent's state."""
    not_serving: list[str]
    """Agents that are not FAILED but have no RUNNING worker yet (starting, restarting)."""
