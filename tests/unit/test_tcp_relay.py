"""The TCP relay's lost-acknowledgement fault (:meth:`TcpRelay.cut_after`), against a real
loopback server that records what reached it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from axon.chaos.tcp_relay import TcpRelay


class Recorder:
    """An echo server that keeps every chunk it received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.got = asyncio.Condition()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            async with self.got:
                self.received.append(data)
                self.got.notify_all()
            writer.write(data)
            await writer.drain()
        writer.close()

    async def wait_for(self, data: bytes) -> None:
        async with self.got:
            await self.got.wait_for(lambda: data in b"".join(self.received))


@pytest.fixture
async def relay_and_server() -> AsyncIterator[tuple[TcpRelay, Recorder]]:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with TcpRelay("127.0.0.1", port) as relay:
            yield relay, recorder
    finally:
        server.close()


async def roundtrip(relay: TcpRelay, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(relay.host, relay.port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.readexactly(len(data))
    finally:
        writer.close()


async def test_the_marked_chunk_reaches_the_server_and_its_answer_never_comes_back(
    relay_and_server: tuple[TcpRelay, Recorder],
) -> None:
    relay, recorder = relay_and_server
    reader, writer = await asyncio.open_connection(relay.host, relay.port)
    writer.write(b"before")
    assert await reader.readexactly(6) == b"before"

    relay.cut_after(b"MARK")
    writer.write(b"xMARKy")
    await relay.wait_cut_after()
    await recorder.wait_for(b"xMARKy")  # the server got it (and answered) ...
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await reader.readexactly(6)  # ... the client never hears back
    writer.close()

    # One use: the next connection, marker and all, is relayed as usual.
    assert await roundtrip(relay, b"MARK again") == b"MARK again"


async def test_a_cut_disarms_an_armed_marker(
    relay_and_server: tuple[TcpRelay, Recorder],
) -> None:
    relay, _ = relay_and_server
    relay.cut_after(b"MARK")
    await relay.cut()
    relay.restore()
    assert await roundtrip(relay, b"MARK") == b"MARK"
    with pytest.raises(ValueError, match="empty"):
        relay.cut_after(b"")
