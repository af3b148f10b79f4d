"""How a worker process ended: one value, from the process handle that saw it end, through the
supervisor's restart policy, to the status callers read (``WorkerStatus.last_exit``,
``AgentStatus.recent_exits``, ``GET /v1/agents``).
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from typing import Literal

__all__ = ["Exit", "ExitCause", "KillCause", "signal_name"]

KillCause = Literal[
    "hung", "ignored_cancel", "startup_timeout", "protocol", "unresponsive", "connection_lost"
]
"""Why Axon killed a worker (the ``cause`` of its exit)."""

ExitCause = Literal["requested", "crashed", "exited", "startup_failed", "spawn_failed", KillCause]
"""How a worker's exit is counted (a bounded set, used as a metric label):

- ``requested``: a stop or restart asked for it;
- ``crashed``: it died on its own after it was ready (non-zero exit code or a signal);
- ``exited``: it exited with code 0 without being asked;
- ``startup_failed``: it died before it said ``ready``; ``spawn_failed``: it never started;
- the :data:`KillCause` values: Axon killed it for that reason.
"""


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; a number no signal has is named by itself (``signal 200``)."""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@dataclass(frozen=True)
class Exit:
    """How one worker process ended.

    ``code`` is the exit status of a process that exited by itself, ``signal`` the number of the
    signal that killed it (at most one of the two is set; both are ``None`` when the status is
    unknown: the process was lost, or never started). ``requested`` is True when the supervisor
    asked the worker to stop, whatever the process then reported. ``cause`` says how the exit is
    counted, ``reason`` why Axon killed it (or why it could not start), ``was_ready`` whether it
    had said ``ready``. ``pid``, ``worker`` (the slot) and ``at`` (wall-clock time) place it.
    """

    code: int | None = None
    signal: int | None = None
    requested: bool = False
    cause: ExitCause = "crashed"
    reason: str | None = None
    was_ready: bool = True
    pid: int | None = None
    worker: int = 0
    at: float = 0.0

    def __post_init__(self) -> None:
        if self.code is not None and self.signal is not None:
            raise ValueError("an exit has an exit code or a signal, not both")
        if self.signal is not None and self.signal <= 0:
            raise ValueError(f"signal must be a positive signal number, got {self.signal}")

    @property
    def normal(self) -> bool:
        """True when the stop was requested, or the process exited with code 0."""
        return self.requested or (self.code == 0 and self.signal is None)

    @property
    def exit_code(self) -> int | None:
        """``code``, under the name the status and the HTTP API use."""
        return self.code

    @property
    def during_startup(self) -> bool:
        """It ended before it said ``ready``."""
        return not self.was_ready

    def describe(self) -> str:
        """A short human description: ``exit code 3``, ``signal SIGKILL (hung: ...)``, ...

        A requested stop reads ``stopped on request``, followed by the status in parentheses
        when it is known (``stopped on request (signal SIGTERM)``); Axon's reason for a kill
        follows in parentheses.
        """
        if self.signal is not None:
            how: str | None = f"signal {signal_name(self.signal).removeprefix('signal ')}"
        elif self.code is not None:
            how = f"exit code {self.code}"
        else:
            how = None
        if self.requested:
            told = "stopped on request" if how is None else f"stopped on request ({how})"
        else:
            told = how if how is not None else "exit status unknown"
        return f"{told} ({self.reason})" if self.reason else told
