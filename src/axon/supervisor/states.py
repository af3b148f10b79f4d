"""The two state machines of supervision: one per worker process, one per agent.

Every state change goes through :meth:`StateCell.change`, which checks the transition
table, stamps the change with the injected monotonic clock and tells every listener. A
transition missing from the table raises :class:`IllegalTransition`; no state has an edge to
itself.

Worker (one OS process running the agent)::

            +---------------------- stop ----------------------+
            |                                                  v
      +----------+    ready    +---------+      stop      +----------+
  +-->| STARTING |------------>| RUNNING |--------------->| STOPPING |
  |   +----------+             +---------+                +----------+
  |        | died                   | died                     | exited
  |        v                        v                          v
  |   +------------------------------------------------------------+
  |   |                           EXITED                           |
  |   +------------------------------------------------------------+
  |        | restart scheduled                         | not restarted
  |        v                                           v
  |   +---------+     stop / restart abandoned    +---------+
  +---| BACKOFF |-------------------------------->| STOPPED |
  |   +---------+                                 +---------+
  |                                                    |
  +------------- manual restart / cool-down -----------+

A restart always passes through BACKOFF, even with a zero delay: EXITED never goes straight
back to STARTING.

Agent (the supervisor of all workers of one agent)::

                            all workers up
      +----------+ ------------------------------> +---------+
  +-->| STARTING |                                 | RUNNING |--------------+
  |   +----------+          +-- a worker died ---- +---------+              |
  |     |      |            |                        ^                      | every worker
  |     |      | a worker   v                        | all workers up       | ended, none
  |     |      | died   +------------+               |                      | restarts
  |     |      +------->| RESTARTING |---------------+                      |
  |     |               +------------+                                      v
  |     |                 |        |            none restarts           +---------+
  |     | intensity       |        +----------------------------------->| STOPPED |
  |     | exceeded        | intensity exceeded                          +---------+
  |     v                 v                                               |   ^
  |   +---------------------+                                             |   |
  +---|       FAILED        |  (cool-down elapsed / manual restart)       |   |
  |   +---------------------+                                             |   |
  |                                                                       |   |
  +----------------------------- start -----------------------------------+   |
                                                                              |
    STARTING, RUNNING, RESTARTING, FAILED --stop--> STOPPING --all stopped----+

RUNNING means every worker that should run is RUNNING; RESTARTING means at least one
worker is being restarted (the others may still serve); FAILED means the restart intensity
was exceeded and nothing runs until the cool-down elapses or someone restarts the agent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar

__all__ = [
    "AGENT_TRANSITIONS",
    "WORKER_TRANSITIONS",
    "AgentState",
    "IllegalTransition",
    "StateCell",
    "StateChange",
    "WorkerState",
]


class WorkerState(StrEnum):
    """Life cycle of one worker process (see the module docstring for the diagram)."""

    STARTING = "starting"
    """The process was spawned and has not said it is ready yet."""
    RUNNING = "running"
    """The worker said it is ready and serves requests."""
    STOPPING = "stopping"
    """The supervisor asked the worker to stop and waits for it to exit."""
    EXITED = "exited"
    """The process is gone; the supervisor has not decided yet what happens next."""
    BACKOFF = "backoff"
    """A restart is scheduled after a delay."""
    STOPPED = "stopped"
    """The worker is not running and will not be restarted automatically."""


class AgentState(StrEnum):
    """Life cycle of one agent's supervisor (see the module docstring for the diagram)."""

    STARTING = "starting"
    """Workers are being started; not every one is RUNNING yet."""
    RUNNING = "running"
    """Every worker that should run is RUNNING."""
    RESTARTING = "restarting"
    """At least one worker is being restarted; the others may still serve."""
    FAILED = "failed"
    """Restart intensity exceeded; nothing runs until cool-down or a manual restart."""
    STOPPING = "stopping"
    """The agent was asked to stop and waits for its workers to exit."""
    STOPPED = "stopped"
    """No worker runs and none will be restarted."""


_W = WorkerState
WORKER_TRANSITIONS: Mapping[WorkerState, frozenset[WorkerState]] = MappingProxyType(
    {
        _W.STARTING: frozenset({_W.RUNNING, _W.EXITED, _W.STOPPING}),
        _W.RUNNING: frozenset({_W.EXITED, _W.STOPPING}),
        _W.STOPPING: frozenset({_W.EXITED}),
        _W.EXITED: frozenset({_W.BACKOFF, _W.STOPPED}),
        _W.BACKOFF: frozenset({_W.STARTING, _W.STOPPED}),
        _W.STOPPED: frozenset({_W.STARTING}),
    }
)
"""Legal worker transitions: ``WORKER_TRANSITIONS[current]`` is the set of allowed targets."""

_A = AgentState
AGENT_TRANSITIONS: Mapping[AgentState, frozenset[AgentState]] = MappingProxyType(
    {
        _A.STARTING: frozenset({_A.RUNNING, _A.RESTARTING, _A.FAILED, _A.STOPPING}),
        _A.RUNNING: frozenset({_A.RESTARTING, _A.STOPPING, _A.STOPPED}),
        _A.RESTARTING: frozenset({_A.RUNNING, _A.FAILED, _A.STOPPING, _A.STOPPED}),
        _A.FAILED: frozenset({_A.STARTING, _A.STOPPING}),
        _A.STOPPING: frozenset({_A.STOPPED}),
        _A.STOPPED: frozenset({_A.STARTING}),
    }
)
"""Legal agent transitions: ``AGENT_TRANSITIONS[current]`` is the set of allowed targets."""
del _W, _A

S = TypeVar("S", bound=StrEnum)


class IllegalTransition(RuntimeError):
    """A state change that the transition table does not allow was requested.

    This is a bug in the caller, never a runtime condition to recover from. ``current`` is
    the state the machine was in (and still is), ``target`` the refused state.
    """

    def __init__(self, current: StrEnum, target: StrEnum) -> None:
        super().__init__(f"illegal transition {current} -> {target}")
        self.current = current
        self.target = target

    def __reduce__(self) -> tuple[type[IllegalTransition], tuple[StrEnum, StrEnum]]:
        return (type(self), (self.current, self.target))


@dataclass(frozen=True)
class StateChange(Generic[S]):
    """One accepted state change.

    ``at`` is the clock reading (monotonic seconds) when it happened; ``info`` carries the
    keyword arguments given to :meth:`StateCell.change` (e.g. the pid or the exit), read-only.
    """

    previous: S
    current: S
    at: float
    info: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}), hash=False)


class StateCell(Generic[S]):
    """Holds the current state of one state machine instance.

    :meth:`change` is the only way to change the state. Listeners registered with
    :meth:`subscribe` are told about every accepted change, in order: a change made by a
    listener while the others are being notified takes effect at once (``state`` and the
    returned :class:`StateChange` reflect it) but is delivered to the listeners only after the
    change being delivered, so every listener sees the changes in the order they happened.
    """

    def __init__(
        self,
        initial: S,
        transitions: Mapping[S, frozenset[S]],
        clock: Callable[[], float],
    ) -> None:
        self._transitions: Mapping[S, frozenset[S]] = MappingProxyType(dict(transitions))
        self._clock = clock
        self._state: S = initial
        self._since: float = clock()
        # Listeners are keyed by a private token so the same callable may subscribe twice
        # and each unsubscribe removes exactly its own registration.
        self._listeners: dict[object, Callable[[StateChange[S]], None]] = {}
        self._pending: deque[StateChange[S]] = deque()
        self._delivering = False

    @property
    def state(self) -> S:
        """The current state."""
        return self._state

    @property
    def since(self) -> float:
        """Clock reading of the last accepted change (or of creation if there was none)."""
        return self._since

    def can_change(self, target: S) -> bool:
        """Whether the table allows going from the current state to ``target``."""
        return target in self._transitions.get(self._state, frozenset())

    def change(self, target: S, **info: object) -> StateChange[S]:
        """Move to ``target``, notify every listener and return the change.

        Raises :class:`IllegalTransition` (leaving the state untouched) when the table has no
        edge from the current state to ``target``. ``info`` is attached to the change as is.
        If listeners raise, every listener is still notified and the first exception is
        re-raised afterwards; the state change itself stands.
        """
        if not self.can_change(target):
            raise IllegalTransition(self._state, target)
        now = self._clock()
        change = StateChange(
            previous=self._state, current=target, at=now, info=MappingProxyType(dict(info))
        )
        self._state = target
        self._since = now
        self._pending.append(change)
        if not self._delivering:
            self._deliver()
        return change

    def subscribe(self, listener: Callable[[StateChange[S]], None]) -> Callable[[], None]:
        """Call ``listener`` with every future change; returns a function that unsubscribes.

        Unsubscribing twice is harmless. A listener unsubscribed during a notification is not
        called for changes delivered after that.
        """
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    def _deliver(self) -> None:
        self._delivering = True
        first_error: Exception | None = None
        try:
            while self._pending:
                change = self._pending.popleft()
                for token, listener in list(self._listeners.items()):
                    if token not in self._listeners:
                        continue  # unsubscribed by an earlier listener of this round
                    try:
                        listener(change)
                    except Exception as exc:
                        if first_error is None:
                            first_error = exc
        finally:
            self._delivering = False
        if first_error is not None:
            raise first_error

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._state!s}, since={self._since!r})"
