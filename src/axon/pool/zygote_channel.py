"""The orchestrator's end of a zygote's control channel (:mod:`axon.protocol.zygote`):
:class:`ZygoteChannel` sends fork requests and reads their answers, in order, and the exits the
zygote reports, at any time; :func:`fork_request` asks for one fork, with the new process's
stdout and stderr pipes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
from collections.abc import Callable

import msgspec

from axon.pool.groups import kill_group
from axon.protocol.zygote import (
    MAX_MESSAGE,
    Exited,
    Forked,
    ForkFailed,
    Message,
    Started,
    decode,
    encode,
)

__all__ = ["ZygoteChannel", "fork_request"]


class ZygoteChannel:
    """A zygote's control channel: requests are answered in order; exits come at any time."""

    def __init__(self, sock: socket.socket, on_exit: Callable[[int, int], None]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._on_exit = on_exit
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[Started | None] = loop.create_future()
        self._pending: collections.deque[asyncio.Future[Forked | ForkFailed]] = collections.deque()
        self.closed = asyncio.Event()
        self._reader = loop.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self._sock, MAX_MESSAGE):
                self._dispatch(decode(data))
        except (OSError, msgspec.DecodeError):
            pass  # a broken channel is a dead zygote: handled below
        finally:
            self.closed.set()
            gone = ForkFailed("the zygote is gone")
            while self._pending:
                future = self._pending.popleft()
                if not future.done():
                    future.set_result(gone)
            if not self._started.done():
                self._started.set_result(None)

    def _dispatch(self, message: Message) -> None:
        match message:
            case Started():
                if not self._started.done():
                    self._started.set_result(message)
            case Forked() | ForkFailed():
                future = self._pending.popleft() if self._pending else None
                if future is not None and not future.done():
                    future.set_result(message)
                elif isinstance(message, Forked):
                    kill_group(message.pid)  # forked for a request that was cancelled
            case Exited(pid=pid, code=code):
                self._on_exit(pid, code)
            case _:
                pass  # requests travel the other way

    async def wait_started(self, timeout: float) -> Started | str:
        """The zygote's :class:`Started` (its ``error`` says why it cannot fork, if it cannot),
        or why it never said it: it died, or took longer than ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                started = await asyncio.shield(self._started)
        except TimeoutError:
            return f"not ready within {timeout:g}s"
        return "it exited before it was ready" if started is None else started

    async def request(self, message: Message, fds: list[int]) -> Forked | ForkFailed:
        if self.closed.is_set():
            return ForkFailed("the zygote is gone")
        future: asyncio.Future[Forked | ForkFailed] = asyncio.get_running_loop().create_future()
        try:
            # One small packet: a SOCK_SEQPACKET send of it does not block in practice.
            socket.send_fds(self._sock, [encode(message)], fds)
        except OSError as exc:
            return ForkFailed(f"cannot reach the zygote: {exc}")
        self._pending.append(future)
        return await future

    async def aclose(self) -> None:
        self._sock.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def fork_request(
    channel: ZygoteChannel, request: Message, *fds: int
) -> tuple[int, int, int] | None:
    """Ask ``channel``'s zygote to fork, passing ``fds`` and a new stdout and a new stderr pipe:
    the child's pid and the read ends of its two pipes, or None if it did not fork (then, as on
    cancellation, nothing of the pipes is left open here)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    answer: Forked | ForkFailed = ForkFailed("cancelled")
    try:
        answer = await channel.request(request, [*fds, out_w, err_w])
    finally:
        os.close(out_w)
        os.close(err_w)
        if isinstance(answer, ForkFailed):
            os.close(out_r)
            os.close(err_r)
    if isinstance(answer, ForkFailed):
        return None
    return answer.pid, out_r, err_r
