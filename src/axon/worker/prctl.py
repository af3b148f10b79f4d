"""The Linux process controls (``prctl``) Axon's worker-side processes use; no-ops elsewhere."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys

__all__ = ["become_subreaper", "die_with_parent", "set_process_name"]

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int | bytes) -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value)


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (even when its event loop is
    blocked)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def set_process_name(name: str) -> None:
    """Name this process for ``ps -o comm``, ``top`` and psutil (15 bytes at most)."""
    _prctl(_PR_SET_NAME, name.encode()[:15])


def become_subreaper() -> None:
    """Have orphaned descendants re-parented to this process, which must then reap them."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
