"""What one TCP connection to ``axon serve`` may hold, enforced in uvicorn's httptools protocol:
uvicorn (0.55) has no limit on the time a request's headers take, arms its keep-alive timer only
after a first response, and its ``limit_concurrency`` answers a plain-text 503 and counts per
request (an established connection can be refused on its next request).

- **Header time.** A connection sends a whole request line and headers within
  ``header_timeout`` seconds of opening, or of the end of its previous response (so an idle
  connection, new or kept alive, is closed after as long). Past it: a 408 ``request_timeout``
  if part of a request arrived, then the connection is closed; a connection that sent nothing
  is just closed. The time is not reset by each byte: a client trickling its headers (slowloris)
  is cut like a silent one. The body is not timed: the guard reads at most
  ``max_body_bytes`` of it.
- **Connection cap.** At most ``max_connections`` connections are admitted, when they open. One
  more is answered 503 ``too_many_connections`` with ``Retry-After`` and closed, once its
  headers arrive (within the header time): an answer sent before the request is read can be lost
  to the reset that closing a socket with unread data sends. Admitted connections keep their
  place until they close, however many wait.
- **Cutting a connection.** Each request's scope carries, under
  ``scope["extensions"][CUT_CONNECTION]["cut"]``, a function that aborts its connection:
  :class:`~axon.http.relay.RunRelay` cuts a stream's client that stopped reading (a plain close
  would wait for it to read what is buffered).
- **Bad HTTP.** A request httptools cannot parse gets the error envelope (400
  ``invalid_request``), not uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar, cast

from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from axon.errors import RequestTimeout, TooManyConnections
from axon.http.errors import error_response, status_of
from axon.http.relay import CUT_CONNECTION

__all__ = ["ConnectionGate", "EdgeProtocol", "edge_protocol"]


class ConnectionGate:
    """The connections admitted and the limits they live under, shared by every connection of
    one server."""

    def __init__(self, *, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._admitted: set[object] = set()

    @property
    def admitted(self) -> int:
        return len(self._admitted)

    def admit(self, connection: object) -> bool:
        """Whether ``connection`` is served; if so it holds a place until :meth:`release`."""
        if len(self._admitted) >= self.max_connections:
            return False
        self._admitted.add(connection)
        return True

    def release(self, connection: object) -> None:
        self._admitted.discard(connection)


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under a :class:`ConnectionGate`; build it with
    :func:`edge_protocol`."""

    gate: ClassVar[ConnectionGate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.gate.admit(self):
            self.app = _refusal(self.gate.max_connections)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self.gate.release(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self.scope["extensions"] = {CUT_CONNECTION: {"cut": self._cut}}

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        self._request_begun = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a next request whose headers are in already
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm_header_timer()

    def send_400_response(self, msg: str) -> None:
        self._disarm_header_timer()
        self._write_error(400, {"type": "invalid_request", "message": "not a valid HTTP request"})

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.gate.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._request_begun:
            late = RequestTimeout(self.gate.header_timeout)
            self._write_error(status_of(late), late.to_dict())
        else:
            self.transport.close()

    def _write_error(self, status: int, error: dict[str, Any]) -> None:
        """Answer ``error`` in the envelope and close, outside any request's cycle."""
        body = json.dumps({"error": error}, separators=(",", ":")).encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        head = [STATUS_LINE[status], *(name + b": " + value + b"\r\n" for name, value in headers)]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()

    def _cut(self) -> None:
        self.transport.abort()  # drops what is buffered for the client; connection_lost follows


def edge_protocol(gate: ConnectionGate) -> type[EdgeProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``: each connection under
    ``gate``."""

    class GatedProtocol(EdgeProtocol):
        pass

    GatedProtocol.gate = gate
    return GatedProtocol


def _refusal(max_connections: int) -> ASGI3Application:
    """The app of a connection over the cap: every request gets 503, and the connection is
    closed."""

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(TooManyConnections(max_connections))
        response.headers["connection"] = "close"
        await response(scope, receive, send)

    return cast(ASGI3Application, refuse)
