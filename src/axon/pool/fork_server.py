"""The orchestrator's side of the zygotes (:mod:`axon.worker.zygote`): start and supervise them,
and ask them for workers.

One :class:`ForkServer` per runtime. It starts the root zygote cold in the background when the
runtime starts, restarts it (with a backoff) if it dies, and forks one agent zygote per agent
from it on that agent's first worker. :meth:`ForkServer.fork_worker` returns a
:class:`ForkedProcess`, or None when no zygote can fork one now (the root is down or refused,
the agent's modules start threads or fail to import, a fork failed): the caller then starts the
worker cold, as before. So the fork server only ever makes a start faster; it never decides
whether a worker can start.

A forked worker is a grandchild of the orchestrator, not a child: its death is seen on a pidfd
(readable the instant it exits), its exit status comes from the zygote that reaps it, and its
stdout and stderr are pipes the orchestrator creates and hands over with the fork request.

Cancellation contract: :meth:`ForkServer.fork_worker` may be cancelled; a worker forked for a
request that was cancelled is killed. :meth:`ForkServer.close` kills every zygote (never the
workers: their supervisors stop them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import sys
import time

from axon._tasks import TaskSet
from axon.config import AgentSpec
from axon.observability.events import EventBus
from axon.pool.forked import ForkedProcess
from axon.pool.groups import kill_group
from axon.pool.output import OutputPump
from axon.pool.zygote_channel import ZygoteChannel, fork_request
from axon.protocol.zygote import (
    ForkWorker,
    ForkZygote,
)

__all__ = ["FORK_SUPPORTED", "ForkServer"]

FORK_SUPPORTED = sys.platform.startswith("linux") and hasattr(os, "pidfd_open")
"""Whether this platform can run the fork server (Linux: ``fork``, pidfds, ``prctl``)."""

ROOT_STARTUP_TIMEOUT = 30.0
"""Seconds the root zygote gets to import pydantic-ai and say it is ready."""
AGENT_ZYGOTE_TIMEOUT = 30.0
"""Seconds an agent zygote gets to import its agent's modules."""
_BACKOFF_INITIAL = 0.5
_BACKOFF_MAX = 30.0
_UNCLAIMED_EXITS = 1024


class _AgentZygote:
    def __init__(
        self,
        pid: int,
        channel: ZygoteChannel,
        transports: list[asyncio.BaseTransport],
        pumps: list[asyncio.Task[None]],
    ) -> None:
        self.pid = pid
        self.channel = channel
        self.transports = transports
        self.pumps = pumps


class ForkServer:
    """The zygotes of one runtime (see the module docstring)."""

    def __init__(self, events: EventBus | None = None) -> None:
        self._events = events or EventBus()
        self._root: ZygoteChannel | None = None
        """The root zygote's channel while it is up (ready to fork agent zygotes)."""
        self._first_start = asyncio.Event()
        """Set once the first attempt to start the root is over: it is ready, or it failed."""
        self._closing = False
        self._disabled: str | None = None
        self._agents: dict[str, _AgentZygote] = {}
        self._refused: dict[str, str] = {}
        self._creating: dict[str, asyncio.Future[_AgentZygote | None]] = {}
        self._processes: dict[int, ForkedProcess] = {}
        self._unclaimed: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._pumps = TaskSet("fork-server", self._events)
        """The zygotes' output pumps."""

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the root zygote in the background (and keep it running)."""
        if self._task is None:
            self._closing = False
            self._first_start.clear()
            self._pumps = TaskSet("fork-server", self._events)  # a closed one takes no task
            self._task = asyncio.get_running_loop().create_task(self._supervise_root())

    async def close(self) -> None:
        """Kill every zygote; idempotent."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._pumps.aclose()
        for agent in list(self._agents):
            await self._drop_agent(agent)

    async def _supervise_root(self) -> None:
        failures = 0
        try:
            while True:
                started = await self._run_root()
                self._first_start.set()
                if self._disabled is not None:
                    return
                failures = 0 if started else failures + 1
                delay = min(_BACKOFF_MAX, _BACKOFF_INITIAL * 2**failures)
                await asyncio.sleep(delay)
        finally:
            self._first_start.set()

    async def _run_root(self) -> bool:
        """One life of the root zygote; whether it got as far as ready."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        began = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "axon.worker.zygote",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as exc:
            parent.close()
            self._disabled = f"cannot start the root zygote: {exc}"
            self._emit_refused(None, self._disabled)
            return False
        finally:
            child.close()
        channel = ZygoteChannel(parent, self._exited)
        pumps = [
            self._pumps.create_task(self._pump(None, proc.pid, stream, name))
            for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))
            if stream is not None
        ]
        try:
            hello = await channel.wait_started(ROOT_STARTUP_TIMEOUT)
            if isinstance(hello, str):  # it may start next time: it is tried again
                self._emit_refused(None, f"the root zygote did not start: {hello}")
                return False
            if hello.error is not None:
                self._emit_refused(None, hello.error)
                self._disabled = hello.error  # it cannot import pydantic-ai: it never will
                return False
            self._root = channel
            self._first_start.set()
            self._emit_ready(None, proc.pid, time.perf_counter() - began)
            waiting = asyncio.ensure_future(proc.wait())
            closed = asyncio.ensure_future(channel.closed.wait())
            try:
                await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                closed.cancel()
            return True
        finally:
            self._root = None
            kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
            await channel.aclose()
            await asyncio.wait(pumps, timeout=1.0)
            # Its agent zygotes die with it (killed with its process group, or by their
            # parent-death signal): wait until they are gone.
            zygotes = [z.pid for z in self._agents.values()]
            for agent in list(self._agents):
                await self._drop_agent(agent)
            await _gone(zygotes)
            self._emit_exit(None, proc.pid, proc.returncode)

    # -- forking ----------------------------------------------------------------------------

    async def fork_worker(
        self, spec: AgentSpec, settings: bytes, connection: int
    ) -> ForkedProcess | None:
        """A worker of ``spec`` forked from its agent zygote, or None (start it cold).
        ``connection``: the file descriptor of the worker's end of its connection."""
        zygote = await self._agent_zygote(spec)
        if zygote is None:
            return None
        forked = await fork_request(zygote.channel, ForkWorker(settings, os.getpid()), connection)
        if forked is None:
            return None
        pid, out_r, err_r = forked
        try:
            stdout, out_t = await _pipe_reader(out_r)
            stderr, err_t = await _pipe_reader(err_r)
        except BaseException:
            kill_group(pid)
            raise
        process = ForkedProcess(pid, stdout, stderr, [out_t, err_t])
        self._processes[pid] = process
        unclaimed = self._unclaimed.pop(pid, None)
        if unclaimed is not None:
            process.exited(unclaimed)
        return process

    def forget(self, process: ForkedProcess) -> None:
        """The worker's life is over: stop tracking it and release its resources."""
        self._processes.pop(process.pid, None)
        process.close()

    async def reset(self, agent_id: str) -> None:
        """Drop the agent's zygote: its next worker is forked from a new one, which imports
        the agent's modules afresh (``restart_agent`` picks up changed code)."""
        self._refused.pop(agent_id, None)
        creating = self._creating.get(agent_id)
        if creating is not None:  # made from the old code: let it finish, then drop it too
            await asyncio.wait([creating])
        await self._drop_agent(agent_id)

    async def _agent_zygote(self, spec: AgentSpec) -> _AgentZygote | None:
        if self._disabled is not None or spec.id in self._refused:
            return None
        zygote = self._agents.get(spec.id)
        if zygote is not None and not zygote.channel.closed.is_set():
            return zygote
        if self._root is None:
            if self._first_start.is_set() or self._task is None:
                return None  # the root is down: start cold rather than wait for it
            await self._first_start.wait()  # the runtime is starting: the root is coming
            if self._root is None:
                return None
        creating = self._creating.get(spec.id)
        if creating is None:
            creating = asyncio.ensure_future(self._create_agent_zygote(spec))
            self._creating[spec.id] = creating
            creating.add_done_callback(lambda _: self._creating.pop(spec.id, None))
        return await asyncio.shield(creating)

    async def _create_agent_zygote(self, spec: AgentSpec) -> _AgentZygote | None:
        root = self._root
        if root is None:
            return None
        await self._drop_agent(spec.id)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        began = time.perf_counter()
        try:
            forked = await fork_request(
                root, ForkZygote(spec.id, dict(spec.env), _modules_of(spec)), child.fileno()
            )
        finally:
            child.close()
        if forked is None:
            parent.close()
            return None
        pid, out_r, err_r = forked
        transports: list[asyncio.BaseTransport] = []
        pumps: list[asyncio.Task[None]] = []
        for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
            reader, transport = await _pipe_reader(fd)
            transports.append(transport)
            pumps.append(self._pumps.create_task(self._pump(spec.id, pid, reader, name)))
        channel = ZygoteChannel(parent, self._exited)
        hello = await channel.wait_started(AGENT_ZYGOTE_TIMEOUT)
        reason = hello if isinstance(hello, str) else hello.error
        if reason is not None:
            self._refused[spec.id] = reason
            self._emit_refused(spec.id, reason)
            kill_group(pid, group=False)
            await channel.aclose()
            await _gone([pid])
            await _finish_output(pumps, transports)
            return None
        zygote = _AgentZygote(pid, channel, transports, pumps)
        self._agents[spec.id] = zygote
        self._emit_ready(spec.id, pid, time.perf_counter() - began)
        return zygote

    async def _drop_agent(self, agent_id: str) -> None:
        zygote = self._agents.pop(agent_id, None)
        if zygote is not None:
            # Closing its channel ends it (its workers live on, re-parented to the root); its
            # output pipes close when it is gone.
            await zygote.channel.aclose()
            await _gone([zygote.pid])
            await _finish_output(zygote.pumps, zygote.transports)

    def _exited(self, pid: int, code: int) -> None:
        process = self._processes.get(pid)
        if process is not None:
            process.exited(code)
            return
        agent = next((a for a, z in self._agents.items() if z.pid == pid), None)
        if agent is not None:
            self._emit_exit(agent, pid, code)
            return
        self._unclaimed[pid] = code  # a fork whose answer is still on its way, or a stray
        while len(self._unclaimed) > _UNCLAIMED_EXITS:
            self._unclaimed.popitem(last=False)

    # -- events -----------------------------------------------------------------------------

    def _emit_ready(self, agent: str | None, pid: int, seconds: float) -> None:
        self._events.emit(
            "zygote.ready", logging.INFO, agent=agent, pid=pid, startup_s=round(seconds, 4)
        )

    def _emit_refused(self, agent: str | None, reason: str) -> None:
        self._events.emit("zygote.refused", logging.WARNING, agent=agent, reason=reason)

    def _emit_exit(self, agent: str | None, pid: int, code: int | None) -> None:
        self._events.emit(
            "zygote.exit",
            logging.INFO if self._closing or code == 0 else logging.WARNING,
            agent=agent,
            pid=pid,
            exit_code=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
        )

    async def _pump(
        self, agent: str | None, pid: int, stream: asyncio.StreamReader, name: str
    ) -> None:
        level = logging.WARNING if name == "stderr" else logging.INFO
        fields = {"agent": agent, "pid": pid, "stream": name}

        def emit(line: str) -> None:
            self._events.emit("zygote.output", level, **fields, line=line)

        def dropped(count: int) -> None:
            self._events.emit("zygote.output_dropped", logging.WARNING, **fields, lines=count)

        await OutputPump(emit, dropped).run(stream)


def _modules_of(spec: AgentSpec) -> list[str]:
    """The modules an agent zygote imports: the agent's, and its deps factory's."""
    paths = [spec.agent] if spec.deps is None else [spec.agent, spec.deps]
    return list(dict.fromkeys(path.partition(":")[0] for path in paths))


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def _finish_output(
    pumps: list[asyncio.Task[None]], transports: list[asyncio.BaseTransport]
) -> None:
    """Let a dead zygote's output pumps read to the end (briefly), then close the pipes."""
    await asyncio.wait(pumps, timeout=1.0)
    for transport in transports:
        transport.close()


async def _gone(pids: list[int], timeout: float = 2.0) -> None:
    """Until every process of ``pids`` has exited (at most ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    waits: list[tuple[int, asyncio.Future[None]]] = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, lambda f=done: f.done() or f.set_result(None))
        waits.append((fd, done))
    try:
        if waits:
            await asyncio.wait([f for _, f in waits], timeout=timeout)
    finally:
        for fd, _ in waits:
            loop.remove_reader(fd)
            os.close(fd)
