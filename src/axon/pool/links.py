"""The link between the orchestrator and a worker, and a way to interpose on it.

A worker's connection to the orchestrator is a socket pair: the orchestrator keeps one end
(:class:`~axon.pool.process.WorkerProcess`) and the worker process gets the other. A
:class:`WorkerLinks` given to the spawner (``ProcessSpawner(links=...)``, as ``axon chaos``'s
spawner does) is asked, at every worker start, to take over the worker's end and hand back the
socket the worker gets instead: a relay between the two that can delay, slice, cut or blackhole
the traffic (``axon.chaos.link_relay``). This exists for fault injection (``axon chaos``,
tests); a runtime without one is not affected in any way.
"""

from __future__ import annotations

import socket
from typing import Protocol

__all__ = ["WorkerLink", "WorkerLinks"]


class WorkerLink(Protocol):
    """One worker's interposed link."""

    @property
    def worker_socket(self) -> socket.socket:
        """The socket the worker process gets; it leads to the orchestrator's end. The caller
        closes it once the process has its own copy."""
        ...

    async def aclose(self) -> None:
        """The worker's process is gone: release the link."""
        ...


class WorkerLinks(Protocol):
    """Makes a :class:`WorkerLink` for each worker start."""

    async def open(
        self, agent_id: str, index: int, generation: int, worker_end: socket.socket
    ) -> WorkerLink:
        """A link for worker ``index`` (``generation``) of ``agent_id``. It takes over
        ``worker_end``, the socket the worker would have had (the orchestrator's end is at its
        other side), and relays it to the :attr:`WorkerLink.worker_socket` it returns."""
        ...
