"""``axon serve``: the runtime behind the HTTP API on uvicorn, with a graceful shutdown.

Order of events::

    check listen/token -> bind the socket -> start every agent -> accept requests -> print URL
    SIGINT/SIGTERM -> stop accepting -> in-flight requests finish (up to shutdown_grace)
    -> runs whose clients left with on_disconnect=finish finish (same grace) -> stop workers

A second SIGINT/SIGTERM skips the rest of the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Generator

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from axon.config import AxonConfig, RuntimeSpec
from axon.errors import ConfigError, ShuttingDown
from axon.http.app import create_app
from axon.http.connections import ConnectionGate, edge_protocol
from axon.http.errors import error_response
from axon.http.origin import OriginPolicy
from axon.observability.events import EventBus
from axon.runtime import Axon

__all__ = ["ListenAddress", "api_token", "bind", "check_exposure", "run", "serve"]

TOKEN_ENV = "AXON_API_TOKEN"


def api_token(runtime: RuntimeSpec) -> str | None:
    """The API token: ``runtime.api_token``, else ``$AXON_API_TOKEN``, else none."""
    token = runtime.api_token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 16:
        raise ConfigError(TOKEN_ENV, "an API token must be at least 16 characters")
    return token


class ListenAddress:
    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}"


def check_exposure(address: ListenAddress, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token (Safe by default)."""
    if not address.loopback and token is None:
        raise ConfigError(
            "runtime.listen",
            f"refusing to listen on {address.host!r} (not a loopback address) without an API "
            f"token: set {TOKEN_ENV} or runtime.api_token, or listen on 127.0.0.1",
        )


def bind(address: ListenAddress) -> socket.socket:
    """A listening socket (port 0: any free port). ``OSError`` if the address is taken."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    listener = socket.create_server((address.host, address.port), family=family, backlog=2048)
    # asyncio sets TCP_NODELAY only on accepted sockets whose ``proto`` is IPPROTO_TCP, and
    # create_server leaves it 0: without NODELAY, a response written in two parts (headers, then
    # body) waits for the client's delayed ACK, ~40 ms on every request. Same descriptor, proto TCP.
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, listener.detach())


class _CutAtGrace:
    """Answers a request that is still running when the shutdown grace period ends (and uvicorn
    cancels it) with 503 ``shutting_down`` instead of uvicorn's bare 500; a response already
    started (a stream, which ends itself with an ``error`` event) is left to end as it is."""

    def __init__(self, app: ASGIApp, grace: float, events: EventBus) -> None:
        self.app = app
        self.grace = grace
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            # uvicorn cancels a request's task only when the grace period is over; it does not
            # wait for the task, and ending it normally keeps its log free of a stack trace.
            if scope["type"] != "http" or started:
                return
            self.events.emit(
                "http.cut", logging.WARNING, method=scope["method"], path=scope["path"]
            )
            refusal = error_response(
                ShuttingDown(
                    "the server is shutting down and the request did not finish within its "
                    f"grace period ({self.grace:g}s)"
                )
            )
            refusal.headers["connection"] = "close"
            with contextlib.suppress(Exception):
                await refusal(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn, with the signals left to us (its own handler re-raises the signal after the
    shutdown, which would end the process with SIGTERM instead of exit code 0), and an event
    set once it accepts requests."""

    def __init__(self, config: uvicorn.Config, events: EventBus) -> None:
        super().__init__(config)
        self.events = events
        self.accepting = asyncio.Event()
        self.stop_requested_at: float | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.accepting.set()

    def request_stop(self, grace: float) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting
            return
        self.stop_requested_at = time.monotonic()
        self.events.emit("http.shutdown", logging.INFO, grace_s=grace)
        self.should_exit = True


async def serve(
    config: AxonConfig,
    *,
    listen: str | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``config`` over HTTP until SIGINT/SIGTERM, then shut down gracefully.

    Raises ``ConfigError`` (exposure without a token, bad agents) before anything starts and
    ``OSError`` if the address cannot be bound. ``on_ready(url)`` is called once requests are
    accepted.
    """
    runtime = config.runtime
    address = ListenAddress(listen or runtime.listen)
    token = api_token(runtime)
    check_exposure(address, token)
    flush_traces: Callable[[], None] | None = None
    if runtime.tracing:
        from axon.observability.tracing import install_otlp_exporter

        # Spans go to the OTLP/HTTP exporter the OTEL_* variables configure, unless a provider
        # was set up already (by an agent module, say): docs/tracing.md.
        flush_traces = install_otlp_exporter()
    sock = bind(address)
    try:
        async with Axon.from_config(config) as axon:
            app = create_app(
                axon,
                token=token,
                max_body_bytes=runtime.max_body_bytes,
                origins=OriginPolicy.serving(
                    address.host, runtime.allowed_hosts, runtime.cors_origins
                ),
            )
            server = _Server(
                uvicorn.Config(
                    _CutAtGrace(app, runtime.shutdown_grace, axon.events),
                    http=edge_protocol(
                        ConnectionGate(
                            max_connections=runtime.max_connections,
                            header_timeout=runtime.header_timeout,
                        )
                    ),
                    ws="none",  # no WebSocket route: no upgrade, no second protocol to limit
                    lifespan="off",
                    log_config=None,
                    access_log=False,
                    server_header=False,
                    timeout_graceful_shutdown=math.ceil(runtime.shutdown_grace),
                    # Our header timer closes an idle connection first (connections.py).
                    timeout_keep_alive=math.ceil(runtime.header_timeout),
                ),
                axon.events,
            )
            with _signals_stop(server, runtime.shutdown_grace):
                serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
                accepting = asyncio.ensure_future(server.accepting.wait())
                await asyncio.wait({serving, accepting}, return_when=asyncio.FIRST_COMPLETED)
                accepting.cancel()
                if server.accepting.is_set():
                    url = address.url(sock.getsockname()[1])
                    axon.events.emit(
                        "http.listening", logging.INFO, url=url, auth=token is not None
                    )
                    if on_ready is not None:
                        on_ready(url)
                await serving
                # Runs whose clients left with on_disconnect=finish: the rest of the grace.
                asked = server.stop_requested_at
                left = 0.0 if asked is None else asked + runtime.shutdown_grace - time.monotonic()
                await app.state.relays.aclose(grace=max(0.0, left))
    finally:
        sock.close()
        if flush_traces is not None:
            await asyncio.to_thread(flush_traces)  # export what is left; may wait on the network


def run(
    config: AxonConfig,
    *,
    listen: str | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """:func:`serve` on a fresh event loop (uvloop where installed); returns after shutdown."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(serve(config, listen=listen, on_ready=on_ready))
    else:
        uvloop.run(serve(config, listen=listen, on_ready=on_ready))


@contextlib.contextmanager
def _signals_stop(server: _Server, grace: float) -> Generator[None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, server.request_stop, grace)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
