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

Once the process runs, its connection is a :class:`~axon.pool.session.WorkerSession`: the runs
in flight, what the worker sends (a worker is untrusted input: docs/threat-model.md), the
heartbeat.

A worker is killed (SIGKILL to its whole process group) when its session says so (it stopped
answering heartbeats, ignored a cancel, broke the protocol, stopped reading its connection), or
when it is not ready within ``startup_timeout``.

Cancellation contract: cancelling ``run()`` kills the process group and waits for it to be
reaped before re-raising, so no process outlives its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import msgspec

from axon.config import AgentSpec, SupervisorSpec
from axon.errors import AgentCrashed, StartupFailed
from axon.exits import Exit, ExitCause, KillCause
from axon.observability.events import EventBus
from axon.pool.fork_server import ForkServer
from axon.pool.forked import ForkedProcess
from axon.pool.groups import signal_group
from axon.pool.links import WorkerLink, WorkerLinks
from axon.pool.output import OutputPump
from axon.pool.session import WorkerSession
from axon.protocol.channel import FrameChannel
from axon.protocol.codec import from_worker
from axon.protocol.frames import (
    Shutdown,
)
from axon.protocol.settings import WorkerSettings
from axon.run_call import RunCall, RunRequest, WorkerGone

__all__ = ["WorkerProcess"]

_EOF_REAP_TIMEOUT = 1.0
"""After EOF, how long the process gets to be reaped before we SIGKILL it."""


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
        self._session: WorkerSession | None = None
        self._proc: asyncio.subprocess.Process | ForkedProcess | None = None
        self.start: Literal["fork", "cold"] = "cold"
        """How the process was started: forked from its agent's zygote, or a new interpreter."""
        self._started = 0.0
        self._stop_requested = False
        self._kill_reason: str | None = None
        self._kill_cause: KillCause | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._gone = asyncio.Event()

    # -- what the router sees ------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return 0 if self._session is None else self._session.in_flight

    @property
    def violations(self) -> int:
        """Protocol violations this worker committed (``axon.pool.session.PROTOCOL_BUDGET``)."""
        return 0 if self._session is None else self._session.violations

    @property
    def serving(self) -> bool:
        """Ready, not stopping, and not dead."""
        return (
            self.ready.done()
            and not self.ready.cancelled()
            and self.ready.exception() is None
            and not self._stop_requested
            and not self._gone.is_set()
            and self._session is not None
            and not self._session.closed
        )

    def start_run(self, request: RunRequest) -> RunCall:
        """Send a ``run`` frame now (no await: callers rely on it to keep slot counts exact).
        ``WorkerGone`` if the worker's connection is closed (nothing was sent)."""
        if self._session is None:
            raise WorkerGone(self.pid)
        return self._session.start_run(request)

    def cancel_run(self, call: RunCall) -> None:
        """Ask the worker to cancel ``call``; kill the worker if it has not ended it in time."""
        if self._session is not None:
            self._session.cancel_run(call)

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
        self._started = time.perf_counter()
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
            assert self._channel is not None
            self._session = WorkerSession(
                self._channel,
                agent_id=self.spec.id,
                index=self.index,
                pid=self.pid,
                supervision=self._supervision,
                events=self._events,
                kill=self.kill,
                on_ready=self._said_ready,
                on_capacity=self._on_capacity,
                on_load=self._on_load,
                spawn=self._spawn_task,
            )
            if self._stop_requested:
                # stop() came while the process was being spawned (a fork can wait for its
                # zygote): it found no process to stop, so this one must not serve.
                self.kill("stopped while it was starting")
            try:
                return await self._supervise(self._session)
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

    async def _supervise(self, session: WorkerSession) -> Exit:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._spawn_task(self._pump_output(proc.stdout, "stdout"))
        self._spawn_task(self._pump_output(proc.stderr, "stderr"))
        waiter = asyncio.ensure_future(proc.wait())
        reader = asyncio.ensure_future(session.read())
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
        if self._session is not None:
            self._session.fail_runs(self._crash_error(info))
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

    def _said_ready(self) -> None:
        """The worker's ``ready`` arrived: it is RUNNING from now on, and heartbeats start."""
        assert self._session is not None
        self.startup_seconds = time.perf_counter() - self._started
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
        self._spawn_task(self._session.heartbeat())
        self._on_capacity()

    async def _pump_output(self, stream: asyncio.StreamReader, name: str) -> None:
        # stderr is where Python puts tracebacks and warnings: an operator wants to see those.
        level = logging.WARNING if name == "stderr" else logging.INFO
        fields = {"agent": self.spec.id, "worker": self.index, "pid": self.pid, "stream": name}

        def emit(line: str) -> None:
            self._events.emit("worker.output", level, **fields, line=line)

        def dropped(count: int) -> None:
            self._events.emit("worker.output_dropped", logging.WARNING, **fields, lines=count)

        await OutputPump(emit, dropped).run(stream)

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
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
        if self._session is not None:
            self._session.condemned = True
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
        if self._session is not None:
            self._session.stopping = True
        self._on_capacity()
        timeout = self._supervision.shutdown_timeout if timeout is None else timeout
        proc = self._proc
        if proc is None:
            return
        if self._session is not None:
            self._session.send(Shutdown(grace=timeout))
        else:
            signal_group(proc.pid, signal.SIGTERM)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                await asyncio.wait_for(self._gone.wait(), timeout)
                return
            except TimeoutError:
                signal_group(proc.pid, sig)
        await self._gone.wait()
