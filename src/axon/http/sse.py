"""A run as Server-Sent Events (:mod:`axon.stream` encodes each): ``text_delta``, ``tool_call``,
``tool_result``, then ``final`` (the committed reply) or ``error`` (the error envelope's object
with its HTTP status); a comment line keeps an idle stream alive through proxies.

Each event is ``event: NAME`` and one ``data:`` line of JSON::

    event: text_delta
    data: {"type": "text_delta", "text": "Sunny"}

    event: final
    data: {"conversation_id": "...", "output": "Sunny, 21 C", ...}
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from axon.errors import AxonError, ShuttingDown
from axon.http.errors import error_payload, status_of
from axon.http.relay import ClientGone, RunRelay, watch_disconnect
from axon.stream import ErrorEvent, FinalResult, StreamEvent, to_sse

__all__ = ["EventStreamResponse", "encode_error"]

KEEPALIVE_SECONDS = 15.0


def encode_error(exc: AxonError) -> bytes:
    """The ``error`` event that ends a failed stream: the envelope's object with its status."""
    error = error_payload(exc)["error"]
    return to_sse(ErrorEvent({**error, "status": status_of(exc)}))


class EventStreamResponse(Response):
    """Streams a run that has already produced ``first`` (so errors before the first event are
    answered with their own status, not a 200 stream)."""

    media_type = "text/event-stream"

    def __init__(
        self, relay: RunRelay, first: StreamEvent, *, keepalive: float = KEEPALIVE_SECONDS
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
        ]
        self._relay = relay
        self._first = first
        self._keepalive = keepalive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with watch_disconnect(receive, self._relay):
            try:
                await self._stream(send)
            except asyncio.CancelledError:
                # The server's shutdown grace period is over: cancel the run, then tell the
                # client how its stream ended.
                await self._relay.aclose()
                await _end_cut_stream(send, self._relay.drain())
                raise
            finally:
                await self._relay.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send) -> None:
        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        event: StreamEvent = self._first
        while True:
            await write(to_sse(event))
            if isinstance(event, FinalResult):
                return
            while True:
                try:
                    async with asyncio.timeout(self._keepalive):
                        event = await self._relay.next()
                    break
                except TimeoutError:
                    await write(b": keepalive\n\n")
                except ClientGone:
                    return
                except AxonError as exc:
                    await write(encode_error(exc))
                    return


CUT_MESSAGE = (
    "the server is shutting down and the run did not finish within its grace period; nothing of "
    "it was committed"
)


async def _end_cut_stream(send: Send, leftover: list[StreamEvent | BaseException]) -> None:
    """Best effort (the client may be slow or gone): the events the run produced before it was
    cancelled, then how it ended (``final`` if it had committed already, else ``error``)."""
    frames: list[bytes] = []
    ending = encode_error(ShuttingDown(CUT_MESSAGE))
    for item in leftover:
        if isinstance(item, FinalResult):
            ending = to_sse(item)
            break
        if isinstance(item, AxonError):
            ending = encode_error(item)
            break
        if not isinstance(item, BaseException):
            frames.append(to_sse(item))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            body = b"".join([*frames, ending])
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
