"""Connection limits of a real ``axon serve`` (issue 12, finding 9): a connection gets
``runtime.header_timeout`` to send its request's headers (slowloris) and no more to sit idle;
at most ``runtime.max_connections`` are served at once, and one more is answered 503
``too_many_connections``; closing them frees their places.

Raw sockets: what a slow or idle client does is exactly what it sends, and the only thing
observed is what the server sends back and when it closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from ..conftest import ServeAxon
from .test_http_api import Api, config, error_of, misbehaving, poll, retry_after

CLOSED_WITHIN = 20.0
"""Seconds a test waits for the server to close a connection whose header timeout (1 s) is
over: generous for a loaded machine, far below uvicorn's own limits (none while the headers
are incomplete; 30 s for an idle kept-alive connection)."""


class Raw:
    """One TCP connection to the server, driven by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> Raw:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lowercase names), body (by Content-Length)."""
        async with asyncio.timeout(30):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ")[1])
            headers = {}
            for line in filter(None, lines):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def closed_by_server(self) -> bytes:
        """Everything the server still sends, once it has closed the connection; fails if it
        keeps it open for ``CLOSED_WITHIN`` seconds."""
        received = b""
        async with asyncio.timeout(CLOSED_WITHIN):
            with contextlib.suppress(ConnectionResetError):
                while chunk := await self.reader.read(65536):
                    received += chunk
        return received

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await self.writer.wait_closed()


def get(path: str, *, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def envelope(raw: bytes, status: int, error_type: str) -> dict[str, Any]:
    """``raw`` is one whole response with ``status`` and the error envelope of ``error_type``;
    the error."""
    head, _, body = raw.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    assert match is not None, raw
    assert int(match.group(1)) == status, raw
    assert b"content-type: application/json" in head.lower(), raw
    error = json.loads(body)["error"]
    assert error["type"] == error_type, raw
    assert error["message"], raw
    return error


SLOW = config(misbehaving("misbehaving"), runtime="header_timeout = 1")


async def test_a_connection_gets_header_timeout_to_send_its_headers(serve_axon: ServeAxon) -> None:
    server = await serve_axon(SLOW)
    # each stops before its headers are complete, and then sends nothing more
    partial = [
        b"GET /v1/age",  # part of the request line
        b"GET /v1/agents HTTP/1.1\r\n",  # the request line, no header
        b"GET /v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",  # half a header
        b"POST /v1/agents/misbehaving/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    ]
    stalled = [await Raw.open(server.url) for _ in partial]
    for raw, data in zip(stalled, partial, strict=True):
        await raw.send(data)
    silent = await Raw.open(server.url)  # connects and never sends a byte

    async def trickle(raw: Raw) -> None:
        """A header a byte at a time, each well within the timeout (slowloris)."""
        await raw.send(b"GET /v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        try:
            while True:
                await raw.send(b"a")
                await asyncio.sleep(0.2)
        except (ConnectionResetError, BrokenPipeError):
            return

    trickling = await Raw.open(server.url)
    sender = asyncio.create_task(trickle(trickling))

    # an idle connection kept alive after a response is closed after as long
    kept = await Raw.open(server.url)
    await kept.send(get("/healthz"))
    status, headers, _ = await kept.response()
    assert status == 200
    assert headers.get("connection") != "close"

    async with Api(server.url) as api:
        # other clients are served meanwhile
        assert (await api.reply("misbehaving", "meanwhile"))["output"] == "echo: meanwhile"
        for raw in [*stalled, trickling]:
            # a request was under way: the client is told why (408), then the server closes
            error = envelope(await raw.closed_by_server(), 408, "request_timeout")
            assert error["header_timeout"] == 1
            await raw.close()
        for raw in (silent, kept):
            assert await raw.closed_by_server() == b""  # nothing was asked: nothing to answer
            await raw.close()
        await sender
        assert (await api.reply("misbehaving", "after"))["output"] == "echo: after"

    # a request that is no HTTP gets the error envelope too (not uvicorn's plain text)
    garbage = await Raw.open(server.url)
    await garbage.send(b"BREW /pot HTCPCP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert envelope(await garbage.closed_by_server(), 400, "invalid_request")["message"]
    await garbage.close()


CAPPED = config(misbehaving("misbehaving"), runtime="max_connections = 3\nheader_timeout = 60")


async def test_max_connections_caps_open_connections(serve_axon: ServeAxon) -> None:
    server = await serve_axon(CAPPED)
    held = [await Raw.open(server.url) for _ in range(3)]
    for raw in held:  # each connection is served, and then kept open (idle)
        await raw.send(get("/healthz"))
        assert (await raw.response())[0] == 200

    # one more: 503 in the error envelope, with Retry-After, and the server closes it
    extra = await Raw.open(server.url)
    await extra.send(get("/v1/agents"))
    status, headers, body = await extra.response()
    assert status == 503, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["retry-after"]) >= 1
    error = json.loads(body)["error"]
    assert error["type"] == "too_many_connections"
    assert error["max_connections"] == 3
    assert await extra.closed_by_server() == b""
    await extra.close()
    async with Api(server.url) as api:
        refused = await api.get("/v1/agents")
        assert error_of(refused, 503, "too_many_connections")["max_connections"] == 3
        assert retry_after(refused) >= 1

        # the connections in place are still served
        for raw in held:
            await raw.send(get("/v1/agents/misbehaving"))
            assert (await raw.response())[0] == 200

        # closing two of them makes room for other clients
        for raw in held[:2]:
            await raw.close()

        async def fresh() -> int:
            return (await api.get("/v1/agents", headers={"connection": "close"})).status_code

        await poll(fresh, lambda status: status == 200)
        assert (await api.reply("misbehaving", "room again"))["output"] == "echo: room again"
    await held[2].close()
