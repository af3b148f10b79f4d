"""Signals to the processes Axon starts, and whether they live. Every worker and zygote leads its
own process group, and signals go to the whole group, so whatever an agent spawned goes with it;
a process that is already gone (or no longer ours) is not an error."""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["kill_group", "pid_alive", "signal_group"]


def signal_group(pid: int, sig: int, *, group: bool = True) -> None:
    """Send ``sig`` to the process group led by ``pid`` (``group=False``: to ``pid`` alone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def kill_group(pid: int, *, group: bool = True) -> None:
    """SIGKILL the process group led by ``pid`` (``group=False``: ``pid`` alone)."""
    signal_group(pid, signal.SIGKILL, group=group)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
