"""The faults of ``axon chaos``, struck on a schedule: :class:`Injector` (see the fault table
in :mod:`axon.chaos.runner`).

Each fault strikes one running worker of a targeted agent, chosen at random (seeded), never one
already struck by a fault that kills it; a fault that finds every worker restarting waits for
one (up to its interval, at most a few seconds) and is skipped only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Callable, Collection

from axon.chaos.hostile import ATTACKS, HOSTILE_AGENT, Strike
from axon.chaos.invariants import OK, STORE, Fault
from axon.chaos.link_relay import FaultyLinks
from axon.chaos.tcp_relay import TcpRelay
from axon.chaos.timeline import StateChange
from axon.errors import AxonError
from axon.runtime import Axon
from axon.status import AgentStatus

__all__ = ["OUTAGE_FOR", "SLOW_DELAY", "SLOW_FOR", "STORM_KILLS", "Injector"]

STORM_KILLS = 6
"""Kills in one crash storm: more than the default restart intensity (5 in 10 s) allows."""
_STORM_WAIT = 10.0
_RETRY_FOR = 3.0
_EXPECTED_RESTARTS = {
    "kill": 1,
    "hang": 1,
    "cut": 1,
    "truncate": 1,
    "slow": 0,
    "raise": 0,
    "stall": 0,
}
SLOW_DELAY = 0.2
"""Seconds a ``slow`` fault adds to every chunk on a worker's link, for :data:`SLOW_FOR`."""
SLOW_FOR = 3.0
OUTAGE_FOR = 2.0
"""Seconds a store ``outage`` lasts."""
_STORE_POLL = 0.02
_LOST_COMMIT_WAIT = 0.5
_HOSTILE_TIMEOUT = 20.0


class Injector:
    """Strikes running workers of the targeted agents, one fault at a time."""

    def __init__(
        self,
        axon: Axon,
        links: FaultyLinks,
        store_relay: TcpRelay | None,
        targets: tuple[str, ...],
        rng: random.Random,
        on_fault: Callable[[Fault], None] | None,
        exit_cause: Callable[[int], str | None],
    ) -> None:
        self._axon = axon
        self._exit_cause = exit_cause
        self.strikes: list[Strike] = []
        self._links = links
        self._store_relay = store_relay
        self.store_changes: list[StateChange] = []
        """The store's "serving" history (agent :data:`STORE`): down at each outage, running
        again once it answers."""
        self._targets = targets
        self._rng = rng
        self._on_fault = on_fault
        self._struck: set[int] = set()
        self._stopped: set[int] = set()
        self.faults: list[Fault] = []
        self.skipped = 0

    async def every(self, kind: str, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            if kind == "storm":
                await self.storm()
                continue
            if kind == "outage":
                await self.outage()
                continue
            if kind == "hostile":
                await self.hostile()
                continue
            # A fault that finds every worker restarting waits for one (up to its interval, at
            # most a few seconds) rather than being lost: each kind must get to strike.
            try:
                async with asyncio.timeout(min(seconds, _RETRY_FOR)):
                    while self.strike(kind, count_skip=False) is None:
                        await self._axon_changed()
            except TimeoutError:
                self.skipped += 1

    async def _axon_changed(self) -> None:
        """Until any targeted agent's state or workers change (a worker may be running)."""
        waits = [
            asyncio.ensure_future(self._axon.hosted(agent).wait_for(_changed(self._axon, agent)))
            for agent in self._targets
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def storm(self) -> None:
        """SIGKILL one agent's worker :data:`STORM_KILLS` times in a row, each time its
        replacement is up: a crash loop, which the restart intensity turns into FAILED."""
        serving = [
            a.id
            for a in self._axon.agents()
            if a.id in self._targets
            and any(w.state == "running" and w.pid not in self._struck for w in a.workers)
        ]
        if not serving:
            self.skipped += 1
            return
        agent = self._rng.choice(serving)
        for _ in range(STORM_KILLS):
            try:
                status = await wait_until(
                    self._axon,
                    agent,
                    lambda s: any(
                        w.state == "running" and w.pid not in self._struck for w in s.workers
                    ),
                    timeout=_STORM_WAIT,
                )
            except TimeoutError:
                return  # it went FAILED (or is still restarting): the storm did its work
            worker = next(
                w for w in status.workers if w.state == "running" and w.pid not in self._struck
            )
            assert worker.pid is not None
            self._struck.add(worker.pid)
            _signal(worker.pid, signal.SIGKILL)
            self._record(Fault("storm", agent, time.monotonic(), worker.pid, 1))

    async def hostile(self) -> None:
        """Make the hostile agent's running worker carry out an attack (chosen at random), wait
        for the run's end (and, if the attack must get the worker killed, for its
        replacement), and record what happened."""
        try:
            status = await wait_until(
                self._axon,
                HOSTILE_AGENT,
                lambda s: any(w.state == "running" for w in s.workers),
                timeout=_RETRY_FOR,
            )
        except TimeoutError:
            self.skipped += 1
            return
        pid = next(w.pid for w in status.workers if w.state == "running")
        attack = self._rng.choice(ATTACKS)
        self._record(
            Fault("hostile", HOSTILE_AGENT, time.monotonic(), pid, 1 if attack.kills else 0)
        )
        try:
            await self._axon.send_message(HOSTILE_AGENT, attack.prompt, timeout=_HOSTILE_TIMEOUT)
            outcome = OK
        except AxonError as exc:
            outcome = exc.type
        if attack.kills and pid is not None:
            with contextlib.suppress(TimeoutError):
                await wait_until_serving(
                    self._axon, HOSTILE_AGENT, replaced=[pid], timeout=_HOSTILE_TIMEOUT
                )
        cause = self._exit_cause(pid) if pid is not None else None
        self.strikes.append(Strike(attack.name, pid, outcome, cause))

    async def outage(self) -> None:
        """Take the store away for :data:`OUTAGE_FOR` seconds (every connection reset, new
        ones refused), bring it back, and wait until it answers the runtime again."""
        relay = self._store_relay
        assert relay is not None
        fault = Fault("outage", STORE, time.monotonic(), None, 0)
        self._record(fault)
        self.store_changes.append(StateChange(STORE, fault.at, "down"))
        try:
            # It goes away the moment a COMMIT reaches it, when one comes soon: that commit is
            # applied but never confirmed (the caller's error says it may have been).
            relay.cut_after(b"COMMIT")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LOST_COMMIT_WAIT):
                    await relay.wait_cut_after()
            await relay.cut()
            await asyncio.sleep(OUTAGE_FOR)
        finally:
            relay.restore()
        await self.store_back()

    async def store_back(self) -> None:
        """Until the store answers again after an outage (no-op when it is not down)."""
        if not self.store_changes or self.store_changes[-1].state != "down":
            return
        # Polled: the server coming back is nothing this process is told of.
        while True:
            readiness = await self._axon.check_ready(store_timeout=1.0)
            if readiness.store_error is None:
                break
            await asyncio.sleep(_STORE_POLL)
        self.store_changes.append(StateChange(STORE, time.monotonic(), "running"))

    def strike(self, kind: str, *, count_skip: bool = True) -> Fault | None:
        choices = [
            (agent.id, worker.index, worker.pid)
            for agent in self._axon.agents()
            if agent.id in self._targets
            for worker in agent.workers
            if worker.state == "running"
            and worker.pid is not None
            and worker.pid not in self._struck
        ]
        if not choices:
            if count_skip:
                self.skipped += 1
            return None
        agent, index, pid = self._rng.choice(choices)
        assert pid is not None
        self._struck.add(pid)
        if kind == "kill":
            _signal(pid, signal.SIGKILL)
        elif kind == "hang":
            _signal(pid, signal.SIGSTOP)  # the heartbeat notices; the worker is killed
            self._stopped.add(pid)
        elif kind == "cut":
            self._links.relay(agent, index).reset()
        elif kind == "truncate":
            self._links.relay(agent, index).truncate(5)  # part of the next frame, then the cut
        elif kind == "slow":
            relay = self._links.relay(agent, index)
            relay.delay(SLOW_DELAY)
            # Undo only the delay: restore() would also disarm a truncate struck meanwhile.
            asyncio.get_running_loop().call_later(SLOW_FOR, relay.delay, 0.0)
            self._struck.discard(pid)
        elif kind == "raise":
            _signal(pid, signal.SIGUSR1)
            self._struck.discard(pid)  # it stays up: it may be struck again
        elif kind == "stall":
            _signal(pid, signal.SIGUSR2)
            self._struck.discard(pid)
        fault = Fault(kind, agent, time.monotonic(), pid, _EXPECTED_RESTARTS[kind])
        self._record(fault)
        return fault

    def _record(self, fault: Fault) -> None:
        self.faults.append(fault)
        if self._on_fault is not None:
            self._on_fault(fault)

    def resume_all(self) -> None:
        """SIGCONT every worker a hang stopped (those not killed yet), so none is left stopped;
        bring the store back if an outage was cut short."""
        for pid in self._stopped:
            _signal(pid, signal.SIGCONT)
        if self._store_relay is not None:
            self._store_relay.restore()


def _changed(axon: Axon, agent: str) -> Callable[[AgentStatus], bool]:
    """A predicate that holds once ``agent``'s status differs from what it is now."""
    now = axon.agent(agent)
    key = (now.state, tuple((w.state, w.pid) for w in now.workers))
    return lambda s: (s.state, tuple((w.state, w.pid) for w in s.workers)) != key


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it died on its own: the fault is moot
        os.kill(pid, sig)


async def wait_until(
    axon: Axon, agent_id: str, predicate: Callable[[AgentStatus], bool], timeout: float
) -> AgentStatus:
    async with asyncio.timeout(timeout):
        return await axon.hosted(agent_id).wait_for(predicate)


async def wait_until_serving(
    axon: Axon, agent_id: str, *, replaced: Collection[int], timeout: float
) -> AgentStatus:
    async with asyncio.timeout(timeout):
        return await axon.hosted(agent_id).wait_running(replaced=replaced)
