"""A clock tests move by hand: for the supervisor's pure policy and state machines, and for its
driver (``AgentSupervisor(clock=clock, sleep=clock.sleep)``), whose backoffs and cool-downs then
pass when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock that only moves when told: ``clock()`` reads it, ``await
    clock.sleep(s)`` waits until :meth:`advance` moves it past ``s`` from now."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward and wake every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, woken = heapq.heappop(self._sleepers)
            if not woken.done():
                woken.set_result(None)
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved ``seconds`` forward (a zero sleep just yields)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), woken))
        await woken

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for the clock."""
        return sum(not f.done() for _, _, f in self._sleepers)
