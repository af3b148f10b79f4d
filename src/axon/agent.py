"""One configured agent of a runtime: :class:`Agent` owns its supervisor (the pool of worker
processes, their restarts) and its router (which worker takes a run; the bounded admission
queue), and is what the runtime, the HTTP edge's views, ``axon chaos`` and the testing helpers
use of an agent (``axon.hosted(agent_id)``).

Cancellation contract: :meth:`Agent.start_run` may be cancelled while it waits in the queue
(it leaves the queue); :meth:`Agent.wait_for` may be cancelled at any time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

from axon._tasks import TaskSet
from axon.config import AgentSpec, SupervisorSpec
from axon.observability.events import EventBus
from axon.router import AgentRouter
from axon.run_call import RunCall, RunRequest
from axon.status import AgentStatus
from axon.supervisor.spawner import Spawner, WorkerHandle
from axon.supervisor.states import AgentState
from axon.supervisor.supervisor import AgentSupervisor

__all__ = ["Agent"]


class Agent:
    """One agent of a runtime (see the module docstring)."""

    def __init__(
        self,
        spec: AgentSpec,
        supervision: SupervisorSpec,
        *,
        spawner: Spawner,
        tasks: TaskSet,
        events: EventBus,
    ) -> None:
        self.spec = spec
        self.id = spec.id
        self._supervisor = AgentSupervisor(
            spec,
            supervision,
            spawner=spawner,
            tasks=tasks,
            on_capacity=self._capacity_changed,
            events=events,
        )
        self._router = AgentRouter(self._supervisor)

    @property
    def supervisor(self) -> AgentSupervisor:
        """The agent's supervision driver (for tests of supervision itself)."""
        return self._supervisor

    def _capacity_changed(self) -> None:
        self._router.notify()

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker; :meth:`wait_serving` says when the agent is settled."""
        self._supervisor.start()

    async def stop(self) -> None:
        """Stop every worker politely (reverse order); return when all are gone."""
        await self._supervisor.stop()

    async def restart(self) -> AgentStatus:
        """Restart by hand (a FAILED agent starts afresh); its status once it is RUNNING
        again, or FAILED."""
        await self._supervisor.restart()
        return self.status()

    async def wait_serving(self) -> AgentState:
        """Wait until the agent is settled (RUNNING, FAILED or STOPPED); its state."""
        return await self._supervisor.wait_settled()

    # -- what it is doing -----------------------------------------------------------------------

    def status(self) -> AgentStatus:
        """The agent's state, its workers and its queue, now."""
        return dataclasses.replace(self._supervisor.status(), queued=self._router.queue_depth)

    @property
    def state(self) -> AgentState:
        return self._supervisor.state.state

    def workers(self) -> list[WorkerHandle]:
        """The workers that can take runs now."""
        return self._supervisor.workers()

    def worker_at(self, index: int) -> WorkerHandle | None:
        """The current process of worker slot ``index`` (None between restarts)."""
        return self._supervisor.worker_at(index)

    async def wait_for(self, predicate: Callable[[AgentStatus], bool]) -> AgentStatus:
        """Wait until ``predicate(status)`` holds, re-checked at every state change of the
        agent or its workers and whenever a worker's load changes; the status then. Bound it
        with your own timeout."""
        await self._supervisor.wait_for(lambda: predicate(self.status()))
        return self.status()

    async def wait_running(self, *, replaced: Collection[int] = ()) -> AgentStatus:
        """Wait until the agent is RUNNING with every worker running, none of them a process
        whose pid is in ``replaced`` (say, the workers a test just killed); the status then."""

        def running(status: AgentStatus) -> bool:
            return status.state == "running" and all(
                w.state == "running" and w.pid not in replaced for w in status.workers
            )

        return await self.wait_for(running)

    # -- runs -----------------------------------------------------------------------------------

    def check_available(self) -> None:
        """``AgentUnavailable`` (with a ``retry_after``) unless a worker is serving."""
        self._router.check_available()

    async def start_run(self, request: RunRequest) -> tuple[WorkerHandle, RunCall]:
        """Send the run to the least-loaded serving worker, waiting in the bounded queue for a
        free slot if need be (``Overloaded`` when it is full, ``AgentUnavailable`` when no
        worker serves)."""
        return await self._router.start_run(request)
