"""The parent-side handle of one worker process.

``WorkerProcess.run()`` is the whole life of one OS process: make a socket pair, spawn the process
in its own process group with one end of it, wait for ``ready``, route frames, send heartbeats, and
return its :class:`~axon.exits.Exit` once the process is gone. It is run as a task by the agent's
supervisor; ``ready`` is a future that resolves when the worker can serve (it is never RUNNING
before that). Anything that fails before the process runs (no file descriptor left, a link that
cannot be made, a spawn that fails) is a start-up failure like a crash during start-up: ``run()``
returns an exit with cause ``spawn_failed``, which the supervisor counts and backs off.

Death is noticed from the process itself, never by polling: EOF on the socket (the kernel
closes it the instant the process dies) and the child watcher's ``wait()``. At that moment
every run the worker held ends with ``AgentCrashed`` carrying the exit code or signal.

A worker is untrusted input (docs/threat-model.md). What it sends is decoded at a cost bounded by
its size (:mod:`axon.protocol.frames`), frames over the agent's ``max_result_bytes`` are refused,
frames of runs that are over are dropped unread, a result is checked (its messages must be a
pydantic-ai message list, its output and usage JSON) before anyone sees it, a ``pong`` counts only
if it answers the last ``ping``, and every frame that breaks the protocol is a violation: past
:data:`PROTOCOL_BUDGET` of them the worker is killed (cause ``protocol``), so one worker can
neither flood the log nor keep itself alive with junk.

A worker is killed (SIGKILL to its whole process group) when its event loop stops answering
pings for ``heartbeat_timeout`` seconds (time the orchestrator's own event loop was stalled does
not count), when it ignores a cancel for ``cancel_grace`` seconds, when it breaks the protocol,
when it stops reading its connection (more than :data:`MAX_UNREAD` bytes waiting for it), or when
it is not ready within ``startup_timeout``.

Cancellation contract: cancelling ``run()`` kills the process group and waits for it to be
reaped before re-raising, so no process outlives its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import msgspec

from axon.config import AgentSpec, SupervisorSpec
from axon.errors import AgentCrashed, AxonError, FrameTooLarge, ProtocolError, StartupFailed
from axon.exits import Exit, ExitCause, KillCause
from axon.observability.events import EventBus
from axon.pool.fork_server import ForkedProcess, ForkServer
from axon.pool.groups import signal_group
from axon.pool.links import WorkerLink, WorkerLinks
from axon.pool.output import OutputPump
from axon.protocol.channel import ChannelClosed, FrameChannel
from axon.protocol.codec import MAX_FRAME_SIZE, from_worker
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
    RunEvent,
    Shutdown,
    SpanRecord,
    Spans,
)
from axon.protocol.payloads import event_problem, result_problem
from axon.protocol.settings import WorkerSettings

__all__ = [
    "MAX_UNREAD",
    "PROTOCOL_BUDGET",
    "RunCall",
    "WorkerGone",
    "WorkerProcess",
]

_EOF_REAP_TIMEOUT = 1.0
"""After EOF, how long the process gets to be reaped before we SIGKILL it."""
PROTOCOL_BUDGET = 8
"""Protocol violations a worker may commit; the next one gets it killed (cause ``protocol``)."""
MAX_UNREAD = 2 * MAX_FRAME_SIZE
"""Bytes the orchestrator may have written to a worker that it has not read yet; past it the
worker is killed as ``unresponsive`` (it stopped reading its connection)."""
_LAG_TOLERANCE = 0.1
"""Seconds a heartbeat may wake up late before the lateness counts as the orchestrator's stall."""


class WorkerGone(Exception):
    """The run could not be sent: the worker's connection is already closed. Nothing reached
    the worker, so the router may safely send the run elsewhere."""


class RunCall:
    """One run in flight on a worker: a stream of events ending in ``Result``."""

    __slots__ = ("_queue", "done", "id", "on_spans", "started")

    def __init__(self, run_id: int) -> None:
        self.id = run_id
        self.started = time.perf_counter()
        self.done = False
        self.on_spans: Callable[[list[SpanRecord]], None] | None = None
        """Called with the run's ``spans`` frame (a traced run), as it arrives: before the
        run's result or error is delivered, or after the caller gave up on the run."""
        self._queue: asyncio.Queue[RunEvent | Result | AxonError] = asyncio.Queue()

    def deliver(self, item: RunEvent | Result | AxonError) -> None:
        """Hand the next frame (or the run's error) to whoever awaits ``next()``."""
        self._queue.put_nowait(item)

    async def next(self) -> RunEvent | Result:
        """The next event or the final result; raises the run's ``AxonError`` if it failed."""
        item = await self._queue.get()
        if isinstance(item, AxonError):
            raise item
        return item


class WorkerProcess:
    """One worker process of one agent (see module docstring)."""

    def __init__(
        self,
        spec: AgentSpec,
        supervision: SupervisorSpec,
        *,
        index: int,
        generation: int,
        on_capacity: Callable[[], None] = lambda: None,
        on_load: Callable[[], None] = lambda: None,
        events: EventBus | None = None,
        links: WorkerLinks | None = None,
        fork_server: ForkServer | None = None,
    ) -> None:
        self.spec = spec
        self._events = events or EventBus()
        self._links = links
        self._fork_server = fork_server
        self._on_load = on_load  # a run started: load went up, no capacity was freed
        self.index = index
        self.generation = generation
        self._supervision = supervision
        self._on_capacity = on_capacity
        self.pid: int | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.startup_seconds: float | None = None
        self._channel: FrameChannel | None = None
        self._proc: asyncio.subprocess.Process | ForkedProcess | None = None
        self.start: Literal["fork", "cold"] = "cold"
        """How the process was started: forked from its agent's zygote, or a new interpreter."""
        self._runs: dict[int, RunCall] = {}
        self._run_ids = itertools.count(1)
        # Every ping that may still be answered: those sent within the heartbeat timeout.
        self._pings: deque[int] = deque(
            maxlen=int(supervision.heartbeat_timeout / supervision.heartbeat_interval) + 4
        )
        self._last_pong = 0.0
        self._stalled = 0.0
        """Seconds the orchestrator's own loop was stalled since the last pong (not counted
        against the worker's silence)."""
        self.violations = 0
        """Protocol violations this worker committed (see :data:`PROTOCOL_BUDGET`)."""
        self._stop_requested = False
        self._kill_reason: str | None = None
        self._kill_cause: KillCause | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._gone = asyncio.Event()

    # -- what the router sees ------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._runs)

    @property
    def serving(self) -> bool:
        """Ready, not stopping, and not dead."""
        return (
            self.ready.done()
            and not self.ready.cancelled()
            and self.ready.exception() is None
            and not self._stop_requested
            and not self._gone.is_set()
            and self._channel is not None
            and not self._channel.closed
        )

    def start_run(
        self,
        prompt: str,
        history: bytes,
        conversation_id: str | None,
        timeout: float | None,
        stream: bool,
        trace: dict[str, str] | None = None,
    ) -> RunCall:
        """Send a ``run`` frame now (no await: callers rely on it to keep slot counts exact).
        ``trace``: the request span's propagation headers (tracing on), else None.

        The run takes a slot only once its frame is on its way: ``WorkerGone`` (the connection
        is closed: nothing was sent) and any other failure to send leave no trace of it."""
        if self._channel is None:
            raise WorkerGone(self.pid)
        call = RunCall(next(self._run_ids))
        frame = Run(
            id=call.id,
            prompt=prompt,
            history=history,
            conversation_id=conversation_id,
            timeout=timeout,
            stream=stream,
            trace=trace,
        )
        try:
            self._channel.send_nowait(frame)
        except ChannelClosed:
            raise WorkerGone(self.pid) from None
        self._runs[call.id] = call
        self._on_load()
        self._check_unread()
        return call

    def cancel_run(self, call: RunCall) -> None:
        """Ask the worker to cancel ``call``; kill the worker if it has not ended it in time."""
        if call.done or self._channel is None:
            return
        self._send(Cancel(id=call.id))
        self._spawn_task(self._enforce_cancel(call))

    async def _enforce_cancel(self, call: RunCall) -> None:
        await asyncio.sleep(self._supervision.cancel_grace)
        if not call.done and not self._gone.is_set():
            self.kill(
                f"run {call.id} ignored cancel for {self._supervision.cancel_grace:g}s",
                "ignored_cancel",
            )

    # -- life cycle -------------------------------------------------------------------------

    async def run(self) -> Exit:
        """Spawn, serve, and return how the process ended (see module docstring)."""
        self._events.emit(
            "worker.start",
            logging.INFO,
            agent=self.spec.id,
            worker=self.index,
            generation=self.generation,
        )
        started = time.perf_counter()
        link: WorkerLink | None = None
        try:
            try:
                link = await self._connect_and_spawn()
            except Exception as exc:  # EMFILE, a link that cannot be made, a failed spawn
                if self._proc is not None:  # spawned, but its connection could not be set up
                    self.kill("its connection could not be set up")
                    with contextlib.suppress(ProcessLookupError, ChildProcessError):
                        await self._proc.wait()
                return self._spawn_failed(exc)
            self.pid = self._proc.pid if self._proc is not None else None
            if self._stop_requested:
                # stop() came while the process was being spawned (a fork can wait for its
                # zygote): it found no process to stop, so this one must not serve.
                self.kill("stopped while it was starting")
            try:
                return await self._supervise(started)
            except asyncio.CancelledError:
                self._stop_requested = True
                self.kill("supervisor cancelled")
                if self._proc is not None:
                    with contextlib.suppress(ProcessLookupError, ChildProcessError):
                        await asyncio.shield(self._proc.wait())
                raise
        finally:
            self._gone.set()  # whatever happened, stop() must not wait for this process
            for task in self._tasks:
                task.cancel()
            if self._channel is not None:
                self._channel.close()
            if link is not None:
                await link.aclose()
            if isinstance(self._proc, ForkedProcess) and self._fork_server is not None:
                self._fork_server.forget(self._proc)

    async def _connect_and_spawn(self) -> WorkerLink | None:
        """Make the worker's connection (a socket pair, through the link if there is one),
        spawn the process with its end, and keep ours as the channel."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        link: WorkerLink | None = None
        try:
            if self._links is not None:
                link = await self._links.open(self.spec.id, self.index, self.generation, theirs)
                theirs = link.worker_socket
            self._proc = await self._spawn(theirs)
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            if link is not None:
                await link.aclose()
            raise
        finally:
            theirs.close()  # the process has its own copy (and so does the link, if any)
        self._channel = FrameChannel(
            reader, writer, from_worker, max_recv=self.spec.max_result_bytes
        )
        return link

    def _spawn_failed(self, exc: Exception) -> Exit:
        reason = f"spawn failed: {type(exc).__name__}: {exc}"
        self._fail_ready(StartupFailed(f"cannot spawn worker: {exc}"))
        info = Exit(
            requested=self._stop_requested,
            cause="requested" if self._stop_requested else "spawn_failed",
            reason=reason,
            was_ready=False,
            pid=self.pid,
            worker=self.index,
        )
        self._events.emit(
            "worker.exit",
            logging.INFO if self._stop_requested else logging.WARNING,
            agent=self.spec.id,
            worker=self.index,
            pid=self.pid,
            exit_code=None,
            signal=None,
            reason=reason,
            cause=info.cause,
            was_ready=False,
        )
        self._on_capacity()
        return info

    async def _spawn(self, connection: socket.socket) -> asyncio.subprocess.Process | ForkedProcess:
        settings = WorkerSettings(
            agent_id=self.spec.id,
            agent=self.spec.agent,
            model=self.spec.model,
            deps=self.spec.deps,
            max_concurrency=self.spec.max_concurrency,
            max_result_bytes=self.spec.max_result_bytes,
        )
        if self._fork_server is not None:
            forked = await self._fork_server.fork_worker(
                self.spec, msgspec.json.encode(settings), connection.fileno()
            )
            if forked is not None:
                self.start = "fork"
                return forked
        env = {**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1"}
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "axon.worker",
            str(connection.fileno()),
            msgspec.json.encode(settings).decode(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=(connection.fileno(),),
            env=env,
        )

    async def _supervise(self, started: float) -> Exit:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._spawn_task(self._pump_output(proc.stdout, "stdout"))
        self._spawn_task(self._pump_output(proc.stderr, "stderr"))
        waiter = asyncio.ensure_future(proc.wait())
        reader = asyncio.ensure_future(self._read_loop(started))
        startup_timer = asyncio.get_running_loop().call_later(
            self._supervision.startup_timeout, self._startup_overdue
        )
        try:
            await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                # EOF or an unrecoverable stream: the process is dying or must die.
                grace = (
                    self._supervision.shutdown_timeout
                    if self._stop_requested
                    else _EOF_REAP_TIMEOUT
                )
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), grace)
                except TimeoutError:
                    self.kill("connection lost but process still alive", "connection_lost")
                    await waiter
            else:
                # The process is gone; frames it wrote before dying may still be buffered.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), _EOF_REAP_TIMEOUT)
        finally:
            startup_timer.cancel()
            reader.cancel()
            waiter.cancel()
        return self._finish(proc.returncode)

    def _startup_overdue(self) -> None:
        if not self.ready.done():  # a worker that said ``ready`` in time is past start-up
            self.kill(f"not ready within {self._supervision.startup_timeout:g}s", "startup_timeout")

    def _finish(self, returncode: int | None) -> Exit:
        self._gone.set()
        if returncode is None and self._kill_reason is None and self.start == "fork":
            self._kill_reason = "exit status unknown: its zygote died before it could report it"
        code = returncode if returncode is not None and returncode >= 0 else None
        sig = -returncode if returncode is not None and returncode < 0 else None
        was_ready = (
            self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None
        )
        cause: ExitCause
        if self._kill_cause is not None:
            cause = self._kill_cause
        elif self._stop_requested:
            cause = "requested"
        elif not was_ready:
            cause = "startup_failed"
        else:
            cause = "exited" if code == 0 else "crashed"
        info = Exit(
            code=code,
            signal=sig,
            requested=self._stop_requested,
            cause=cause,
            reason=self._kill_reason,
            was_ready=was_ready,
            pid=self.pid,
            worker=self.index,
        )
        crash = self._crash_error(info)
        for call in self._runs.values():
            call.done = True
            call.deliver(crash)
        self._runs.clear()
        self._fail_ready(StartupFailed(f"worker exited during start-up: {info.describe()}"))
        abnormal = not info.requested and (info.code != 0 or info.signal is not None)
        self._events.emit(
            "worker.exit",
            logging.WARNING if abnormal else logging.INFO,
            agent=self.spec.id,
            worker=self.index,
            pid=self.pid,
            exit_code=info.code,
            signal=info.signal,
            reason=info.reason,
            cause=info.cause,
            was_ready=info.was_ready,
        )
        if self._channel is not None:
            # Synchronously: run() cancels our tasks as soon as we return, so a spawned
            # aclose() would never start and the transport would leak (ResourceWarning).
            self._channel.close()
        self._on_capacity()
        return info

    def _crash_error(self, info: Exit | None = None) -> AgentCrashed:
        return AgentCrashed(
            self.spec.id,
            pid=self.pid,
            exit_code=info.code if info else None,
            signal=info.signal if info else None,
            reason=(info.reason if info else None) or "worker connection lost",
        )

    def _fail_ready(self, error: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # mark retrieved: a start-up failure is reported via exit

    # -- what the worker sends --------------------------------------------------------------

    async def _read_loop(self, started: float) -> None:
        channel = self._channel
        assert channel is not None
        while True:
            try:
                frame = await channel.recv()
            except ChannelClosed:
                return
            except FrameTooLarge as exc:
                self._violation(exc.message)
                self.kill("unrecoverable frame from worker", "protocol")
                return
            except ProtocolError as exc:
                self._violation(exc.message, answer=exc)
            else:
                self._handle(frame, started)
            if self._kill_reason is not None:
                return  # killed: what it sent after that is not read

    def _handle(self, frame: Frame, started: float) -> None:
        match frame:
            case Pong(seq=seq):
                if seq in self._pings:
                    # Pings are answered in order: this one and those before it are done.
                    while self._pings.popleft() != seq:
                        pass
                    self._last_pong = time.monotonic()
                    self._stalled = 0.0
                else:
                    self._violation(f"pong {seq} answers no ping")
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
                self.kill("protocol version mismatch", "protocol")
            case Hello():
                pass
            case Ready() if self.ready.done():
                self._violation("a second ready frame")
            case Ready():
                self.startup_seconds = time.perf_counter() - started
                self._last_pong = time.monotonic()
                self.ready.set_result(None)
                self._events.emit(
                    "worker.ready",
                    logging.INFO,
                    agent=self.spec.id,
                    worker=self.index,
                    pid=self.pid,
                    startup_s=round(self.startup_seconds, 4),
                    start=self.start,
                )
                self._spawn_task(self._heartbeat())
                self._on_capacity()
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
        elif isinstance(error, StartupFailed) and not self.ready.done():
            self._events.emit(
                "worker.startup_failed",
                logging.ERROR,
                agent=self.spec.id,
                worker=self.index,
                pid=self.pid,
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
        call.deliver(ProtocolError(f"worker {self.pid} of agent {self.spec.id!r} sent {problem}"))
        self._send(Cancel(id=call.id))
        self._violation(f"run {call.id}: {problem}")

    def _violation(self, message: str, *, answer: ProtocolError | None = None) -> None:
        """One more protocol violation: logged, answered (if ``answer``) and counted; past the
        budget the worker is killed, so a worker cannot flood the log or the connection."""
        self.violations += 1
        if self.violations > PROTOCOL_BUDGET:
            self.kill(
                f"{self.violations} protocol violations (budget {PROTOCOL_BUDGET}); "
                f"the last: {message}",
                "protocol",
            )
            return
        self._events.emit(
            "protocol.error",
            logging.ERROR,
            agent=self.spec.id,
            worker=self.index,
            pid=self.pid,
            message=message,
        )
        if answer is not None:
            self._send(Error.of(None, answer.to_dict()))

    # -- what we send -----------------------------------------------------------------------

    def _send(self, frame: Frame) -> None:
        """Queue ``frame`` for the worker (best effort: the worker may be gone)."""
        if self._channel is None:
            return
        with contextlib.suppress(ChannelClosed):
            self._channel.send_nowait(frame)
            self._check_unread()

    def _check_unread(self) -> None:
        assert self._channel is not None
        unread = self._channel.buffered
        if unread > MAX_UNREAD:
            self.kill(f"not reading its connection ({unread} bytes unread)", "unresponsive")

    async def _heartbeat(self) -> None:
        interval = self._supervision.heartbeat_interval
        limit = self._supervision.heartbeat_timeout
        loop = asyncio.get_running_loop()
        # A worker being stopped is governed by the stop's own timeouts (it may be finishing
        # long runs); it is not judged as hung.
        while not self._gone.is_set() and not self._stop_requested:
            silent = time.monotonic() - self._last_pong - self._stalled
            if silent > limit:
                self._events.emit(
                    "worker.hung",
                    logging.ERROR,
                    agent=self.spec.id,
                    worker=self.index,
                    pid=self.pid,
                    silent_s=round(silent, 3),
                )
                self.kill(f"hung: no heartbeat for {silent:.1f}s", "hung")
                return
            seq = random.getrandbits(62)  # unguessable: only a worker that read the ping answers
            self._pings.append(seq)
            self._send(Ping(seq=seq))
            asleep = loop.time()
            await asyncio.sleep(interval)
            # Time this loop was stalled (late to wake us) is time the worker's answer could not
            # be read: it is not the worker's silence.
            late = loop.time() - asleep - interval
            if late > _LAG_TOLERANCE:
                self._stalled += late

    async def _pump_output(self, stream: asyncio.StreamReader, name: str) -> None:
        # stderr is where Python puts tracebacks and warnings: an operator wants to see those.
        level = logging.WARNING if name == "stderr" else logging.INFO
        fields = {"agent": self.spec.id, "worker": self.index, "pid": self.pid, "stream": name}

        def emit(line: str) -> None:
            self._events.emit("worker.output", level, **fields, line=line)

        def dropped(count: int) -> None:
            self._events.emit("worker.output_dropped", logging.WARNING, **fields, lines=count)

        await OutputPump(emit, dropped).run(stream)

    def _spawn_task(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- stopping ---------------------------------------------------------------------------

    def cut_connection(self) -> None:
        """Drop the socket to the worker abruptly (fault injection: a communication failure)."""
        if self._channel is not None:
            self._channel.abort()

    def kill(self, reason: str, cause: KillCause | None = None) -> None:
        """SIGKILL the worker's whole process group now; ``cause`` says why, unless the kill
        is part of a requested stop."""
        if self._proc is None or self._proc.returncode is not None or self._kill_reason is not None:
            return  # gone, or already killed: once is enough
        self._kill_reason = reason
        self._kill_cause = cause
        self._events.emit(
            "worker.kill",
            logging.WARNING,
            agent=self.spec.id,
            worker=self.index,
            pid=self.pid,
            reason=reason,
        )
        signal_group(self._proc.pid, signal.SIGKILL)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop politely: ``shutdown`` frame, then SIGTERM, then SIGKILL of the process group.

        Each step waits up to ``timeout`` (default: the supervisor's ``shutdown_timeout``).
        Returns once the process is gone.
        """
        self._stop_requested = True
        self._on_capacity()
        timeout = self._supervision.shutdown_timeout if timeout is None else timeout
        proc = self._proc
        if proc is None:
            return
        if self._channel is not None:
            self._send(Shutdown(grace=timeout))
        else:
            signal_group(proc.pid, signal.SIGTERM)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                await asyncio.wait_for(self._gone.wait(), timeout)
                return
            except TimeoutError:
                signal_group(proc.pid, sig)
        await self._gone.wait()
