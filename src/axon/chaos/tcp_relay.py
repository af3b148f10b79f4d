"""A loopback TCP relay whose traffic a test can cut and restore.

Put it between a client and a server to make the server unreachable for that client only,
without touching the server (which other tests or processes may share)::

    from axon.chaos.tcp_relay import TcpRelay

    async with TcpRelay("127.0.0.1", 5432) as relay:
        store = PostgresStore.from_url(relay.rewrite(postgres_url))  # same URL, relay's port
        ...
        await relay.cut()          # the server "goes down"
        ...                        # every use of the store fails with StoreUnavailable
        relay.restore()            # the server "comes back"

Two ways to cut (:meth:`TcpRelay.cut`):

``cut()`` (``blackhole=False``): like a server that stopped
    every relayed connection is closed at once (with a TCP reset where the platform allows),
    and each new connection is accepted and closed at once: clients see errors immediately.
``cut(blackhole=True)``: like a network that drops packets
    connections stay open but nothing is forwarded, and new connections are accepted but never
    reach the server: clients see silence, and only their own timeouts end their waits. On
    :meth:`TcpRelay.restore`, the bytes held meanwhile are delivered (as TCP retransmission
    would) and connections still open carry on.

A third fault is narrower: :meth:`TcpRelay.cut_after` lets the next client chunk that holds
a marker (``b"COMMIT"``, say) reach the server, then resets the client's connection before any
answer comes back: the server acts on the request, the client never learns that it did (a lost
acknowledgement).

The relay runs on the event loop that starts it; everything it does happens in that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpRelay"]

_CHUNK = 65536


class TcpRelay:
    """Relay ``listen_host:listen_port`` (port 0: any free port) to ``target_host:target_port``.

    ``await relay.start()`` / ``await relay.close()``, or ``async with TcpRelay(...)``.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._mode: str | None = None  # None (relaying), "reset" or "blackhole"
        self._links: set[_Link] = set()
        self._marker: bytes | None = None
        self._marker_seen = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        """Connections accepted so far (including those refused while cut)."""

    @classmethod
    def in_front_of(cls, url: str) -> TcpRelay:
        """A relay to the host and port of ``url`` (``scheme://user@host:port/...``)."""
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{url!r} names no host:port")
        return cls(parts.hostname, parts.port)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> TcpRelay:
        if self._server is not None:
            raise RuntimeError("the relay is already started")
        self._server = await asyncio.start_server(self._accept, self.listen_host, self._listen_port)
        return self

    async def close(self) -> None:
        """Stop listening and close every connection; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.abort()
        self._flowing.set()  # wake held pumps so they notice their closed sockets
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> TcpRelay:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- where it listens -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the relay listens on."""
        if self._server is None:
            raise RuntimeError("the relay is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        return self.listen_host

    def rewrite(self, url: str) -> str:
        """``url`` with its host and port replaced by the relay's (user, path and query kept)."""
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{self.host}:{self.port}"))

    # -- faults ----------------------------------------------------------------------------------

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    @property
    def connections(self) -> int:
        """Relayed connections currently open."""
        return len(self._links)

    async def cut(self, *, blackhole: bool = False) -> None:
        """Cut the traffic (see the module docstring); returns once every relayed connection
        is closed (``blackhole=False``) or held (``blackhole=True``)."""
        self._marker = None
        if blackhole:
            self._mode = "blackhole"
            self._flowing.clear()
            return
        self._mode = "reset"
        self._flowing.clear()
        links = list(self._links)
        for link in links:
            link.abort()
        await asyncio.gather(*(link.wait_closed() for link in links))

    def cut_after(self, marker: bytes) -> None:
        """Arm a lost acknowledgement: the next chunk a client sends that contains ``marker``
        is delivered to the server, then that client's connection is reset (the server's side
        is closed in order, after the chunk). Other connections are untouched; one use
        (:meth:`cut` disarms it)."""
        if not marker:
            raise ValueError("the marker must not be empty")
        self._marker = marker
        self._marker_seen.clear()

    async def wait_cut_after(self) -> None:
        """Until the chunk armed by :meth:`cut_after` has gone through and its client was cut."""
        await self._marker_seen.wait()

    def restore(self) -> None:
        """Relay again: new connections reach the server; held bytes are delivered."""
        self._mode = None
        self._flowing.set()

    # -- relaying -------------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == "reset":
            _abort(writer)
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._flowing.wait()  # a blackhole holds new connections here
            if self._mode == "reset" or link.aborted:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return  # the target is down: the client sees its connection closed
            link.upstream = up_writer
            if link.aborted:  # cut while connecting
                _abort(up_writer)
                return
            await asyncio.gather(
                self._pump(reader, up_writer, link, upstream=True),
                self._pump(up_reader, writer, link),
            )
        finally:
            link.close()
            self._links.discard(link)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        upstream: bool = False,
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                await self._flowing.wait()  # a blackhole holds the bytes here
                if link.aborted:
                    return
                writer.write(data)
                await writer.drain()
                if upstream and self._marker is not None and self._marker in data:
                    self._marker = None
                    link.abort_client()
                    self._marker_seen.set()
                    return
        except OSError:
            link.abort()  # reset on one side: reset the other
        finally:
            link.close()  # one side ended: end both (after flushing), as a proxy would


class _Link:
    """One relayed connection: the client's socket and (once connected) the server's."""

    def __init__(self, downstream: asyncio.StreamWriter) -> None:
        self.downstream = downstream
        self.upstream: asyncio.StreamWriter | None = None
        self.aborted = False

    def abort(self) -> None:
        """Close both sockets at once, with a reset."""
        if self.aborted:
            return
        self.aborted = True
        _abort(self.downstream)
        if self.upstream is not None:
            _abort(self.upstream)

    def abort_client(self) -> None:
        """Reset the client's socket; close the server's in order (what was sent arrives)."""
        self.aborted = True
        _abort(self.downstream)
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.close()

    def close(self) -> None:
        """Close both sockets after flushing what was written to them."""
        for writer in (self.downstream, self.upstream):
            if writer is not None and not writer.is_closing():
                writer.close()

    async def wait_closed(self) -> None:
        for writer in (self.downstream, self.upstream):
            if writer is not None:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once, with a TCP reset (SO_LINGER 0) rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
