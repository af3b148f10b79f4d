"""The worker processes of a chaos run: :class:`ChaosSpawner` makes them like the runtime's own
spawner does, and also interposes a relay on every worker's link (``cut``, ``truncate``,
``slow`` strike through :class:`~axon.chaos.link_relay.FaultyLinks`) and arms fault signals
(:mod:`axon.worker.faults`: ``raise``, ``stall``) in the workers of the agents it targets. Nothing
of this is in the runtime's own path: a runtime gets it only when ``axon chaos`` gives it this
spawner.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from axon.chaos.link_relay import FaultyLinks
from axon.config import AgentSpec, SupervisorSpec
from axon.observability.events import EventBus
from axon.pool.process import WorkerProcess
from axon.pool.spawner import ProcessSpawner
from axon.worker.faults import ENV_VAR as FAULT_SIGNALS

__all__ = ["ChaosSpawner"]


class ChaosSpawner:
    """A :class:`~axon.pool.spawner.ProcessSpawner` whose workers talk through ``links`` and,
    for the agents in ``fault_signals``, take fault signals."""

    def __init__(
        self,
        links: FaultyLinks,
        *,
        fault_signals: Collection[str] = (),
        fork_server: bool = True,
    ) -> None:
        self.links = links
        self._fault_signals = frozenset(fault_signals)
        self._inner = ProcessSpawner(fork_server=fork_server, links=links)

    def start(self, events: EventBus) -> None:
        self._inner.start(events)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def reset(self, agent_id: str) -> None:
        await self._inner.reset(agent_id)

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
        if spec.id in self._fault_signals:
            spec = spec.model_copy(update={"env": {**spec.env, FAULT_SIGNALS: "1"}})
        return self._inner.worker(
            spec,
            supervision,
            index=index,
            generation=generation,
            on_capacity=on_capacity,
            on_load=on_load,
        )
