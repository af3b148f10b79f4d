"""Which ``Host`` and ``Origin`` the HTTP edge answers: its guard against web pages in the
user's browser, which can reach a server on 127.0.0.1 whether it asks for a token or not.

- **DNS rebinding.** A page at ``http://attacker.example:8000`` whose name the attacker then
  resolves to 127.0.0.1: the browser sends the page's requests to this server and lets the page
  read the answers, as same-origin. It still names the attacker's host in ``Host``. So the edge
  answers only a ``Host`` that names this server (:meth:`OriginPolicy.host_allowed`): the
  loopback names, the listen host, ``runtime.allowed_hosts``; else 421 ``forbidden_host``.
- **Cross-site requests (CSRF).** A page of another origin posts a form, or a ``no-cors``
  fetch, to this server: the browser hides the answer from it, but the request is made.
  Browsers send ``Origin`` with every POST, PUT, PATCH and DELETE, so the edge refuses such a
  request (403 ``forbidden_origin``) when its ``Origin`` is present and is neither this server's
  own (scheme://host:port naming the ``Host`` it was sent to) nor listed in
  ``runtime.cors_origins``. ``Origin: null`` (a sandboxed frame, a ``file:`` page) is foreign.
  A request without ``Origin`` (curl, the CLI, any program) is no browser's cross-site request.

CORS is off unless ``runtime.cors_origins`` lists origins; then Starlette's
``CORSMiddleware`` answers their preflights and lets them read answers, and no other origin's.

:class:`OriginGuard` runs first, before the token check (:mod:`axon.http.guard`): a refused
request learns nothing and changes nothing. ``/healthz`` answers any ``Host`` (probes name the
pod's IP); it holds no data and changes nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.middleware.cors import SAFELISTED_HEADERS, CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from axon.errors import AxonError, ForbiddenHost, ForbiddenOrigin
from axon.http.errors import error_response

__all__ = [
    "ANY_HOST_PATHS",
    "CORS_HEADERS",
    "CORS_METHODS",
    "OriginGuard",
    "OriginPolicy",
    "parse_authority",
    "parse_origin",
]

ANY_HOST_PATHS = frozenset({"/healthz"})
"""Answered whatever the ``Host``: the liveness probe."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing, so no ``Origin`` check (a preflight ``OPTIONS`` aside)."""
CORS_METHODS = ("GET", "POST", "DELETE")
"""What a page of a listed origin may send: the API's methods."""
CORS_HEADERS = ("Authorization", "Content-Type")
"""Request headers a page of a listed origin may set (besides the CORS-safelisted ones)."""
CORS_EXPOSED = ("Retry-After", "WWW-Authenticate")
"""Response headers such a page may read besides the safelisted ones."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_PORT = re.compile(r":([0-9]{1,5})")
_PREFLIGHT_HEADERS = frozenset(h.lower() for h in (*SAFELISTED_HEADERS, *CORS_HEADERS))


def parse_authority(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` of a ``Host`` header or an origin: the host lowercase, without a final
    dot, an IPv6 address without brackets; None if it is not one."""
    value = value.lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        try:
            host = str(ipaddress.IPv6Address(host)) if bracket else ""
        except ValueError:
            return None
        if not host:
            return None
    else:
        host, colon, port = value.partition(":")
        host, rest = host.removesuffix("."), colon + port
        if not _NAME.fullmatch(host):
            return None
    if not rest:
        return host, None
    port = _PORT.fullmatch(rest)
    if port is None or int(port[1]) > 65535:
        return None
    return host, int(port[1])


def parse_origin(value: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an ``Origin`` header (the port made explicit); None for
    ``null`` and anything else that is no http(s) origin."""
    scheme, sep, authority = value.lower().partition("://")
    parsed = parse_authority(authority) if sep and scheme in _DEFAULT_PORTS else None
    if parsed is None:
        return None
    host, port = parsed
    return scheme, host, _DEFAULT_PORTS[scheme] if port is None else port


def is_loopback(host: str) -> bool:
    """``localhost``, or an address of 127.0.0.0/8 or ``::1``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(values: list[str]) -> str:
    """Header values as an error names them: joined, and cut short (a client chose them)."""
    joined = ", ".join(values)
    return joined if len(joined) <= 200 else joined[:200] + "..."


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


@dataclass(frozen=True)
class OriginPolicy:
    """The ``Host`` names and the web origins the edge answers. ``OriginPolicy()``: loopback
    only, no CORS; :meth:`serving` builds the policy of a listen address and the config."""

    hosts: frozenset[str] = frozenset()
    """Names and addresses answered besides the loopback ones (lowercase, IPv6 bare)."""
    any_host: bool = False
    cors_origins: tuple[str, ...] = ()
    """As browsers write them (``RuntimeSpec`` keeps them so)."""

    @classmethod
    def serving(
        cls, listen_host: str, allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()
    ) -> OriginPolicy:
        """A server listening on ``listen_host`` answers the loopback names, that host, and
        ``allowed_hosts``; any host if ``allowed_hosts`` holds ``*``, or if it listens on every
        address (``0.0.0.0``, ``::``) and ``allowed_hosts`` is empty."""
        allowed = set(allowed_hosts)
        listen = parse_authority(f"[{listen_host}]" if ":" in listen_host else listen_host)
        hosts = {h for h in allowed if h != "*"}
        wildcard = _is_wildcard(listen_host)
        if listen is not None and not wildcard:
            hosts.add(listen[0])
        return cls(
            hosts=frozenset(hosts),
            any_host="*" in allowed or (wildcard and not allowed),
            cors_origins=tuple(cors_origins),
        )

    def host_allowed(self, host: str) -> bool:
        """Whether a request whose ``Host`` names ``host`` (parsed, without its port) is
        answered."""
        return self.any_host or is_loopback(host) or host in self.hosts

    def check(
        self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]]
    ) -> AxonError | None:
        """Why a request is refused (``ForbiddenHost``, ``ForbiddenOrigin``), or None."""
        hosts: list[str] = []
        origins: list[str] = []
        preflight_method: str | None = None
        preflight_headers = ""
        for name, value in headers:
            if name == b"host":
                hosts.append(value.decode("latin-1"))
            elif name == b"origin":
                origins.append(value.decode("latin-1"))
            elif name == b"access-control-request-method":
                preflight_method = value.decode("latin-1")
            elif name == b"access-control-request-headers":
                preflight_headers = value.decode("latin-1")
        host = parse_authority(hosts[0]) if len(hosts) == 1 else None
        # No Host at all is an HTTP/1.0 client: never a browser, so nothing to guard.
        if (
            hosts
            and path not in ANY_HOST_PATHS
            and (host is None or not self.host_allowed(host[0]))
        ):
            return ForbiddenHost(_shown(hosts))
        if not origins:
            return None
        origin = ", ".join(origins)
        if method == "OPTIONS" and preflight_method is not None:
            # A CORS preflight: answered (by CORSMiddleware) for the listed origins only.
            if origin not in self.cors_origins:
                return ForbiddenOrigin(_shown(origins))
            requested = {h.strip().lower() for h in preflight_headers.split(",") if h.strip()}
            if preflight_method not in CORS_METHODS or not requested <= _PREFLIGHT_HEADERS:
                return ForbiddenOrigin(
                    _shown(origins),
                    reason=f"a page of {origin!r} may send {', '.join(CORS_METHODS)} with the "
                    f"headers {', '.join(CORS_HEADERS)} only (asked: "
                    f"{_shown([preflight_method])} with {_shown([preflight_headers or 'none'])})",
                )
            return None
        if method in SAFE_METHODS or origin in self.cors_origins:
            return None
        parsed = parse_origin(origin) if len(origins) == 1 else None
        if parsed is not None and host is not None:
            scheme, origin_host, origin_port = parsed
            host_port = _DEFAULT_PORTS[scheme] if host[1] is None else host[1]
            if (origin_host, origin_port) == (host[0], host_port):
                return None  # same origin: a page this server served
        return ForbiddenOrigin(_shown(origins))


class OriginGuard:
    """Pure ASGI middleware: refuses what :meth:`OriginPolicy.check` refuses, and wraps the app
    in ``CORSMiddleware`` for the policy's ``cors_origins``, if any."""

    def __init__(self, app: ASGIApp, *, policy: OriginPolicy) -> None:
        self.policy = policy
        if policy.cors_origins:
            app = CORSMiddleware(
                app,
                allow_origins=policy.cors_origins,
                allow_methods=CORS_METHODS,
                allow_headers=CORS_HEADERS,
                allow_private_network=True,  # listed: the operator trusts it with this server
                expose_headers=CORS_EXPOSED,
            )
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.policy.check(scope["method"], scope["path"], scope["headers"])
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)
