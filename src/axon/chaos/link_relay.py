"""Fault injection on the link between the orchestrator and a worker (like toxiproxy).

Give a :class:`FaultyLinks` to a runtime's spawner and every worker talks to the orchestrator
through its own :class:`LinkRelay`, a relay between the worker's socket and the orchestrator's,
on which a test (or ``axon chaos``) injects faults while runs go through it::

    from axon.chaos.link_relay import FaultyLinks
    from axon.chaos.spawner import ChaosSpawner

    links = FaultyLinks()
    async with Axon(specs, spawner=ChaosSpawner(links)) as axon:
        relay = links.relay("weather")          # worker 0's current link
        relay.delay(0.05)                       # 50 ms more latency per chunk, each way
        relay.slice(size=7, pause=0.001)        # frames arrive in 7-byte pieces
        relay.blackhole()                       # nothing gets through: heartbeats time out
        relay.reset()                           # both ends cut now: the worker is replaced
        relay.truncate(10)                      # 10 more bytes to the worker, then cut
        relay.restore()                         # back to a plain relay

Faults apply to the bytes read after they are set; a blackhole holds what it reads and delivers
it on :meth:`LinkRelay.restore` (like TCP retransmission). Each worker start gets a new relay
(a restarted worker's link is clean); :meth:`FaultyLinks.relay` is always the current one.
Everything runs on the event loop of the runtime.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Literal

__all__ = ["Direction", "FaultyLinks", "LinkRelay"]

Direction = Literal["to_worker", "to_orchestrator", "both"]
"""Which way a fault applies: bytes the orchestrator sends, bytes the worker sends, or both."""

_CHUNK = 65536


class LinkRelay:
    """One worker's link: relays between the worker's socket and the orchestrator's end of the
    connection, with faults."""

    def __init__(self, upstream: socket.socket) -> None:
        self._upstream = upstream
        self._relay_end, self._worker_socket = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay = 0.0
        self._slice: tuple[int, float] | None = None
        self._budget: dict[str, int | None] = {"to_worker": None, "to_orchestrator": None}
        self.connected = asyncio.Event()
        """Set once the relay is carrying the worker's connection."""
        self.forwarded = {"to_worker": 0, "to_orchestrator": 0}
        """Bytes forwarded so far, each way."""
        self._seen = {"to_worker": b"", "to_orchestrator": b""}
        self._read = asyncio.Condition()

    @property
    def worker_socket(self) -> socket.socket:
        return self._worker_socket

    async def start(self) -> LinkRelay:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(sock=self._upstream)
            worker_reader, worker_writer = await asyncio.open_unix_connection(sock=self._relay_end)
        except BaseException:
            for sock in (self._upstream, self._relay_end, self._worker_socket):
                sock.close()
            raise
        self._writers += [up_writer, worker_writer]
        self.connected.set()
        task = asyncio.get_running_loop().create_task(
            self._serve(worker_reader, worker_writer, up_reader, up_writer)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return self

    async def aclose(self) -> None:
        self._abort_all()
        self._worker_socket.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- faults -------------------------------------------------------------------------------

    def delay(self, seconds: float) -> None:
        """Hold each chunk ``seconds`` before forwarding it (latency), both ways."""
        self._delay = seconds

    def slice(self, *, size: int, pause: float = 0.0) -> None:
        """Forward in pieces of ``size`` bytes, ``pause`` seconds apart (frames fragment)."""
        if size < 1:
            raise ValueError("size must be at least 1")
        self._slice = (size, pause)

    def blackhole(self) -> None:
        """Forward nothing (the connection stays open) until :meth:`restore`."""
        self._flowing.clear()

    def reset(self) -> None:
        """Cut both ends of the link now."""
        self._abort_all()

    def truncate(self, nbytes: int, direction: Direction = "to_worker") -> None:
        """Forward ``nbytes`` more bytes ``direction``, then cut the link (a partial frame)."""
        for way in self._ways(direction):
            self._budget[way] = nbytes

    def restore(self) -> None:
        """A plain relay again (held bytes are delivered)."""
        self._delay = 0.0
        self._slice = None
        self._budget = {"to_worker": None, "to_orchestrator": None}
        self._flowing.set()

    async def wait_seen(self, marker: bytes, direction: Direction = "to_worker") -> None:
        """Wait until bytes containing ``marker`` were read from the sender (they may be held
        by a fault): e.g. a prompt, to know its ``run`` frame left the orchestrator."""
        ways = self._ways(direction)
        async with self._read:
            await self._read.wait_for(lambda: any(marker in self._seen[w] for w in ways))

    @staticmethod
    def _ways(direction: Direction) -> tuple[str, ...]:
        return ("to_worker", "to_orchestrator") if direction == "both" else (direction,)

    # -- relaying -----------------------------------------------------------------------------

    async def _serve(
        self,
        worker_reader: asyncio.StreamReader,
        worker_writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        await asyncio.gather(
            self._pump(worker_reader, up_writer, "to_orchestrator"),
            self._pump(up_reader, worker_writer, "to_worker"),
            return_exceptions=True,
        )
        self._abort_all()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str
    ) -> None:
        while chunk := await reader.read(_CHUNK):
            async with self._read:
                self._seen[way] = (self._seen[way] + chunk)[-_CHUNK:]
                self._read.notify_all()
            await self._flowing.wait()
            if self._delay:
                await asyncio.sleep(self._delay)
            budget = self._budget[way]
            if budget is not None:
                chunk = chunk[:budget]
                self._budget[way] = budget - len(chunk)
            await self._write(writer, chunk, way)
            if budget is not None and self._budget[way] == 0:
                self._abort_all()
                return
        if writer.can_write_eof():
            writer.write_eof()  # the other side's EOF, passed on

    async def _write(self, writer: asyncio.StreamWriter, chunk: bytes, way: str) -> None:
        if self._slice is None:
            pieces = [chunk]
            pause = 0.0
        else:
            size, pause = self._slice
            pieces = [chunk[i : i + size] for i in range(0, len(chunk), size)]
        for n, piece in enumerate(pieces):
            if n and pause:
                await asyncio.sleep(pause)
            writer.write(piece)
            await writer.drain()
            self.forwarded[way] += len(piece)

    def _abort_all(self) -> None:
        for writer in self._writers:
            _abort(writer)


class FaultyLinks:
    """The ``links`` of a spawner (:class:`~axon.chaos.spawner.ChaosSpawner`): a
    :class:`LinkRelay` per worker start."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, int], LinkRelay] = {}
        self.opened = 0
        """Relays made so far (one per worker start)."""

    async def open(
        self, agent_id: str, index: int, generation: int, worker_end: socket.socket
    ) -> LinkRelay:
        relay = await LinkRelay(worker_end).start()
        self._current[(agent_id, index)] = relay
        self.opened += 1
        return relay

    def relay(self, agent_id: str, index: int = 0) -> LinkRelay:
        """The link of worker ``index`` of ``agent_id`` as of its latest start."""
        try:
            return self._current[(agent_id, index)]
        except KeyError:
            raise LookupError(f"worker {index} of {agent_id!r} has not started") from None

    def close(self) -> None:
        """Forget the relays (after the runtime stopped; each closed with its worker)."""
        self._current.clear()


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
