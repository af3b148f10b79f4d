"""The HTTP edge's Host and Origin policy (``axon.http.origin``), as tables: which ``Host`` a
server answers for each listen address and ``allowed_hosts``, and which requests a web page of
which origin may send."""

from __future__ import annotations

import pytest

from axon.config import RuntimeSpec
from axon.http.origin import OriginPolicy, parse_authority, parse_origin

APP = "http://app.example:5173"


def policy(listen: str, allowed: tuple[str, ...] = (), cors: tuple[str, ...] = ()) -> OriginPolicy:
    """The policy ``axon serve`` builds, from keys read like a config file's."""
    runtime = RuntimeSpec(allowed_hosts=allowed, cors_origins=cors)
    return OriginPolicy.serving(listen, runtime.allowed_hosts, runtime.cors_origins)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("LocalHost", ("localhost", None)),
        ("localhost.:80", ("localhost", 80)),
        ("A.Example:65535", ("a.example", 65535)),
        ("[::1]", ("::1", None)),
        ("[0:0::1]:1", ("::1", 1)),
        ("my_service:0", ("my_service", 0)),
        ("", None),
        (":8000", None),
        ("a:", None),
        ("a:65536", None),
        ("a:8o", None),
        ("a:+80", None),
        ("a: 80", None),
        ("a:٣", None),  # a digit, not an ASCII one
        ("a:80:80", None),
        ("::1", None),  # IPv6 needs its brackets
        ("[::1", None),
        ("[::1]x", None),
        ("[::1]:x", None),
        ("[zz]", None),
        ("[]", None),
        ("a b", None),
        ("a/b", None),
        ("user@a", None),
        ("é.example", None),
        ("a..b", None),
    ],
)
def test_parse_authority(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert parse_authority(value) == parsed


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("http://127.0.0.1:8000", ("http", "127.0.0.1", 8000)),
        ("http://localhost", ("http", "localhost", 80)),
        ("HTTPS://App.Example", ("https", "app.example", 443)),
        ("http://[::1]:3000", ("http", "::1", 3000)),
        ("null", None),
        ("", None),
        ("file://", None),
        ("chrome-extension://abcdef", None),
        ("http://", None),
        ("http://a.example/", None),
        ("http://a.example/path", None),
        ("//a.example", None),
        ("a.example", None),
    ],
)
def test_parse_origin(value: str, parsed: tuple[str, str, int] | None) -> None:
    assert parse_origin(value) == parsed


@pytest.mark.parametrize(
    ("listen", "allowed", "host", "answered"),
    [
        # loopback (the default): loopback names and addresses only
        ("127.0.0.1", (), "127.0.0.1", True),
        ("127.0.0.1", (), "localhost", True),
        ("127.0.0.1", (), "127.255.255.254", True),
        ("127.0.0.1", (), "::1", True),
        ("127.0.0.1", (), "attacker.example", False),
        ("127.0.0.1", (), "localhost.attacker.example", False),
        ("127.0.0.1", (), "127.0.0.1.attacker.example", False),
        ("127.0.0.1", (), "0.0.0.0", False),
        ("127.0.0.1", (), "10.0.0.1", False),
        ("127.0.0.1", ("axon.test",), "axon.test", True),
        ("127.0.0.1", ("*",), "attacker.example", True),  # opted out
        ("::1", (), "::1", True),
        ("::1", (), "localhost", True),
        ("localhost", (), "127.0.0.1", True),
        # a named or specific address: that name too
        ("192.168.1.5", (), "192.168.1.5", True),
        ("192.168.1.5", (), "192.168.1.6", False),
        ("192.168.1.5", (), "localhost", True),
        ("axon.lan", (), "axon.lan", True),
        ("AXON.lan", (), "axon.lan", True),
        ("fd00::5", (), "fd00::5", True),
        ("fd00::5", (), "fd00::6", False),
        # every address: any Host, unless allowed_hosts names some
        ("0.0.0.0", (), "10.1.2.3", True),
        ("0.0.0.0", (), "anything.example", True),
        ("::", (), "fd00::1", True),
        ("0.0.0.0", ("axon.internal",), "axon.internal", True),
        ("0.0.0.0", ("axon.internal",), "localhost", True),
        ("0.0.0.0", ("axon.internal",), "127.0.0.1", True),
        ("0.0.0.0", ("axon.internal",), "10.1.2.3", False),
        ("0.0.0.0", ("axon.internal",), "0.0.0.0", False),
        ("0.0.0.0", ("axon.internal",), "axon.internal.evil", False),
        ("0.0.0.0", ("[FD00::1]",), "fd00::1", True),
        ("::", ("axon.internal", "*"), "10.1.2.3", True),
    ],
)
def test_hosts_answered(listen: str, allowed: tuple[str, ...], host: str, answered: bool) -> None:
    assert policy(listen, allowed).host_allowed(host) is answered


def headers(**values: str | list[str]) -> list[tuple[bytes, bytes]]:
    """ASGI headers: ``access_control_request_method="POST"`` -> that header."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in values.items():
        for one in [value] if isinstance(value, str) else value:
            out.append((name.replace("_", "-").encode(), one.encode()))
    return out


PREFLIGHT = {"access_control_request_method": "POST"}


@pytest.mark.parametrize(
    ("method", "path", "sent", "refusal"),
    [
        # Host
        ("GET", "/v1/agents", headers(host="127.0.0.1:8000"), None),
        ("GET", "/v1/agents", headers(), None),  # HTTP/1.0, no Host: no browser
        ("GET", "/v1/agents", headers(host="attacker.example:8000"), "forbidden_host"),
        ("GET", "/v1/agents", headers(host="bad host"), "forbidden_host"),
        ("GET", "/v1/agents", headers(host=["127.0.0.1", "evil.example"]), "forbidden_host"),
        ("GET", "/v1/agents", headers(host=["127.0.0.1", "127.0.0.1"]), "forbidden_host"),
        ("GET", "/healthz", headers(host="10.1.2.3:8000"), None),
        ("GET", "/healthz/", headers(host="10.1.2.3:8000"), "forbidden_host"),
        # Origin on state-changing methods: the same origin, or a listed one
        ("POST", "/x", headers(host="127.0.0.1:8000"), None),  # no Origin: no browser page
        ("POST", "/x", headers(host="127.0.0.1:8000", origin="http://127.0.0.1:8000"), None),
        ("POST", "/x", headers(host="localhost:8000", origin="http://localhost:8000"), None),
        ("POST", "/x", headers(host="[::1]:8000", origin="http://[::1]:8000"), None),
        ("POST", "/x", headers(host="127.0.0.1", origin="http://127.0.0.1"), None),
        ("POST", "/x", headers(host="127.0.0.1", origin="http://127.0.0.1:80"), None),
        ("POST", "/x", headers(host="localhost", origin="https://localhost"), None),  # via TLS
        ("POST", "/x", headers(host="127.0.0.1:8000", origin=APP), None),  # listed
        ("DELETE", "/x", headers(host="127.0.0.1:8000", origin=APP), None),
        ("POST", "/x", headers(host="127.0.0.1:8000", origin="http://evil.example"), "origin"),
        ("PUT", "/x", headers(host="127.0.0.1:8000", origin="http://evil.example"), "origin"),
        ("PATCH", "/x", headers(host="127.0.0.1:8000", origin="http://evil.example"), "origin"),
        ("DELETE", "/x", headers(host="127.0.0.1:8000", origin="http://evil.example"), "origin"),
        ("PURGE", "/x", headers(host="127.0.0.1:8000", origin="http://evil.example"), "origin"),
        ("POST", "/x", headers(host="127.0.0.1:8000", origin="null"), "origin"),
        ("POST", "/x", headers(host="127.0.0.1:8000", origin=""), "origin"),
        ("POST", "/x", headers(host="127.0.0.1:8000", origin="http://127.0.0.1:8001"), "origin"),
        ("POST", "/x", headers(host="127.0.0.1:8000", origin="http://localhost:8000"), "origin"),
        ("POST", "/x", headers(host="localhost", origin="http://localhost:8080"), "origin"),
        ("POST", "/x", headers(host="127.0.0.1:8000", origin=APP.upper()), "origin"),
        ("POST", "/x", headers(host="127.0.0.1:8000", origin=[APP, APP]), "origin"),
        ("POST", "/x", headers(origin="http://127.0.0.1:8000"), "origin"),  # no Host to match
        # reads are not refused (the browser keeps their answers from a foreign page)
        ("GET", "/x", headers(host="127.0.0.1:8000", origin="http://evil.example"), None),
        ("HEAD", "/x", headers(host="127.0.0.1:8000", origin="null"), None),
        ("OPTIONS", "/x", headers(host="127.0.0.1:8000", origin="http://evil.example"), None),
        # CORS preflights: answered for the listed origins, the API's methods and headers
        ("OPTIONS", "/x", headers(host="127.0.0.1:8000", origin=APP, **PREFLIGHT), None),
        (
            "OPTIONS",
            "/x",
            headers(
                host="127.0.0.1:8000",
                origin=APP,
                access_control_request_method="DELETE",
                access_control_request_headers="Authorization, content-type",
            ),
            None,
        ),
        (
            "OPTIONS",
            "/x",
            headers(host="127.0.0.1:8000", origin=APP, access_control_request_method="PUT"),
            "origin",
        ),
        (
            "OPTIONS",
            "/x",
            headers(
                host="127.0.0.1:8000",
                origin=APP,
                access_control_request_method="POST",
                access_control_request_headers="x-custom",
            ),
            "origin",
        ),
        (
            "OPTIONS",
            "/x",
            headers(host="127.0.0.1:8000", origin="http://127.0.0.1:8000", **PREFLIGHT),
            "origin",
        ),
        (
            "OPTIONS",
            "/x",
            headers(host="127.0.0.1:8000", origin="http://evil.example", **PREFLIGHT),
            "origin",
        ),
        # Host before Origin
        (
            "POST",
            "/x",
            headers(host="evil.example", origin="http://evil.example"),
            "forbidden_host",
        ),
    ],
)
def test_requests_refused(
    method: str, path: str, sent: list[tuple[bytes, bytes]], refusal: str | None
) -> None:
    refused = policy("127.0.0.1", cors=(APP,)).check(method, path, sent)
    expected = "forbidden_origin" if refusal == "origin" else refusal
    assert (refused.type if refused is not None else None) == expected, refused


def test_a_refusal_names_what_was_sent() -> None:
    host = policy("127.0.0.1").check("GET", "/", headers(host="evil.example:1"))
    assert host is not None
    assert host.facts == {"host": "evil.example:1"}
    assert "runtime.allowed_hosts" in host.message
    origin = policy("127.0.0.1").check("POST", "/", headers(host="localhost", origin="null"))
    assert origin is not None
    assert origin.facts == {"origin": "null"}
    assert "runtime.cors_origins" in origin.message


def test_a_refusal_cuts_what_the_client_sent_short() -> None:
    long_host = "a" * 5000
    refused = policy("127.0.0.1").check("GET", "/", headers(host=long_host))
    assert refused is not None
    assert refused.facts["host"] == "a" * 200 + "..."
    preflight = headers(
        host="localhost",
        origin=APP,
        access_control_request_method="POST",
        access_control_request_headers="x" * 5000,
    )
    refused = policy("127.0.0.1", cors=(APP,)).check("OPTIONS", "/", preflight)
    assert refused is not None
    assert refused.facts["origin"] == APP
    assert len(refused.message) < 600


def test_the_default_policy_is_loopback_only_without_cors() -> None:
    default = OriginPolicy()
    assert default.host_allowed("localhost")
    assert default.host_allowed("127.0.0.1")
    assert not default.host_allowed("test")
    assert default.cors_origins == ()
