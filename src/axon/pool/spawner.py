"""Worker processes for the supervisors: :class:`ProcessSpawner`, the runtime's
:class:`~axon.supervisor.spawner.Spawner`.

Each worker is a :class:`~axon.pool.process.WorkerProcess`: forked from its agent's warm zygote
when the fork server can (``runtime.fork_server``, Linux), else started cold. ``links`` (fault
injection only) interposes a relay on every worker's connection.
"""

from __future__ import annotations

from collections.abc import Callable

from axon.config import AgentSpec, SupervisorSpec
from axon.observability.events import EventBus
from axon.pool.fork_server import FORK_SUPPORTED, ForkServer
from axon.pool.links import WorkerLinks
from axon.pool.process import WorkerProcess

__all__ = ["ProcessSpawner"]


class ProcessSpawner:
    """Makes worker processes; see the module docstring."""

    def __init__(self, *, fork_server: bool = True, links: WorkerLinks | None = None) -> None:
        self._use_fork_server = fork_server and FORK_SUPPORTED
        self._fork_server: ForkServer | None = None
        self._events = EventBus()
        self.links = links

    def start(self, events: EventBus) -> None:
        self._events = events
        if self._use_fork_server and self._fork_server is None:
            self._fork_server = ForkServer(events)
            self._fork_server.start()

    async def aclose(self) -> None:
        if self._fork_server is not None:
            await self._fork_server.close()
            self._fork_server = None

    async def reset(self, agent_id: str) -> None:
        if self._fork_server is not None:
            # New workers come from a new zygote, which imports the agent's code afresh.
            await self._fork_server.reset(agent_id)

    def worker(
        self,
        spec: AgentSpec,
        supervision: SupervisorSpec,
        *,
        index: int,
        generation: int,
        on_capacity: Callable[[], None],
        on_load: Callable[[], None],
    ) -> WorkerProcess:
        return WorkerProcess(
            spec,
            supervision,
            index=index,
            generation=generation,
            on_capacity=on_capacity,
            on_load=on_load,
            events=self._events,
            links=self.links,
            fork_server=self._fork_server,
        )
