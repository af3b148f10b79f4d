"""The async driver of one agent's supervision: its pool of worker processes.

Decisions are the pure functions of :mod:`axon.supervisor.policy`; states and their legal
edges are in :mod:`axon.supervisor.states`. This module only applies them: it starts workers,
reacts to their exits, schedules restarts after a backoff, gives up (FAILED) past the restart
intensity, and recovers after a cool-down or a manual restart.

Strategies apply within one agent's workers (a crash never touches another agent, which is the
isolation guarantee): ``one_for_one`` restarts the worker that died, ``one_for_all`` all of the
agent's workers, ``rest_for_one`` the one that died and those started after it.

What happens when worker *i* exits unexpectedly::

    should_restart(restart type, exit)?  no  -> slot STOPPED
       | yes
    intensity.record(now)?               no  -> agent FAILED: stop every worker, cool-down timer
       | yes
    delay = backoff_delay(restarts in window)
    for j in children_to_restart(strategy, n, i): stop j if alive, then BACKOFF(delay) -> STARTING

Cancellation contract: every task this supervisor starts lives in the task set it is given;
``stop()`` stops workers in reverse start order and returns when they are all gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from axon._tasks import TaskSet
from axon.config import AgentSpec, SupervisorSpec
from axon.exits import Exit
from axon.observability.events import EventBus
from axon.status import AgentStatus, WorkerStatus
from axon.supervisor.policy import (
    RestartIntensity,
    backoff_delay,
    children_to_restart,
    should_restart,
)
from axon.supervisor.spawner import Spawner, WorkerHandle
from axon.supervisor.states import (
    AGENT_TRANSITIONS,
    WORKER_TRANSITIONS,
    AgentState,
    StateCell,
    WorkerState,
)

__all__ = ["AgentSupervisor"]

_RECENT_EXITS = 20
_DEFAULT_STARTUP_ESTIMATE = 1.5


@dataclass(eq=False)
class _Slot:
    """One worker position of the pool; its process is replaced on every restart."""

    index: int
    state: StateCell[WorkerState]
    worker: WorkerHandle | None = None
    task: asyncio.Task[None] | None = None
    timer: asyncio.Task[None] | None = None
    planned: Literal["restart", "stop"] | None = None
    planned_delay: float = 0.0
    start_at: float = 0.0
    generation: int = 0
    restarts: int = 0
    last_exit: Exit | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class AgentSupervisor:
    """Supervises the worker processes of one agent (see module docstring)."""

    def __init__(
        self,
        spec: AgentSpec,
        supervision: SupervisorSpec,
        *,
        spawner: Spawner,
        tasks: TaskSet,
        on_capacity: Callable[[], None] = lambda: None,
        events: EventBus | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """``spawner`` makes the worker processes; ``clock`` and ``sleep`` are the time the
        restart intensity, backoffs and cool-downs are measured in (a virtual clock in
        tests)."""
        self.spec = spec
        self.supervision = supervision
        self._tasks = tasks
        self._on_capacity = on_capacity
        self._events = events or EventBus()
        self._spawner = spawner
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._intensity = RestartIntensity(supervision.max_restarts, supervision.max_seconds)
        self.state = StateCell(AgentState.STOPPED, AGENT_TRANSITIONS, clock)
        self.state.subscribe(self._on_agent_change)
        self._slots = [
            _Slot(i, StateCell(WorkerState.STOPPED, WORKER_TRANSITIONS, clock))
            for i in range(spec.workers)
        ]
        self._change_waiters: list[asyncio.Future[None]] = []
        for slot in self._slots:
            slot.state.subscribe(lambda _change: self._notify_change())
        self._settled = asyncio.Event()
        self._cooldown: asyncio.Task[None] | None = None
        self._cooldown_until = 0.0
        self._stopping = False
        self.restarts = 0
        self.recent_exits: deque[Exit] = deque(maxlen=_RECENT_EXITS)

    # -- queries used by the router ------------------------------------------------------------

    def workers(self) -> list[WorkerHandle]:
        """The worker processes that can take runs now (none once the agent is FAILED, even
        if the workers it is stopping have not been told yet)."""
        if self.state.state is AgentState.FAILED:
            return []
        return [
            s.worker
            for s in self._slots
            if s.state.state is WorkerState.RUNNING and s.worker is not None and s.worker.serving
        ]

    def worker_at(self, index: int) -> WorkerHandle | None:
        """The current process of worker slot ``index`` (None between restarts)."""
        return self._slots[index].worker

    def retry_after(self) -> float:
        """A fair guess of when this agent will serve again."""
        now = self._clock()
        if self.state.state is AgentState.FAILED:
            return max(self._cooldown_until - now, 0.0) + self._startup_estimate()
        waits = [
            max(s.start_at - now, 0.0) for s in self._slots if s.state.state is WorkerState.BACKOFF
        ]
        return (max(waits) if waits else 0.0) + self._startup_estimate()

    def _startup_estimate(self) -> float:
        seen = [
            s.worker.startup_seconds for s in self._slots if s.worker and s.worker.startup_seconds
        ]
        return max(seen) if seen else _DEFAULT_STARTUP_ESTIMATE

    def status(self) -> AgentStatus:
        workers = [
            WorkerStatus(
                index=s.index,
                pid=s.worker.pid if s.worker else None,
                state=s.state.state.value,
                generation=s.generation,
                restarts=s.restarts,
                in_flight=s.worker.in_flight if s.worker else 0,
                last_exit=s.last_exit,
            )
            for s in self._slots
        ]
        return AgentStatus(
            id=self.spec.id,
            state=self.state.state.value,
            restarts=self.restarts,
            workers=workers,
            recent_exits=list(self.recent_exits),
        )

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; it is re-checked at every agent or worker state
        change and whenever a worker's capacity changes (a run started or ended), so a
        predicate on ``in_flight`` works too (callers bound the wait with their own timeout)."""
        while not predicate():
            waiter = asyncio.get_running_loop().create_future()
            self._change_waiters.append(waiter)
            await waiter

    def _worker_capacity_changed(self) -> None:
        """A worker's run count or readiness changed: wake ``wait_for`` and the router."""
        self._notify_change()
        self._on_capacity()

    def _notify_change(self) -> None:
        waiters, self._change_waiters = self._change_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_settled(self) -> AgentState:
        """Wait until the agent is RUNNING, FAILED or STOPPED; return that state."""
        await self._settled.wait()
        return self.state.state

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker (from STOPPED or FAILED)."""
        self._stopping = False
        self.state.change(AgentState.STARTING)
        for slot in self._slots:
            if slot.state.state is WorkerState.STOPPED:
                self._launch(slot)
            elif slot.state.state is WorkerState.STOPPING and slot.planned == "stop":
                # Still being stopped because the agent just FAILED (a manual restart came
                # before it was gone): start it again as soon as it has exited.
                slot.planned = "restart"
                slot.planned_delay = 0.0

    async def stop(self) -> None:
        """Stop every worker politely, in reverse start order; return when all are gone."""
        self._stopping = True
        self._cancel_cooldown()
        if self.state.state in (AgentState.STOPPED, AgentState.STOPPING):
            await self._wait_all_exited()
            return
        self.state.change(AgentState.STOPPING)
        for slot in reversed(self._slots):
            await self._stop_slot(slot, "stop")
        await self._wait_all_exited()
        self.state.change(AgentState.STOPPED)

    async def restart(self) -> AgentState:
        """Restart by hand: from FAILED/STOPPED start afresh, otherwise cycle every worker.
        A no-op while the agent is being stopped for good."""
        if self._stopping:
            return self.state.state
        await self._spawner.reset(self.spec.id)
        if self.state.state in (AgentState.FAILED, AgentState.STOPPED):
            self._cancel_cooldown()
            self._intensity.reset()
            self.start()
        else:
            if self.state.state is not AgentState.STARTING:
                self._set_agent(AgentState.RESTARTING)
            for slot in reversed(self._slots):
                await self._stop_slot(slot, "restart", delay=0.0)
        self._settled.clear()
        self._update_agent_state()
        return await self.wait_settled()

    # -- internals --------------------------------------------------------------------------

    def _launch(self, slot: _Slot) -> None:
        slot.generation += 1
        slot.exited.clear()
        worker = self._spawner.worker(
            self.spec,
            self.supervision,
            index=slot.index,
            generation=slot.generation,
            on_capacity=self._worker_capacity_changed,
            on_load=self._notify_change,
        )
        slot.worker = worker
        slot.state.change(WorkerState.STARTING)
        worker.ready.add_done_callback(lambda fut: self._worker_ready(slot, worker, fut))
        slot.task = self._tasks.create_task(self._run_worker(slot, worker))

    async def _run_worker(self, slot: _Slot, worker: WorkerHandle) -> None:
        info = await worker.run()
        self._worker_exited(slot, info)

    def _worker_ready(self, slot: _Slot, worker: WorkerHandle, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None or slot.worker is not worker:
            return
        if slot.state.state is WorkerState.STARTING:
            slot.state.change(WorkerState.RUNNING, pid=worker.pid)
            self._update_agent_state()

    def _worker_exited(self, slot: _Slot, info: Exit) -> None:
        record = dataclasses.replace(info, at=time.time(), worker=slot.index)
        slot.last_exit = record
        if not info.requested:
            self.recent_exits.append(record)
        slot.state.change(WorkerState.EXITED, exit=info.describe())
        slot.exited.set()
        planned, slot.planned = slot.planned, None
        if planned == "stop" or self._stopping:
            slot.state.change(WorkerState.STOPPED)
        elif planned == "restart":
            self._schedule_start(slot, slot.planned_delay)
        else:
            self._handle_failure(slot, info)
        self._update_agent_state()

    def _handle_failure(self, slot: _Slot, info: Exit) -> None:
        if self.state.state is AgentState.FAILED:
            slot.state.change(WorkerState.STOPPED)
            return
        if not should_restart(self.spec.restart, info):
            slot.state.change(WorkerState.STOPPED)
            return
        now = self._clock()
        if not self._intensity.record(now):
            slot.state.change(WorkerState.STOPPED)
            self._fail()
            return
        attempt = self._intensity.count(now)
        delay = backoff_delay(
            attempt,
            initial=self.supervision.backoff_initial,
            maximum=self.supervision.backoff_max,
            rng=self._rng,
        )
        self.restarts += 1
        self._set_agent(AgentState.RESTARTING)
        for index in children_to_restart(self.supervision.strategy, len(self._slots), slot.index):
            sibling = self._slots[index]
            sibling.restarts += 1
            self._events.emit(
                "agent.restart",
                logging.WARNING,
                agent=self.spec.id,
                worker=index,
                attempt=attempt,
                delay_s=round(delay, 4),
                cause=info.describe(),
            )
            if sibling is slot or sibling.state.state is WorkerState.STOPPED:
                self._schedule_start(sibling, delay)
            elif (worker := self._begin_stop(sibling, "restart", delay)) is not None:
                self._tasks.create_task(worker.stop())

    def _fail(self) -> None:
        cooldown = self.supervision.failed_cooldown
        self._events.emit(
            "agent.failed",
            logging.ERROR,
            agent=self.spec.id,
            restarts=self.supervision.max_restarts,
            window_s=self.supervision.max_seconds,
            cooldown_s=cooldown,
        )
        if self.state.state is AgentState.RUNNING:
            # A worker of a RUNNING agent just died: the agent goes through RESTARTING (there
            # is no RUNNING -> FAILED edge), then gives up because the intensity is exceeded.
            self._set_agent(AgentState.RESTARTING)
        self._set_agent(AgentState.FAILED)
        for slot in self._slots:
            if slot.state.state is WorkerState.BACKOFF:
                self._cancel_timer(slot)
                slot.state.change(WorkerState.STOPPED)
            elif (worker := self._begin_stop(slot, "stop")) is not None:
                self._tasks.create_task(worker.stop())
        self._cooldown_until = self._clock() + cooldown
        self._cooldown = self._tasks.create_task(self._recover_after(cooldown))

    async def _recover_after(self, delay: float) -> None:
        await self._sleep(delay)
        self._cooldown = None
        await self._wait_all_exited()
        if self.state.state is AgentState.FAILED and not self._stopping:
            self._intensity.reset()
            self.start()

    def _schedule_start(self, slot: _Slot, delay: float) -> None:
        slot.state.change(WorkerState.BACKOFF, delay_s=delay)
        slot.start_at = self._clock() + delay
        slot.timer = self._tasks.create_task(self._start_after(slot, delay))

    async def _start_after(self, slot: _Slot, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)
        slot.timer = None
        if slot.state.state is WorkerState.BACKOFF and not self._stopping:
            self._launch(slot)
            self._update_agent_state()

    async def _stop_slot(
        self, slot: _Slot, planned: Literal["restart", "stop"], delay: float = 0.0
    ) -> None:
        state = slot.state.state
        if state is WorkerState.BACKOFF:
            self._cancel_timer(slot)
            if planned == "stop":
                slot.state.change(WorkerState.STOPPED)
            else:
                self._launch(slot)
            return
        if (worker := self._begin_stop(slot, planned, delay)) is not None:
            await worker.stop()

    def _begin_stop(
        self, slot: _Slot, planned: Literal["restart", "stop"], delay: float = 0.0
    ) -> WorkerHandle | None:
        """Mark a live worker STOPPING at once (so it takes no new run and a concurrent
        start()/restart() sees it), and return the process the caller must stop."""
        if slot.state.state not in (WorkerState.STARTING, WorkerState.RUNNING):
            return None
        if slot.worker is None:
            return None
        slot.planned = planned
        slot.planned_delay = delay
        slot.state.change(WorkerState.STOPPING, planned=planned)
        return slot.worker

    async def _wait_all_exited(self) -> None:
        for slot in self._slots:
            if slot.state.state in (
                WorkerState.STARTING,
                WorkerState.RUNNING,
                WorkerState.STOPPING,
            ):
                await slot.exited.wait()
            if slot.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(slot.task)

    def _cancel_timer(self, slot: _Slot) -> None:
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None

    def _cancel_cooldown(self) -> None:
        if self._cooldown is not None:
            self._cooldown.cancel()
            self._cooldown = None

    def _update_agent_state(self) -> None:
        """Derive RUNNING / RESTARTING / STOPPED from the slots (FAILED and STOPPING are set
        explicitly and left alone here)."""
        current = self.state.state
        if current in (AgentState.FAILED, AgentState.STOPPING, AgentState.STOPPED):
            return
        active = [s for s in self._slots if s.state.state is not WorkerState.STOPPED]
        if not active:
            self._set_agent(AgentState.STOPPED)
        elif all(s.state.state is WorkerState.RUNNING for s in active):
            self._set_agent(AgentState.RUNNING)
        elif current is AgentState.RUNNING:
            self._set_agent(AgentState.RESTARTING)

    def _set_agent(self, target: AgentState) -> None:
        if self.state.state is not target:
            self.state.change(target)

    def _on_agent_change(self, change: object) -> None:
        state = self.state.state
        self._events.emit(
            "agent.state",
            logging.INFO,
            agent=self.spec.id,
            previous=getattr(change, "previous", None),
            state=state.value,
        )
        if state in (AgentState.RUNNING, AgentState.FAILED, AgentState.STOPPED):
            self._settled.set()
        else:
            self._settled.clear()
        self._notify_change()
        self._on_capacity()
