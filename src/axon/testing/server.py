"""``axon serve`` as a real subprocess on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["AxonServer"]

_serial = itertools.count(1)
_READY = re.compile(r"axon is serving .* on (http://\S+)")


class AxonServer:
    """A running ``axon serve``: ``url``, ``pid``, its output, and a way to stop it.

    ``await AxonServer.start(config, cwd=tmp_path)`` returns once the server accepts requests
    (it printed its URL); ``await server.stop()`` sends SIGTERM and returns the exit code.
    """

    def __init__(self, process: asyncio.subprocess.Process, url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log
        self._lines: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls,
        config: Path | None = None,
        *,
        cwd: Path,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        listen: str = "127.0.0.1:0",
        timeout: float = 90.0,
    ) -> AxonServer:
        """Start ``axon serve [config] --listen LISTEN ARGS`` in ``cwd``; stderr (the logs)
        goes to ``cwd/axon-serve-N.log``. Raises ``AssertionError`` with the output if it
        exits or does not become ready within ``timeout`` seconds."""
        command = [sys.executable, "-m", "axon.cli", "serve"]
        if config is not None:
            command.append(str(config))
        command += ["--listen", listen, *args]
        log = cwd / f"axon-serve-{next(_serial)}.log"
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=cwd,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env={**os.environ, "COLUMNS": "200", **(env or {})},
            )
        assert process.stdout is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while line := (await process.stdout.readline()).decode():
                    seen.append(line)
                    if match := _READY.search(line):
                        server = cls(process, match.group(1), log)
                        server._lines = seen
                        server._drain = asyncio.get_running_loop().create_task(server._read())
                        return server
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise AssertionError(
            f"axon serve did not become ready (exit code {process.returncode}):\n"
            + "".join(seen)
            + log.read_text(errors="replace")
        )

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self._lines.append(line.decode())

    def stdout(self) -> str:
        return "".join(self._lines)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    async def wait(self, timeout: float = 60.0) -> int:
        """The exit code, once the process has exited (and its output is all read)."""
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            if self._drain is not None:
                await self._drain
        return code

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit code; SIGKILL if it takes longer than
        ``timeout`` seconds (then ``AssertionError``)."""
        if self.process.returncode is not None:
            return self.process.returncode
        self.send_signal(sig)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.send_signal(signal.SIGKILL)
            await self.process.wait()
            raise AssertionError(
                f"axon serve did not exit within {timeout}s of signal {sig}:\n{self.logs()}"
            ) from None
