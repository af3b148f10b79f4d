"""A worker forked by a zygote, as the orchestrator sees it: :class:`ForkedProcess`."""

from __future__ import annotations

import asyncio
import contextlib
import os

__all__ = ["STATUS_WAIT", "ForkedProcess"]

STATUS_WAIT = 1.0
"""After a forked worker died, how long to wait for its zygote to report the exit status."""


class ForkedProcess:
    """A worker forked by a zygote, with what :class:`~axon.pool.process.WorkerProcess`
    uses of a process: ``pid``, ``stdout``, ``stderr``, ``wait()`` and ``returncode``."""

    def __init__(
        self,
        pid: int,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        transports: list[asyncio.BaseTransport],
    ) -> None:
        loop = asyncio.get_running_loop()
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        """Once ``wait()`` returned: as ``asyncio`` reports it (negative: a signal), or None
        if the exit status was lost (its zygote died before it could report it)."""
        self._transports = transports
        self._status: asyncio.Future[int] = loop.create_future()
        self._dead = asyncio.Event()
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._dead.set()  # already gone (and reaped): its zygote reports the status
        else:
            loop.add_reader(self._pidfd, self._on_dead)

    def exited(self, code: int) -> None:
        """Its zygote reaped it: the exit status."""
        if not self._status.done():
            self._status.set_result(code)

    def _on_dead(self) -> None:
        self._close_pidfd()
        self._dead.set()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def wait(self) -> int | None:
        """Until the process is gone; its exit code (see :attr:`returncode`)."""
        await self._dead.wait()
        if not self._status.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATUS_WAIT):
                    await asyncio.shield(self._status)
        if self._status.done():
            self.returncode = self._status.result()
        return self.returncode

    def close(self) -> None:
        """Release the pidfd and the output pipes (once the worker's life is over)."""
        self._close_pidfd()
        for transport in self._transports:
            transport.close()
