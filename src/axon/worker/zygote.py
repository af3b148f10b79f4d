"""The zygote: a warm process that forks workers (``python -m axon.worker.zygote FD``).

A cold worker pays for a fresh interpreter and ``import pydantic_ai`` (about a second of CPU).
A zygote pays it once, then forks: a forked child has everything imported already and is ready
in milliseconds. There are two kinds, both running :func:`serve`:

- the **root zygote**, started cold by the orchestrator (:mod:`axon.pool.fork_server`): it
  imports pydantic-ai and Axon's worker code, nothing of the user's, and forks agent zygotes;
- one **agent zygote** per agent, forked from the root: it applies the agent's ``env``,
  imports the agent's module (and its ``deps`` module) and forks that agent's workers. Re-forking
  it from the root (``restart_agent``) picks up changed agent code, at the cost of that import.

Fork safety (docs/fork-server.md): a zygote starts no thread and no event loop and opens no
socket but its control channel, so a fork copies nothing that cannot be copied. Each forked
worker builds its own event loop, gets its own connection, stdout/stderr pipes and
process group, and is reseeded (``random`` reseeds itself after a fork). An agent module that
starts a thread at import makes its zygote refuse to fork (that agent's workers start cold).

Control channel: :mod:`axon.protocol.zygote` (a ``SOCK_SEQPACKET`` socket pair with the
orchestrator, one message per packet, file descriptors passed with their message). The loop
is plain blocking ``select`` on the channel and a wakeup pipe for ``SIGCHLD``: a zygote reaps
its children itself and reports every exit status (:class:`Exited`). The root is a child
subreaper, so workers whose agent zygote died are re-parented to it, still reaped and reported.

Workers outlive their zygote (they are never tied to its death): a worker dies with the
orchestrator through a watchdog thread on a pidfd of the orchestrator (and, as always, when its
connection closes). Zygotes die with their parent (``PR_SET_PDEATHSIG``), the root with the
orchestrator.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import NoReturn

import msgspec

from axon.protocol.zygote import (
    MAX_MESSAGE,
    Exited,
    Forked,
    ForkFailed,
    ForkWorker,
    ForkZygote,
    Message,
    Started,
    decode,
    encode,
)
from axon.worker.prctl import become_subreaper, die_with_parent, set_process_name

__all__ = ["EXIT_REFUSED", "ROOT_MODULES", "main"]

EXIT_REFUSED = 3
"""An agent zygote that could not import its agent's modules exits with this code."""


# -- the zygote loop -------------------------------------------------------------------------


class _Zygote:
    """One zygote's state: its channel and its wakeup pipe for SIGCHLD."""

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, _ignore)  # a Python handler, so the wakeup fd is written
        signal.set_wakeup_fd(self.wake_w)

    def send(self, message: Message) -> None:
        with contextlib.suppress(OSError):  # the orchestrator is gone: we are about to be too
            self.channel.sendall(encode(message))

    def serve(self) -> NoReturn:
        """Fork on request and report exits until the channel closes; then exit."""
        while True:
            readable, _, _ = select.select([self.channel, self.wake_r], [], [])
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
                self.reap()
            if self.channel in readable:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(self.channel, MAX_MESSAGE, 4)
                except OSError:
                    data, fds = b"", []
                if not data:
                    os._exit(0)  # the orchestrator closed our channel: nothing more to do
                try:
                    self.handle(decode(data), fds)
                finally:
                    for fd in fds:
                        with contextlib.suppress(OSError):
                            os.close(fd)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.send(Exited(pid, os.waitstatus_to_exitcode(status)))

    def handle(self, message: Message, fds: list[int]) -> None:
        match message:
            case ForkZygote() if len(fds) == 3:
                self.fork(lambda: self.become_agent_zygote(message, *fds))
            case ForkWorker() if len(fds) == 3:
                self.fork(lambda: self.become_worker(message, *fds), own_group=True)
            case _:
                self.send(ForkFailed(f"unexpected request {type(message).__name__}"))

    def fork(self, child: Callable[[], int], *, own_group: bool = False) -> None:
        """Fork; the child runs ``child()`` and exits with what it returns. ``own_group``: the
        child leads a new process group (what the orchestrator kills), made so by both sides
        before the answer is sent, so a kill that follows the answer at once finds it."""
        try:
            pid = os.fork()
        except OSError as exc:
            self.send(ForkFailed(f"fork failed: {exc}"))
            return
        if pid == 0:
            code = 70
            try:
                if own_group:
                    os.setpgid(0, 0)
                code = child()
            except BaseException as exc:
                _log(f"forked child failed: {type(exc).__name__}: {exc}")
            finally:
                os._exit(code)
        if own_group:
            with contextlib.suppress(OSError):  # it is already done, or the child is gone
                os.setpgid(pid, pid)
        self.send(Forked(pid))

    def leave(self) -> None:
        """In a forked child: drop what belongs to this zygote (its loop's fds, its handler)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.channel.close()

    def become_agent_zygote(
        self, request: ForkZygote, channel_fd: int, stdout_fd: int, stderr_fd: int
    ) -> int:
        self.leave()
        die_with_parent()
        _redirect_output(stdout_fd, stderr_fd)
        channel = socket.socket(fileno=channel_fd)
        set_process_name(f"axon-z:{request.agent}")
        os.environ.update(request.env)
        zygote = _Zygote(channel)
        error = _preload(request.modules)
        zygote.send(Started(os.getpid(), error))
        if error is not None:
            return EXIT_REFUSED
        zygote.serve()

    def become_worker(
        self, request: ForkWorker, channel_fd: int, stdout_fd: int, stderr_fd: int
    ) -> int:
        self.leave()
        _redirect_output(stdout_fd, stderr_fd)
        _watch_orchestrator(request.orchestrator)
        from axon.protocol.settings import WorkerSettings
        from axon.worker.host import serve_process

        settings = msgspec.json.decode(request.settings, type=WorkerSettings)
        return serve_process(channel_fd, settings)


def _redirect_output(stdout_fd: int, stderr_fd: int) -> None:
    """Make the pipes the orchestrator passed this process's stdout and stderr."""
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    os.close(stdout_fd)
    os.close(stderr_fd)


def _ignore(signum: int, frame: object) -> None:
    """SIGCHLD handler: the work happens in the loop (the wakeup fd wakes it)."""


def _preload(modules: list[str], warm_up: Callable[[], None] | None = None) -> str | None:
    """Import ``modules`` (and ``warm_up``) and freeze the heap; why this process must not
    fork, or None."""
    try:
        for name in modules:
            importlib.import_module(name)
        if warm_up is not None:
            warm_up()
    except BaseException as exc:  # whatever the user's module raises: report it, cold start
        traceback.print_exc()  # the whole story, on stderr (logged as zygote.output)
        return f"cannot import: {type(exc).__name__}: {exc}"
    if threading.active_count() > 1:
        names = ", ".join(
            t.name for t in threading.enumerate() if t is not threading.current_thread()
        )
        return f"a thread was started at import ({names}): forking it is not safe"
    gc.collect()
    gc.freeze()  # children do not touch these objects' GC headers: their pages stay shared
    return None


def _watch_orchestrator(pid: int) -> None:
    """SIGKILL this worker when process ``pid`` (the orchestrator) ends, from a thread blocked
    on a pidfd: a worker outlives its zygote, never its orchestrator."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="axon-orchestrator-watch", daemon=True).start()


def _log(message: str) -> None:
    print(f"zygote {os.getpid()}: {message}", file=sys.stderr, flush=True)


ROOT_MODULES = (
    "pydantic_ai",
    "pydantic_ai.models.test",
    "pydantic_ai.models.function",
    "axon.worker.host",
    "anyio._backends._asyncio",  # imported by pydantic-ai on a worker's first run otherwise
    "uvloop",
)
"""What the root zygote imports: pydantic-ai and Axon's worker side, nothing of the user's."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m axon.worker.zygote FD`` (FD: the control channel)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        _log("usage: python -m axon.worker.zygote FD")
        return 2
    die_with_parent()
    become_subreaper()
    set_process_name("axon-zygote")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the orchestrator's to handle
    zygote = _Zygote(socket.socket(fileno=int(args[0])))
    # Also run, once, what every worker runs on every run and that builds state on first use
    # (the message codecs, a private agent's run): made here, it is shared by every worker.
    from axon.worker.host import warm_up

    error = _preload(list(ROOT_MODULES), warm_up=warm_up)
    zygote.send(Started(os.getpid(), error))
    if error is not None:
        return EXIT_REFUSED
    zygote.serve()


if __name__ == "__main__":
    sys.exit(main())
