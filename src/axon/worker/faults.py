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

The fault strikes from a pydantic-ai capability (a ``before_run`` hook) that the worker adds to
its runs only when armed signals are on; the worker's run path has no branch for it.

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
    """The faults armed by signals, waiting for the next runs. :attr:`capability` is what a
    worker adds to every run so that a run takes the oldest armed fault when it starts."""

    def __init__(self) -> None:
        self._armed: deque[Fault] = deque()
        from pydantic_ai.capabilities import Hooks

        self.capability = Hooks(before_run=self._strike)
        """A pydantic-ai capability: its ``before_run`` hook strikes the fault, inside the run,
        so the run's own cancellation token and timeout end a stall."""

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

    async def _strike(self, ctx: object) -> None:
        """At the start of a run: nothing unless a fault is armed. ``raise``: raises
        :class:`InjectedFault`. ``stall``: waits until the run is cancelled (a ``cancel`` frame
        fires its token) or its timeout passes."""
        if not self._armed:
            return
        fault = self._armed.popleft()
        if fault == "raise":
            raise InjectedFault("fault injected by axon chaos (SIGUSR1)")
        await asyncio.Event().wait()  # nothing sets it: only cancellation ends the wait
