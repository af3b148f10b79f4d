"""CPU and memory of worker processes, sampled from the OS (psutil).

A worker *slot* (agent, index) outlives its processes: a crash or a restart replaces the process,
not the slot. Operators graph ``rate()`` of a slot's CPU counter, so it must never go down when
the process behind it changes. psutil cannot read a process that is gone, so each slot remembers
the CPU seconds of its current process at the last sample and, once that process is gone (a new
pid or generation in the slot, or no live process at all), adds that last reading to the slot's
base. The CPU a process burned between its last sample and its death is therefore missed: at most
one sampling interval's worth (the live dashboard samples once a second, so in practice under a
second of CPU per exit).

:meth:`WorkerResources.sample` returns cumulative values only and keeps no per-caller state, so
the Prometheus collector (at each scrape) and the dashboard's monitor (once a second) can share
one instance at their own rates: each extra caller only makes the samples fresher.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil

from axon.status import AgentStatus, WorkerStatus

__all__ = ["ResourceSample", "WorkerResources"]

_LIVE_STATES = frozenset({"starting", "running", "stopping"})
"""Worker states in which the slot's pid names a process that (should) exist."""


@dataclass(frozen=True)
class ResourceSample:
    agent: str
    worker: int
    pid: int | None
    """The live process's pid (None when the slot has no process running)."""
    cpu_seconds_total: float
    """CPU time (user + system) of every process this worker slot has had: monotonic across
    restarts."""
    rss_bytes: int | None
    """Resident memory of the live process (None when no process is running or the OS would not
    tell)."""


@dataclass
class _Slot:
    base: float = 0.0
    """CPU seconds of the slot's earlier processes (their last readings)."""
    identity: tuple[int, int] | None = None
    """(pid, generation) of the process being followed, None if there is none."""
    process: psutil.Process | None = None
    """The cached handle of that process (creating one costs a read of ``/proc``)."""
    last: float = 0.0
    """That process's CPU seconds at its last successful reading."""


class WorkerResources:
    """Samples each worker slot's process (see :class:`ResourceSample`); thread-safe."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._lock = threading.Lock()

    def sample(self, agents: list[AgentStatus]) -> list[ResourceSample]:
        """One :class:`ResourceSample` per worker slot of ``agents``, in their order."""
        with self._lock:
            return [self._sample(agent.id, worker) for agent in agents for worker in agent.workers]

    def _sample(self, agent_id: str, worker: WorkerStatus) -> ResourceSample:
        key = (agent_id, worker.index)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        pid = worker.pid if worker.state in _LIVE_STATES else None
        identity = None if pid is None else (pid, worker.generation)
        if slot.identity != identity:
            # The process followed so far is gone (or there was none): keep what it had used.
            slot.base += slot.last
            slot.last = 0.0
            slot.process = None
            slot.identity = identity
        rss: int | None = None
        if pid is not None:
            try:
                process = slot.process
                if process is None:
                    process = slot.process = psutil.Process(pid)
                with process.oneshot():
                    cpu = process.cpu_times()
                    # max: a reading never lowers the counter (even were the pid reused).
                    slot.last = max(slot.last, cpu.user + cpu.system)
                    rss = process.memory_info().rss
            except psutil.NoSuchProcess:  # also ZombieProcess (a subclass)
                # Dead before the supervisor noticed: its last reading is folded in when the
                # slot moves on to the next process.
                rss = None
            except psutil.AccessDenied:
                rss = None
        return ResourceSample(agent_id, worker.index, pid, slot.base + slot.last, rss)
