"""Which ``Host`` and ``Origin`` a real ``axon serve`` answers (issue 12, finding 8): the
no-token loopback mode must not be reachable from a web page in the user's browser, by a
cross-site request (CSRF: a form posted from another origin) or by DNS rebinding (a name the
attacker controls, resolved to 127.0.0.1: the browser then sends ``Host: attacker.example``).

Requests without ``Origin`` (the CLI, curl, scripts) and same-origin requests (the dashboard)
keep working; origins listed in ``runtime.cors_origins`` get CORS; ``runtime.allowed_hosts``
names the hosts a server beyond loopback answers to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ..conftest import ServeAxon
from .browser import chromium
from .test_http_api import Api, config, error_of, misbehaving

AGENT = config(misbehaving("misbehaving"))
TOKEN = "origin-token-0123456789abcdef"
APP = "http://app.example:5173"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def raw_request(url: str, request: str) -> bytes:
    """Send ``request`` as it is on a new connection; everything the server sends back until
    it closes the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request.encode())
        async with asyncio.timeout(30):
            return await reader.read()
    finally:
        writer.close()


async def worker_pid(api: Api, headers: dict[str, str] | None = None) -> int:
    response = await api.get("/v1/agents/misbehaving", headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()["workers"][0]["pid"]


async def test_loopback_refuses_foreign_origins_and_hosts(serve_axon: ServeAxon) -> None:
    server = await serve_axon(AGENT, env={"AXON_API_TOKEN": ""})
    port = port_of(server.url)
    async with Api(server.url) as api:
        await api.reply("misbehaving", "seed", conversation_id="o-1")
        pid = await worker_pid(api)

        # --- CSRF: state-changing requests from another origin do nothing ---------------------
        foreign_origins = [
            "http://evil.example",
            "null",  # a sandboxed frame, a file:// page, a redirect across origins
            f"http://localhost:{port + 1 if port < 65535 else 1}",  # another local server
            f"http://127.0.0.1.evil.example:{port}",
            "",
        ]
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("post", "/v1/agents/misbehaving/restart", {"content": b"a=1", "headers": FORM}),
            ("delete", "/v1/conversations/o-1", {}),
            ("post", "/v1/agents/misbehaving/messages", {"json": {"prompt": "csrf"}}),
        ]
        for origin in foreign_origins:
            headers = {"origin": origin}
            for method, path, kw in requests:
                sent = {**kw, "headers": {**kw.get("headers", {}), **headers}}
                response = await api.client.request(method, path, **sent)
                error = error_of(response, 403, "forbidden_origin")
                assert error["origin"] == origin, error
                assert "access-control-allow-origin" not in response.headers
            # a CORS preflight from it is refused too (CORS is off)
            preflight = await api.client.options(
                "/v1/agents/misbehaving/messages",
                headers={**headers, "access-control-request-method": "POST"},
            )
            error_of(preflight, 403, "forbidden_origin")
            assert "access-control-allow-origin" not in preflight.headers
        agent = await api.agent("misbehaving")
        assert agent["workers"][0]["pid"] == pid, "a cross-site request restarted the agent"
        assert agent["restarts"] == 0
        assert await api.prompts("o-1") == ["seed"]

        # reading from another origin is not refused here; the browser keeps the answer from
        # the page, as no CORS header lets it read
        read = await api.get("/v1/agents", headers={"origin": "http://evil.example"})
        assert read.status_code == 200
        assert "access-control-allow-origin" not in read.headers

        # --- DNS rebinding: names that are not this server's are refused ----------------------
        foreign_hosts = [
            "attacker.example",
            f"attacker.example:{port}",
            f"127.0.0.1.attacker.example:{port}",
            f"localhost.attacker.example:{port}",
            f"0.0.0.0:{port}",
            f"10.0.0.1:{port}",
            f"[::2]:{port}",
            f"[::1]x:{port}",
            "localhost:notaport",
            "",
        ]
        for host in foreign_hosts:
            for method, path in [
                ("get", "/v1/conversations"),
                ("get", "/v1/conversations/o-1"),
                ("delete", "/v1/conversations/o-1"),
                ("get", "/v1/agents"),
                ("get", "/dashboard"),
                ("get", "/openapi.json"),
            ]:
                response = await api.client.request(method, path, headers={"host": host})
                error = error_of(response, 421, "forbidden_host")
                assert error["host"] == host, error
                assert "runtime.allowed_hosts" in error["message"]
            # the liveness probe answers whatever the Host
            assert (await api.get("/healthz", headers={"host": host})).status_code == 200
        assert await api.prompts("o-1") == ["seed"]
        # two Host headers: which one the browser meant is anyone's guess
        doubled = await raw_request(
            server.url,
            f"GET /v1/agents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Host: attacker.example\r\nConnection: close\r\n\r\n",
        )
        assert doubled.startswith(b"HTTP/1.1 421 "), doubled
        assert b'"forbidden_host"' in doubled
        # no Host at all (an HTTP/1.0 client; a browser always sends one): answered
        bare = await raw_request(server.url, "GET /v1/agents HTTP/1.0\r\n\r\n")
        assert bare.startswith(b"HTTP/1.1 200 "), bare

        # --- this server's own names, with or without a port ----------------------------------
        own_hosts = [
            f"127.0.0.1:{port}",
            "127.0.0.1",
            f"127.8.9.10:{port}",
            f"localhost:{port}",
            "LOCALHOST",
            f"localhost.:{port}",
            f"[::1]:{port}",
            "[::1]",
        ]
        for host in own_hosts:
            listing = await api.get("/v1/conversations", headers={"host": host})
            assert listing.status_code == 200, (host, listing.text)

        # --- same-origin requests (the dashboard's restart button) and requests without
        # Origin (the CLI, curl) change state as before --------------------------------------
        same = await api.post(
            "/v1/agents/misbehaving/restart", headers={"origin": f"http://127.0.0.1:{port}"}
        )
        assert same.status_code == 200, same.text
        pid_after = await worker_pid(api)
        assert pid_after != pid
        by_name = await api.post(
            "/v1/agents/misbehaving/messages",
            json={"prompt": "same origin", "conversation_id": "o-1"},
            headers={"origin": f"http://localhost:{port}", "host": f"localhost:{port}"},
        )
        assert by_name.status_code == 200, by_name.text
        ipv6 = await api.post(
            "/v1/agents/misbehaving/messages",
            json={"prompt": "ipv6", "conversation_id": "o-1"},
            headers={"origin": f"http://[::1]:{port}", "host": f"[::1]:{port}"},
        )
        assert ipv6.status_code == 200, ipv6.text
        await api.reply("misbehaving", "no origin", conversation_id="o-1")
        assert await api.prompts("o-1") == ["seed", "same origin", "ipv6", "no origin"]
        assert (await api.delete("/v1/conversations/o-1")).status_code == 204
        await api.assert_documented()


ALLOWED = config(
    misbehaving("misbehaving"),
    runtime=f'allowed_hosts = ["axon.internal"]\ncors_origins = ["{APP}"]',
)


async def test_allowed_hosts_and_cors_origins_beyond_loopback(serve_axon: ServeAxon) -> None:
    server = await serve_axon(ALLOWED, env={"AXON_API_TOKEN": TOKEN}, listen="0.0.0.0:0")
    port = port_of(server.url)
    auth = {"authorization": f"Bearer {TOKEN}"}
    url = server.url.replace("0.0.0.0", "127.0.0.1")
    async with Api(url, headers=auth) as api, Api(url) as anonymous_api:
        anonymous = anonymous_api.client
        # --- a wildcard listen with allowed_hosts: those, and the loopback names --------------
        for host in (f"axon.internal:{port}", "AXON.internal", f"localhost:{port}", "127.0.0.1"):
            response = await api.get("/v1/agents", headers={"host": host})
            assert response.status_code == 200, (host, response.text)
        for host in (f"10.1.2.3:{port}", f"0.0.0.0:{port}", "internal", "axon.internal.evil"):
            error_of(await api.get("/v1/agents", headers={"host": host}), 421, "forbidden_host")
            # a Kubernetes probe sends the pod's IP as Host: /healthz answers it
            assert (await api.get("/healthz", headers={"host": host})).status_code == 200

        # --- CORS for the listed origin: preflight (no token), then the request ---------------
        preflight = await anonymous.options(  # a browser sends no credentials in it
            "/v1/agents/misbehaving/messages",
            headers={
                "origin": APP,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed_headers = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed_headers
        assert "content-type" in allowed_headers
        sent = await api.post(
            "/v1/agents/misbehaving/messages",
            json={"prompt": "from the app", "conversation_id": "c-1"},
            headers={"origin": APP},
        )
        assert sent.status_code == 200, sent.text
        assert sent.headers["access-control-allow-origin"] == APP
        # the app can read the errors too (and when to retry)
        no_token = await anonymous.get("/v1/agents", headers={"origin": APP})
        error_of(no_token, 401, "unauthorized")
        assert no_token.headers["access-control-allow-origin"] == APP
        assert "retry-after" in no_token.headers["access-control-expose-headers"].lower()

        # --- any other origin: no CORS, and no state change -----------------------------------
        for origin in ("http://evil.example", "http://app.example:5174", "https://app.example"):
            refused = await anonymous.options(
                "/v1/agents/misbehaving/messages",
                headers={"origin": origin, "access-control-request-method": "POST"},
            )
            error_of(refused, 403, "forbidden_origin")
            assert "access-control-allow-origin" not in refused.headers
            posted = await api.post(
                "/v1/agents/misbehaving/messages",
                json={"prompt": "from elsewhere", "conversation_id": "c-1"},
                headers={"origin": origin},
            )
            error_of(posted, 403, "forbidden_origin")
            read = await api.get("/v1/agents", headers={"origin": origin})
            assert read.status_code == 200
            assert "access-control-allow-origin" not in read.headers
        assert await api.prompts("c-1") == ["from the app"]


async def test_wildcard_listen_without_allowed_hosts_answers_any_host(
    serve_axon: ServeAxon,
) -> None:
    server = await serve_axon(AGENT, env={"AXON_API_TOKEN": TOKEN}, listen="0.0.0.0:0")
    auth = {"authorization": f"Bearer {TOKEN}"}
    url = server.url.replace("0.0.0.0", "127.0.0.1")
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as http:
        for host in ("10.1.2.3:8000", "axon.example", "[fd00::1]:80"):
            response = await http.get("/v1/agents", headers={"host": host})
            assert response.status_code == 200, (host, response.text)
        # the token is what guards it: without it, still 401
        async with httpx.AsyncClient(base_url=url, timeout=30) as anonymous:
            assert (await anonymous.get("/v1/agents")).status_code == 401
        # and a foreign origin still changes nothing
        posted = await http.post(
            "/v1/agents/misbehaving/restart", headers={"origin": "http://evil.example"}
        )
        assert posted.status_code == 403
        body: dict[str, Any] = posted.json()
        assert body["error"]["type"] == "forbidden_origin"


# --------------------------------------------------------------------------- in a real browser


ATTACK_PAGE = """<!doctype html>
<html><body>
<form id="csrf" method="POST" action="{target}/v1/agents/misbehaving/restart">
  <input name="a" value="1">
</form>
<script>
  fetch("{target}/v1/conversations/b-1", {{method: "DELETE", mode: "no-cors"}})
    .finally(() => document.getElementById("csrf").submit());
</script>
</body></html>
"""


@asynccontextmanager
async def page_server(html: str) -> AsyncIterator[str]:
    """A web site of another origin (``http://localhost:PORT``) serving ``html`` at ``/``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = html.encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://localhost:{server.sockets[0].getsockname()[1]}"


async def test_a_foreign_page_in_a_browser_changes_and_reads_nothing(
    serve_axon: ServeAxon,
) -> None:
    server = await serve_axon(AGENT, env={"AXON_API_TOKEN": ""})
    port = port_of(server.url)
    async with Api(server.url) as api:
        await api.reply("misbehaving", "seed", conversation_id="b-1")
        pid = await worker_pid(api)
        # "attacker.example" resolves to 127.0.0.1: what a DNS-rebinding attacker arranges
        rules = "--host-resolver-rules=MAP attacker.example 127.0.0.1"
        async with (
            chromium(rules) as browser,
            page_server(ATTACK_PAGE.format(target=server.url)) as site,
        ):
            page = await browser.new_page()
            # --- CSRF: another origin's page posts a form and a no-cors DELETE -------------
            async with page.expect_response(
                lambda r: r.url.endswith("/v1/agents/misbehaving/restart")
            ) as posted:
                await page.goto(site)
            response = await posted.value
            assert response.status == 403
            assert (await response.json())["error"]["origin"] == site
            # --- DNS rebinding: the browser reads what the page's own name serves ----------
            rebound = await page.goto(f"http://attacker.example:{port}/v1/conversations")
            assert rebound is not None
            assert rebound.status == 421
            assert "forbidden_host" in await page.content()
            deleted = await page.evaluate(
                "async () => (await fetch('/v1/conversations/b-1', {method: 'DELETE'})).status"
            )
            assert deleted == 421
            # --- the server's own origin (the dashboard's) works in the same browser -------
            await page.goto(f"{server.url}/dashboard")
            restarted = await page.evaluate(
                "async () => (await fetch('/v1/agents/misbehaving/restart', "
                "{method: 'POST'})).status"
            )
            assert restarted == 200
        new_pid = await worker_pid(api)
        assert new_pid != pid  # the same-origin restart, and only it
        assert (await api.agent("misbehaving"))["restarts"] == 0
        assert await api.prompts("b-1") == ["seed"]  # the foreign DELETE did nothing
