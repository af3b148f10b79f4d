"""The HTTP edge's gate: bearer-token auth and the request-body size limit, before any route.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which buffers streaming
responses). The body is read here, bounded, and replayed to the app; later ``receive`` calls
go straight to the server, so routes can still watch for the client's disconnect.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from axon.errors import Unauthorized
from axon.http.errors import error_response, plain_error

__all__ = ["AUTH_REQUIRED", "OPEN_PATHS", "OPEN_PREFIXES", "EdgeGuard", "is_open"]

OPEN_PATHS = frozenset({"/healthz", "/dashboard"})
"""Routes that never need the token: liveness probes, and the dashboard's page."""
OPEN_PREFIXES = ("/dashboard/",)
"""Paths under which nothing needs the token: the dashboard's static files. They hold no data
(the page asks for the token and sends it with its API calls), so nothing that does may ever be
served under them."""
AUTH_REQUIRED = "axon.auth_required"
"""Scope key the guard sets (to True) when the API requires a token: the dashboard's page asks
for one only then."""


def is_open(path: str) -> bool:
    """Whether ``path`` is served without the token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class EdgeGuard:
    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._token is not None:
            scope[AUTH_REQUIRED] = True
        if not self._authorized(scope):
            refusal = error_response(
                Unauthorized("a valid bearer token is required (Authorization: Bearer <token>)")
            )
            await refusal(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # disconnected while sending the body
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None or is_open(scope["path"]):
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credential.strip(), self._token
                )
        return False

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = plain_error(
            413,
            "payload_too_large",
            f"the request body exceeds {self.max_body_bytes} bytes",
            field="body",
            limit=self.max_body_bytes,
        )
        await refusal(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
