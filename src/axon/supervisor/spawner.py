"""What the supervisor needs of a worker and of whatever makes workers: the seam between the
supervision driver (:mod:`axon.supervisor.supervisor`) and the processes (:mod:`axon.pool`).

The runtime gives each supervisor a :class:`Spawner`; :class:`axon.pool.spawner.ProcessSpawner`
makes real worker processes (forked from a warm zygote, or cold). Tests give a fake one, so the
driver's decisions (restart or stop, backoff, FAILED while workers are still stopping, a manual
restart racing a crash) run in milliseconds without a process; ``axon chaos`` wraps the real one
to interpose on every worker's link and arm fault signals in the workers it targets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

from axon.config import AgentSpec, SupervisorSpec
from axon.exits import Exit, KillCause
from axon.observability.events import EventBus

if TYPE_CHECKING:
    from axon.run_call import RunCall, RunRequest

__all__ = ["Spawner", "WorkerHandle"]


class WorkerHandle(Protocol):
    """One worker, from its spawn to its exit (:class:`axon.pool.process.WorkerProcess`)."""

    index: int
    generation: int
    pid: int | None
    ready: asyncio.Future[None]
    """Resolves when the worker can serve (it is never RUNNING before that); fails if it ends
    first."""
    startup_seconds: float | None
    start: Literal["fork", "cold"]

    @property
    def in_flight(self) -> int: ...

    @property
    def serving(self) -> bool:
        """Ready, not stopping, not dead: it may be given runs."""
        ...

    async def run(self) -> Exit:
        """The worker's whole life: spawn, serve, and how it ended. Never raises but for
        cancellation (which kills it)."""
        ...

    async def stop(self, timeout: float | None = None) -> None:
        """Stop politely, escalating to a kill; return once it is gone."""
        ...

    def kill(self, reason: str, cause: KillCause | None = None) -> None: ...

    def start_run(self, request: RunRequest) -> RunCall:
        """Send it a run now (no await); ``WorkerGone`` if its connection is already closed."""
        ...

    def cancel_run(self, call: RunCall) -> None:
        """Ask it to cancel ``call``; it is killed if it does not in time."""
        ...


class Spawner(Protocol):
    """Makes the workers of every agent of one runtime."""

    def start(self, events: EventBus) -> None:
        """The runtime starts; what the workers do is logged on ``events`` (e.g. the fork
        server's zygotes begin to warm up)."""
        ...

    async def aclose(self) -> None:
        """The runtime stopped (every worker is gone): release what :meth:`start` made."""
        ...

    async def reset(self, agent_id: str) -> None:
        """The agent is restarted by hand: its next workers must load its code afresh."""
        ...

    def worker(
        self,
        spec: AgentSpec,
        supervision: SupervisorSpec,
        *,
        index: int,
        generation: int,
        on_capacity: Callable[[], None],
        on_load: Callable[[], None],
    ) -> WorkerHandle:
        """A handle for worker ``index`` (``generation``) of ``spec``, not started yet (the
        supervisor awaits its ``run()``). ``on_capacity``: called when its free slots or
        readiness change; ``on_load``: when a run takes one of its slots."""
        ...
