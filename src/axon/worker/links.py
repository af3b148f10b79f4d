"""The link between the orchestrator and a worker, and a way to interpose on it.

A worker connects to its handle's Unix socket (:class:`~axon.worker.process.WorkerProcess`).
A :class:`WorkerLinks` given to the runtime (``Axon(..., worker_links=...)``) is asked, at every
worker start, for the path the worker connects to instead: a relay in front of the handle's
socket that can delay, slice, cut or blackhole the traffic (``axon.testing.link_relay``). This
exists for fault injection (``axon chaos``, tests); a runtime without one is not affected in any
way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

__all__ = ["WorkerLink", "WorkerLinks"]


class WorkerLink(Protocol):
    """One worker's interposed link."""

    @property
    def path(self) -> Path:
        """The Unix socket the worker connects to; it leads to the handle's socket."""
        ...

    async def aclose(self) -> None:
        """The worker's process is gone: release the link."""
        ...


class WorkerLinks(Protocol):
    """Makes a :class:`WorkerLink` for each worker start."""

    async def open(self, agent_id: str, index: int, generation: int, target: Path) -> WorkerLink:
        """A link for worker ``index`` (``generation``) of ``agent_id`` to ``target``, the
        handle's socket, which is already listening."""
        ...
