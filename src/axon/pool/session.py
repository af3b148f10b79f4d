"""The orchestrator's end of one worker's connection: :class:`WorkerSession`, the runs in flight
on it, what the worker sends, and the heartbeat.

A worker is untrusted input (docs/threat-model.md). What it sends is decoded at a cost bounded by
its size (:mod:`axon.protocol.frames`), frames over the agent's ``max_result_bytes`` are refused,
frames of runs that are over are dropped unread, a result is checked (its messages must be a
pydantic-ai message list, its output and usage JSON) before anyone sees it, a ``pong`` counts only
if it answers a recent ``ping``, and every frame that breaks the protocol is a violation: past
:data:`PROTOCOL_BUDGET` of them the worker is killed (cause ``protocol``), so one worker can
neither flood the log nor keep itself alive with junk. More than :data:`MAX_UNREAD` bytes sent to
it and not read get it killed as ``unresponsive``.

The heartbeat: a ``ping`` every ``heartbeat_interval`` with a fresh random ``seq``; no answer for
``heartbeat_timeout`` and the worker is killed as hung. Time the orchestrator's own event loop
was stalled (a heartbeat that wakes up late measures it) is not the worker's silence.

A run takes one of the worker's slots from the moment its ``run`` frame is queued to the moment
its ``result`` or ``error`` arrives (or the worker is gone): a ``run`` frame that cannot be sent
takes no slot at all.

The session kills nothing itself: it asks its process (``kill``), which does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from axon.config import SupervisorSpec
from axon.errors import AxonError, FrameTooLarge, ProtocolError, StartupFailed
from axon.exits import KillCause
from axon.observability.events import EventBus
from axon.protocol.channel import ChannelClosed, FrameChannel
from axon.protocol.codec import MAX_FRAME_SIZE
from axon.protocol.frames import (
    PROTOCOL_VERSION,
    Cancel,
    Error,
    Event,
    Frame,
    Hello,
    Ping,
    Pong,
    Ready,
    Result,
    Run,
    Spans,
)
from axon.protocol.payloads import event_problem, result_problem
from axon.run_call import RunCall, RunRequest, WorkerGone

__all__ = ["MAX_UNREAD", "PROTOCOL_BUDGET", "WorkerSession"]

PROTOCOL_BUDGET = 8
"""Protocol violations a worker may commit; the next one gets it killed (cause ``protocol``)."""
MAX_UNREAD = 2 * MAX_FRAME_SIZE
"""Bytes the orchestrator may have written to a worker that it has not read yet; past it the
worker is killed as ``unresponsive`` (it stopped reading its connection)."""
_LAG_TOLERANCE = 0.1
"""Seconds a heartbeat may wake up late before the lateness counts as the orchestrator's stall."""

Kill = Callable[[str, KillCause | None], None]


class WorkerSession:
    """One worker's connection, from the orchestrator's side (see the module docstring).

    ``kill(reason, cause)`` is its process's kill; ``on_ready()`` is called once, when the
    worker says it can serve; ``on_capacity()`` when a slot frees up; ``on_load()`` when a run
    takes one; ``spawn(coro)`` runs a background task owned by the process.
    """

    def __init__(
        self,
        channel: FrameChannel,
        *,
        agent_id: str,
        index: int,
        pid: int | None,
        supervision: SupervisorSpec,
        events: EventBus,
        kill: Kill,
        on_ready: Callable[[], None],
        on_capacity: Callable[[], None],
        on_load: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._channel = channel
        self._agent_id = agent_id
        self._index = index
        self._pid = pid
        self._supervision = supervision
        self._events = events
        self._kill = kill
        self._on_ready = on_ready
        self._on_capacity = on_capacity
        self._on_load = on_load
        self._spawn = spawn
        self._runs: dict[int, RunCall] = {}
        self._run_ids = itertools.count(1)
        # Every ping that may still be answered: those sent within the heartbeat timeout.
        self._pings: deque[int] = deque(
            maxlen=int(supervision.heartbeat_timeout / supervision.heartbeat_interval) + 4
        )
        self._last_pong = time.monotonic()
        self._stalled = 0.0
        """Seconds the orchestrator's own loop was stalled since the last pong (not counted
        against the worker's silence)."""
        self._ready = False
        self.violations = 0
        """Protocol violations this worker committed (see :data:`PROTOCOL_BUDGET`)."""
        self.condemned = False
        """Set by the process when it kills the worker: what it sends after is not read."""
        self.stopping = False
        """Set by the process when it is asked to stop: the heartbeat no longer judges it."""

    # -- runs --------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._runs)

    @property
    def closed(self) -> bool:
        return self._channel.closed

    def start_run(self, request: RunRequest) -> RunCall:
        """Send a ``run`` frame now (no await: callers rely on it to keep slot counts exact).
        ``WorkerGone`` if the connection is closed; any other failure to send (the frame too
        large) raises too, and leaves no trace of the run."""
        call = RunCall(next(self._run_ids))
        frame = Run(
            id=call.id,
            prompt=request.prompt,
            history=request.history,
            conversation_id=request.conversation_id,
            timeout=request.time_left(),
            stream=request.stream,
            trace=request.trace,
        )
        try:
            self._channel.send_nowait(frame)
        except ChannelClosed:
            raise WorkerGone(self._pid) from None
        self._runs[call.id] = call
        self._on_load()
        self._check_unread()
        return call

    def cancel_run(self, call: RunCall) -> None:
        """Ask the worker to cancel ``call``; kill it if it has not ended it in time."""
        if call.done:
            return
        self.send(Cancel(id=call.id))
        self._spawn(self._enforce_cancel(call))

    async def _enforce_cancel(self, call: RunCall) -> None:
        await asyncio.sleep(self._supervision.cancel_grace)
        if not call.done and not self.condemned:
            grace = self._supervision.cancel_grace
            self._kill(f"run {call.id} ignored cancel for {grace:g}s", "ignored_cancel")

    def fail_runs(self, error: AxonError) -> None:
        """The worker is gone: every run it held ends with ``error``."""
        for call in self._runs.values():
            call.done = True
            call.deliver(error)
        self._runs.clear()

    # -- what the worker sends -----------------------------------------------------------------

    async def read(self) -> None:
        """Read and handle the worker's frames until EOF, a frame the stream cannot recover
        from, or the worker is killed."""
        while True:
            try:
                frame = await self._channel.recv()
            except ChannelClosed:
                return
            except FrameTooLarge as exc:
                self._violation(exc.message)
                self._kill("unrecoverable frame from worker", "protocol")
                return
            except ProtocolError as exc:
                self._violation(exc.message, answer=exc)
            else:
                self._handle(frame)
            if self.condemned:
                return  # killed: what it sent after that is not read

    def _handle(self, frame: Frame) -> None:
        match frame:
            case Pong(seq=seq):
                self._pong(seq)
            case Event(id=run_id, event=event):
                call = self._runs.get(run_id)
                if call is None:
                    return  # a late frame of a run we already gave up on: dropped
                problem = event_problem(event)
                if problem is not None:
                    self._reject_run(call, problem)
                else:
                    call.deliver(event)
            case Result(id=run_id):
                call = self._runs.get(run_id)
                if call is None:
                    return
                problem = result_problem(frame)
                if problem is not None:
                    self._reject_run(call, problem)
                    return
                self._end_run(call)
                call.deliver(frame)
            case Spans(id=run_id):
                call = self._runs.get(run_id)
                if call is None or call.on_spans is None:
                    return
                try:
                    records = frame.records()
                except ValueError as exc:
                    self._violation(f"spans of run {run_id}: {exc}")
                    return
                call.on_spans(records)
            case Error(id=run_id):
                self._handle_error(run_id, frame)
            case Hello(protocol=version) | Ready(protocol=version) if version != PROTOCOL_VERSION:
                self._violation(f"worker speaks protocol {version}, not {PROTOCOL_VERSION}")
                self._kill("protocol version mismatch", "protocol")
            case Hello():
                pass
            case Ready() if self._ready:
                self._violation("a second ready frame")
            case Ready():
                self._ready = True
                self._last_pong = time.monotonic()
                self._on_ready()
            case _:
                self._violation(
                    f"unexpected {type(frame).__name__} frame from worker",
                    answer=ProtocolError(
                        f"unexpected frame kind from worker: {type(frame).__name__}"
                    ),
                )

    def _handle_error(self, run_id: int | None, frame: Error) -> None:
        call = self._runs.get(run_id) if run_id is not None else None
        if run_id is not None and call is None:
            return  # the end of a run we already gave up on
        try:
            payload = frame.payload()
        except ValueError as exc:
            if call is not None:
                self._reject_run(call, f"its error: {exc}")
            else:
                self._violation(f"error report: {exc}")
            return
        error = AxonError.from_dict(payload)
        if call is not None:
            self._end_run(call)
            call.deliver(error)
        elif isinstance(error, StartupFailed) and not self._ready:
            self._events.emit(
                "worker.startup_failed",
                logging.ERROR,
                agent=self._agent_id,
                worker=self._index,
                pid=self._pid,
                message=error.message,
            )
        else:
            self._violation(f"worker reported: {error.message}")

    def _end_run(self, call: RunCall) -> None:
        call.done = True
        self._runs.pop(call.id, None)
        self._on_capacity()

    def _reject_run(self, call: RunCall, problem: str) -> None:
        """What the worker sent for ``call`` breaks the protocol: the run fails (nothing of it
        is committed), the worker is told to drop it, and the violation counts."""
        self._end_run(call)
        call.deliver(
            ProtocolError(f"worker {self._pid} of agent {self._agent_id!r} sent {problem}")
        )
        self.send(Cancel(id=call.id))
        self._violation(f"run {call.id}: {problem}")

    def _violation(self, message: str, *, answer: ProtocolError | None = None) -> None:
        """One more protocol violation: logged, answered (if ``answer``) and counted; past the
        budget the worker is killed, so a worker cannot flood the log or the connection."""
        self.violations += 1
        if self.violations > PROTOCOL_BUDGET:
            self._kill(
                f"{self.violations} protocol violations (budget {PROTOCOL_BUDGET}); "
                f"the last: {message}",
                "protocol",
            )
            return
        self._events.emit(
            "protocol.error",
            logging.ERROR,
            agent=self._agent_id,
            worker=self._index,
            pid=self._pid,
            message=message,
        )
        if answer is not None:
            self.send(Error.of(None, answer.to_dict()))

    # -- what we send ----------------------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        """Queue ``frame`` for the worker (best effort: the worker may be gone)."""
        with contextlib.suppress(ChannelClosed):
            self._channel.send_nowait(frame)
            self._check_unread()

    def _check_unread(self) -> None:
        unread = self._channel.buffered
        if unread > MAX_UNREAD:
            self._kill(f"not reading its connection ({unread} bytes unread)", "unresponsive")

    # -- the heartbeat -----------------------------------------------------------------------------

    def _pong(self, seq: int) -> None:
        if seq not in self._pings:
            self._violation(f"pong {seq} answers no ping")
            return
        # Pings are answered in order: this one and those before it are done.
        while self._pings.popleft() != seq:
            pass
        self._last_pong = time.monotonic()
        self._stalled = 0.0

    async def heartbeat(self) -> None:
        """Ping every ``heartbeat_interval``; kill the worker as hung when it has not answered
        for ``heartbeat_timeout`` (not counting the orchestrator's own stalls). A worker being
        stopped is governed by the stop's own timeouts (it may be finishing long runs)."""
        interval = self._supervision.heartbeat_interval
        limit = self._supervision.heartbeat_timeout
        loop = asyncio.get_running_loop()
        while not self.condemned and not self.stopping and not self._channel.closed:
            silent = time.monotonic() - self._last_pong - self._stalled
            if silent > limit:
                self._events.emit(
                    "worker.hung",
                    logging.ERROR,
                    agent=self._agent_id,
                    worker=self._index,
                    pid=self._pid,
                    silent_s=round(silent, 3),
                )
                self._kill(f"hung: no heartbeat for {silent:.1f}s", "hung")
                return
            seq = random.getrandbits(62)  # unguessable: only a worker that read the ping answers
            self._pings.append(seq)
            self.send(Ping(seq=seq))
            asleep = loop.time()
            await asyncio.sleep(interval)
            # Time this loop was stalled (late to wake us) is time the worker's answer could not
            # be read: it is not the worker's silence.
            late = loop.time() - asleep - interval
            if late > _LAG_TOLERANCE:
                self._stalled += late
