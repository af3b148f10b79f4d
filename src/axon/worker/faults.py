"""Faults a worker injects into its own runs on request (``axon chaos``), for any agent.

Only when the worker's environment has ``AXON_FAULT_SIGNALS=1`` (``axon chaos`` sets it in the
agents it targets; nothing else does), the worker arms a fault for its next run on a signal:

``SIGUSR1``: the run raises
    :class:`InjectedFault` before the agent is called: the caller gets ``AgentRunFailed``
    (``remote_type`` ``InjectedFault``), as if the agent had raised.
``SIGUSR2``: the run stalls
    it waits without answering, its event loop still responsive (heartbeats go on), until the
    orchestrator cancels it or its timeout passes: the caller gets ``AgentTimeout``, as if the
    model never answered.

Each signal arms one fault, and the worker says so on stderr (``fault armed: raise``, logged by
the orchestrator as ``worker.output``); a run takes the oldest armed fault when it starts. This
is how chaos makes "the agent raises" and "the agent stalls" happen in a real worker process
without changing the agent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import deque
from typing import Literal

__all__ = ["ARMED_LINE", "ENV_VAR", "FaultArms", "InjectedFault"]

ENV_VAR = "AXON_FAULT_SIGNALS"
ARMED_LINE = "fault armed: "
"""A worker prints this, then ``raise`` or ``stall``, on stderr when a signal armed a fault."""

Fault = Literal["raise", "stall"]


class InjectedFault(Exception):
    """Raised in a run by an armed ``raise`` fault."""


class FaultArms:
    """The faults armed by signals, waiting for the next runs."""

    def __init__(self) -> None:
        self._armed: deque[Fault] = deque()
        self._stalled: dict[int, asyncio.Event] = {}

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> FaultArms | None:
        """Arm faults on SIGUSR1/SIGUSR2 if ``AXON_FAULT_SIGNALS=1``; else None (no handler)."""
        if os.environ.get(ENV_VAR) != "1":
            return None
        arms = cls()
        loop.add_signal_handler(signal.SIGUSR1, arms._arm, "raise")
        loop.add_signal_handler(signal.SIGUSR2, arms._arm, "stall")
        return arms

    def _arm(self, fault: Fault) -> None:
        self._armed.append(fault)
        # The orchestrator logs this line as ``worker.output``: whoever sent the signal can wait
        # for it before sending the run the fault is meant for.
        print(f"{ARMED_LINE}{fault}", file=sys.stderr, flush=True)

    async def strike(self, run_id: int, timeout: float | None) -> bool:
        """At the start of run ``run_id``: nothing (False) unless a fault is armed. ``raise``:
        raises :class:`InjectedFault`. ``stall``: waits until :meth:`cancel` is called for the
        run (then True: the run was cancelled) or ``timeout`` seconds pass (``TimeoutError``)."""
        if not self._armed:
            return False
        fault = self._armed.popleft()
        if fault == "raise":
            raise InjectedFault("fault injected by axon chaos (SIGUSR1)")
        released = self._stalled[run_id] = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await released.wait()
        finally:
            del self._stalled[run_id]
        return True

    def cancel(self, run_id: int) -> bool:
        """Release run ``run_id`` if it is stalled; whether it was."""
        released = self._stalled.get(run_id)
        if released is None:
            return False
        released.set()
        return True
