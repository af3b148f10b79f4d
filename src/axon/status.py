"""Snapshots of agents and their workers, as ``axon.agents()`` returns them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from axon.exits import Exit

__all__ = ["EXIT_FIELDS", "AgentStatus", "ExitRecord", "Readiness", "WorkerStatus"]


ExitRecord = Exit
"""One exit of a worker process (:class:`axon.exits.Exit`), the name the status has always
used: ``at``, ``worker``, ``pid``, ``exit_code``, ``signal``, ``reason``, ``during_startup``,
``cause``."""

EXIT_FIELDS = ("at", "worker", "pid", "exit_code", "signal", "reason", "during_startup", "cause")
"""What an exit shows of itself in a status (``to_dict``, ``GET /v1/agents``, the monitor)."""


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
        data = asdict(self)
        data["recent_exits"] = [_exit_dict(e) for e in self.recent_exits]
        for worker, status in zip(data["workers"], self.workers, strict=True):
            worker["last_exit"] = None if status.last_exit is None else _exit_dict(status.last_exit)
        return {**data, "in_flight": self.in_flight}


def _exit_dict(exit_: Exit) -> dict[str, Any]:
    return {name: getattr(exit_, name) for name in EXIT_FIELDS}


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
