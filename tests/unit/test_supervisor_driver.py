"""The supervision driver (``AgentSupervisor``) on a fake spawner and a virtual clock: what it
decides when workers become ready, die, are stopped or restarted, and when its timers fire, with
no process and no real time (docs/supervision.md). The same driver on real processes:
tests/integration/test_supervisor_stateful.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import pytest

from axon._tasks import TaskSet
from axon.config import AgentSpec, SupervisorSpec
from axon.errors import StartupFailed
from axon.exits import Exit, KillCause
from axon.observability.events import EventBus
from axon.supervisor.policy import RestartType, Strategy
from axon.supervisor.supervisor import AgentSupervisor
from axon.testing.clock import FakeClock

_pids = itertools.count(1000)


class FakeWorker:
    """A worker the test drives: it becomes ready, dies or finishes stopping when told."""

    def __init__(self, index: int, generation: int, on_capacity: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self.generation = generation
        self.pid: int | None = next(_pids)
        self.ready: asyncio.Future[None] = loop.create_future()
        self.startup_seconds: float | None = None
        self.start: Literal["fork", "cold"] = "fork"
        self.stop_requested = False
        self.killed: str | None = None
        self._exit: asyncio.Future[Exit] = loop.create_future()
        self._on_capacity = on_capacity

    # -- what the supervisor uses -----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return 0

    @property
    def serving(self) -> bool:
        return self.ready.done() and not self.stop_requested and not self._exit.done()

    async def run(self) -> Exit:
        return await self._exit

    async def stop(self, timeout: float | None = None) -> None:
        self.stop_requested = True
        await asyncio.shield(self._exit)

    def kill(self, reason: str, cause: KillCause | None = None) -> None:
        self.killed = reason
        self.die(signal=9, cause=cause or "crashed")

    def start_run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def cancel_run(self, call: Any) -> None:
        raise NotImplementedError

    # -- what the test does -----------------------------------------------------------------

    def become_ready(self) -> None:
        self.ready.set_result(None)
        self._on_capacity()

    def die(self, *, code: int | None = None, signal: int | None = None, cause: str = "") -> None:
        """The process ends (after a requested stop: it counts as requested)."""
        if self._exit.done():
            return
        was_ready = self.ready.done() and self.ready.exception() is None
        if not self.ready.done():
            self.ready.set_exception(StartupFailed("died during start-up"))
            self.ready.exception()
        requested = self.stop_requested
        how: Any = cause or (
            "requested" if requested else "crashed" if was_ready else "startup_failed"
        )
        self._exit.set_result(
            Exit(
                code=code,
                signal=signal,
                requested=requested,
                cause=how,
                was_ready=was_ready,
                pid=self.pid,
            )
        )

    def finish_stop(self) -> None:
        """A worker asked to stop exits (code 0)."""
        assert self.stop_requested
        self.die(code=0)


class FakeSpawner:
    def __init__(self) -> None:
        self.made: list[FakeWorker] = []
        self.resets: list[str] = []

    def start(self, events: EventBus) -> None: ...

    async def aclose(self) -> None: ...

    async def reset(self, agent_id: str) -> None:
        self.resets.append(agent_id)

    def worker(
        self,
        spec: AgentSpec,
        supervision: SupervisorSpec,
        *,
        index: int,
        generation: int,
        on_capacity: Callable[[], None],
        on_load: Callable[[], None],
    ) -> FakeWorker:
        worker = FakeWorker(index, generation, on_capacity)
        self.made.append(worker)
        return worker

    def current(self, index: int) -> FakeWorker:
        return [w for w in self.made if w.index == index][-1]


class Rig:
    """A supervisor on a fake spawner and a virtual clock."""

    def __init__(self, supervisor: AgentSupervisor, spawner: FakeSpawner, clock: FakeClock):
        self.supervisor = supervisor
        self.spawner = spawner
        self.clock = clock

    @property
    def state(self) -> str:
        return self.supervisor.state.state.value

    def workers(self) -> list[str]:
        return [w.state for w in self.supervisor.status().workers]

    def worker(self, index: int) -> FakeWorker:
        return self.spawner.current(index)

    async def settle(self) -> None:
        """Let every task the last step woke run to its next wait."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        await self.settle()  # timers started by the last step are set before time moves
        self.clock.advance(seconds)
        await self.settle()

    async def all_ready(self) -> None:
        for slot in range(len(self.workers())):
            worker = self.worker(slot)
            if not worker.ready.done():
                worker.become_ready()
        await self.settle()


SUPERVISION = SupervisorSpec(
    max_restarts=3,
    max_seconds=10.0,
    backoff_initial=0.1,
    backoff_max=1.0,
    failed_cooldown=30.0,
    shutdown_timeout=1.0,
)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Any]]:
    tasks = TaskSet("test", EventBus())
    made: list[Rig] = []

    async def make_rig(workers: int = 1, **spec: Any) -> Rig:
        supervision = spec.pop("supervision", SUPERVISION)
        clock = FakeClock(100.0)
        spawner = FakeSpawner()
        supervisor = AgentSupervisor(
            AgentSpec(
                id="a", agent="axon.examples.misbehaving:misbehaving_agent", workers=workers, **spec
            ),
            supervision,
            spawner=spawner,
            tasks=tasks,
            clock=clock,
            sleep=clock.sleep,
        )
        rig = Rig(supervisor, spawner, clock)
        made.append(rig)
        supervisor.start()
        await rig.settle()
        return rig

    yield make_rig
    for rig in made:  # nothing may be left running: stop finishes every fake at once
        for worker in rig.spawner.made:
            worker.stop_requested = True
            worker.die(code=0)
    await tasks.aclose()


async def test_a_worker_is_running_only_once_it_says_ready(make: Any) -> None:
    rig = await make(workers=2)
    assert (rig.state, rig.workers()) == ("starting", ["starting", "starting"])
    rig.worker(0).become_ready()
    await rig.settle()
    assert (rig.state, rig.workers()) == ("starting", ["running", "starting"])
    rig.worker(1).become_ready()
    await rig.settle()
    assert (rig.state, rig.workers()) == ("running", ["running", "running"])
    assert [w.generation for w in rig.spawner.made] == [1, 1]


async def test_a_crash_is_restarted_after_its_backoff_on_the_virtual_clock(make: Any) -> None:
    rig = await make()
    await rig.all_ready()
    first = rig.worker(0)
    first.die(signal=9)
    await rig.settle()
    assert (rig.state, rig.workers()) == ("restarting", ["backoff"])
    assert len(rig.spawner.made) == 1  # nothing happens until the backoff has passed
    await rig.advance(0.04)
    assert len(rig.spawner.made) == 1
    await rig.advance(0.07)  # past the first backoff (0.1 s, jittered down by at most half)
    assert rig.workers() == ["starting"]
    second = rig.worker(0)
    assert (second.generation, second is not first) == (2, True)
    second.become_ready()
    await rig.settle()
    status = rig.supervisor.status()
    assert (status.state, status.restarts, status.workers[0].restarts) == ("running", 1, 1)
    assert status.recent_exits[-1].signal == 9
    assert status.recent_exits[-1].pid == first.pid
    assert status.workers[0].last_exit is status.recent_exits[-1]


async def test_backoff_doubles_with_each_crash_in_the_window(make: Any) -> None:
    rig = await make(supervision=SUPERVISION.model_copy(update={"max_restarts": 10}))
    await rig.all_ready()
    delays = []
    for _ in range(4):
        rig.worker(0).die(code=1)
        await rig.settle()
        waited = 0.0
        while rig.workers() == ["backoff"]:
            await rig.advance(0.01)
            waited += 0.01
        delays.append(waited)
        await rig.all_ready()
    # 0.1, 0.2, 0.4, 0.8 s, each jittered down by at most half (in steps of 0.01 s)
    for attempt, waited in enumerate(delays):
        assert 0.1 * 2**attempt * 0.5 - 0.01 <= waited <= 0.1 * 2**attempt + 0.02


async def test_past_the_intensity_the_agent_fails_then_recovers_after_its_cooldown(
    make: Any,
) -> None:
    rig = await make()
    await rig.all_ready()
    for _ in range(3):  # three restarts are allowed in 10 s
        rig.worker(0).die(code=1)
        await rig.advance(1.0)
        await rig.all_ready()
    assert rig.state == "running"
    rig.worker(0).die(code=1)  # the fourth in the window: FAILED
    await rig.settle()
    assert (rig.state, rig.workers()) == ("failed", ["stopped"])
    assert rig.supervisor.workers() == []
    assert 30.0 <= rig.supervisor.retry_after() <= 30.0 + 1.5
    made = len(rig.spawner.made)
    await rig.advance(29.0)
    assert (rig.state, len(rig.spawner.made)) == ("failed", made)
    await rig.advance(1.5)  # the cool-down is over: started afresh, the window reset
    assert rig.workers() == ["starting"]
    await rig.all_ready()
    assert rig.state == "running"
    rig.worker(0).die(code=1)
    await rig.settle()
    assert rig.state == "restarting"  # a fresh intensity window: restarted, not FAILED


async def test_failed_with_a_worker_still_stopping_then_a_manual_restart(make: Any) -> None:
    """FAILED stops every worker; a worker slow to stop is restarted by a manual restart only
    once it has exited, never twice, and the agent runs again."""
    rig = await make(workers=2, supervision=SUPERVISION.model_copy(update={"max_restarts": 0}))
    await rig.all_ready()
    slow = rig.worker(1)
    rig.worker(0).die(code=1)  # no restart allowed: FAILED at once
    await rig.settle()
    assert rig.state == "failed"
    assert slow.stop_requested
    assert rig.workers() == ["stopped", "stopping"]
    restarting = asyncio.ensure_future(rig.supervisor.restart())
    await rig.settle()
    assert rig.workers() == ["starting", "stopping"]  # slot 0 starts; slot 1 waits its exit
    assert len(rig.spawner.made) == 3
    slow.finish_stop()
    await rig.settle()
    assert rig.workers() == ["starting", "starting"]
    assert len(rig.spawner.made) == 4
    await rig.all_ready()
    assert await asyncio.wait_for(restarting, 1) == "running"
    assert rig.spawner.resets == ["a"]


async def test_one_for_all_restarts_every_worker_when_one_dies(make: Any) -> None:
    rig = await make(
        workers=3, supervision=SUPERVISION.model_copy(update={"strategy": Strategy.ONE_FOR_ALL})
    )
    await rig.all_ready()
    siblings = [rig.worker(0), rig.worker(2)]
    rig.worker(1).die(signal=11)
    await rig.settle()
    assert all(w.stop_requested for w in siblings)
    assert rig.workers() == ["stopping", "backoff", "stopping"]
    for sibling in siblings:
        sibling.finish_stop()
    await rig.advance(1.0)
    assert rig.workers() == ["starting", "starting", "starting"]
    await rig.all_ready()
    status = rig.supervisor.status()
    assert status.restarts == 1  # one decision...
    assert [w.restarts for w in status.workers] == [1, 1, 1]  # ...restarting every worker


async def test_rest_for_one_restarts_the_dead_worker_and_those_started_after_it(make: Any) -> None:
    rig = await make(
        workers=3, supervision=SUPERVISION.model_copy(update={"strategy": Strategy.REST_FOR_ONE})
    )
    await rig.all_ready()
    first = rig.worker(0)
    rig.worker(1).die(code=1)
    await rig.settle()
    assert not first.stop_requested
    assert rig.workers() == ["running", "backoff", "stopping"]


@pytest.mark.parametrize(
    ("restart", "code", "restarted"),
    [
        (RestartType.PERMANENT, 0, True),
        (RestartType.TRANSIENT, 0, False),
        (RestartType.TRANSIENT, 1, True),
        (RestartType.TEMPORARY, 1, False),
    ],
)
async def test_the_restart_type_decides_what_an_exit_does(
    make: Any, restart: RestartType, code: int, restarted: bool
) -> None:
    rig = await make(restart=restart)
    await rig.all_ready()
    rig.worker(0).die(code=code)
    await rig.settle()
    assert rig.workers() == (["backoff"] if restarted else ["stopped"])
    assert rig.state == ("restarting" if restarted else "stopped")


async def test_a_death_during_startup_counts_toward_the_intensity(make: Any) -> None:
    rig = await make(supervision=SUPERVISION.model_copy(update={"max_restarts": 1}))
    rig.worker(0).die(code=3)  # never ready
    await rig.advance(1.0)
    assert rig.workers() == ["starting"]
    rig.worker(0).die(code=3)
    await rig.settle()
    assert rig.state == "failed"
    assert [e.during_startup for e in rig.supervisor.status().recent_exits] == [True, True]


async def test_stop_stops_every_worker_in_reverse_order_and_restarts_none(make: Any) -> None:
    rig = await make(workers=3)
    await rig.all_ready()
    workers = [rig.worker(i) for i in range(3)]
    stopping = asyncio.ensure_future(rig.supervisor.stop())
    await rig.settle()
    assert [w.stop_requested for w in workers] == [False, False, True]  # the last one first
    workers[2].finish_stop()
    await rig.settle()
    assert [w.stop_requested for w in workers] == [False, True, True]
    workers[1].die(signal=9)  # dies on its own while being stopped: still not restarted
    workers[0].stop_requested = True
    workers[0].die(code=0)
    await asyncio.wait_for(stopping, 1)
    assert (rig.state, rig.workers()) == ("stopped", ["stopped", "stopped", "stopped"])
    assert len(rig.spawner.made) == 3


async def test_a_manual_restart_during_a_backoff_starts_the_worker_at_once(make: Any) -> None:
    rig = await make(
        supervision=SUPERVISION.model_copy(update={"backoff_initial": 5.0, "backoff_max": 5.0})
    )
    await rig.all_ready()
    rig.worker(0).die(code=1)
    await rig.settle()
    assert rig.workers() == ["backoff"]
    restarting = asyncio.ensure_future(rig.supervisor.restart())
    await rig.settle()
    assert rig.workers() == ["starting"]  # no waiting for the 5 s backoff
    await rig.all_ready()
    assert await asyncio.wait_for(restarting, 1) == "running"
    await rig.advance(10.0)  # the cancelled backoff timer starts nothing more
    assert len(rig.spawner.made) == 2
