"""Bearer-token auth on a real ``axon serve``, and the refusal to listen beyond loopback without
one (issue 4, Guarantee 8: safe by default)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from httpx_sse import aconnect_sse

from ..conftest import ServeAxon
from .test_http_api import ROUTES, Api, config, error_of, misbehaving

TOKEN = "env-token-0123456789abcdef"
CONFIG_TOKEN = "config-token-0123456789abcdef"
AGENT = config(misbehaving("misbehaving"))

# One concrete request per documented route (and the two documentation routes).
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "post",
        "/v1/agents/misbehaving/messages",
        {"json": {"prompt": "hi", "conversation_id": "a-1"}},
    ),
    ("get", "/v1/agents", {}),
    ("get", "/v1/agents/misbehaving", {}),
    ("post", "/v1/agents/misbehaving/restart", {}),
    ("get", "/v1/conversations", {}),
    ("get", "/v1/conversations/a-1", {}),
    ("delete", "/v1/conversations/a-1", {}),
    ("get", "/metrics", {}),
    ("get", "/v1/monitor", {}),
    ("get", "/healthz", {}),
    ("get", "/readyz", {}),
    ("get", "/openapi.json", {}),
    ("get", "/docs", {}),
]
EXPECTED = [200, 200, 200, 200, 200, 200, 204, 200, 200, 200, 200, 200, 200]
"""The status of each request above, in order, once authorized."""

WRONG = [
    {},
    {"authorization": "Bearer wrong-token-0123456789abcdef"},
    {"authorization": f"Basic {TOKEN}"},
    {"authorization": TOKEN},
    {"authorization": "Bearer"},
    {"authorization": f"Bearer {TOKEN[:-1]}"},
    {"authorization": f"Bearer {TOKEN}x"},
    {"x-api-token": TOKEN},
]
"""Credentials that must not pass: none, a wrong token, the right one in the wrong place."""


class AuthApi(Api):
    async def agent_with(self, headers: dict[str, str]) -> dict[str, Any]:
        response = await self.client.get("/v1/agents/misbehaving", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()


def covers_every_route(doc: dict[str, Any]) -> None:
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == ROUTES
    templated = {(m, p) for m, p, _ in REQUESTS}
    for method, template in ROUTES:
        concrete = template.replace("{agent_id}", "misbehaving").replace("{conversation_id}", "a-1")
        assert (method, concrete) in templated, (method, template)


async def refused(api: AuthApi, token: str) -> None:
    """Every route but /healthz (and the dashboard's static files, which hold no data) answers
    401 + WWW-Authenticate: Bearer to every wrong credential, and does nothing else."""
    authorized = {"authorization": f"Bearer {token}"}
    pid = (await api.agent_with(authorized))["workers"][0]["pid"]
    for headers in WRONG:
        for method, path, kw in REQUESTS:
            response = await api.client.request(method, path, headers=headers, **kw)
            if path == "/healthz":
                assert response.status_code == 200
                continue
            error_of(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer", (method, path, headers)
            assert token not in response.text
    # unknown routes and oversized bodies too: nothing is revealed before the token is checked
    for response in (
        await api.client.get("/v1/no/such/route"),
        await api.client.post("/v1/agents/misbehaving/messages", content=b"x" * 2_000_000),
        await api.client.post("/v1/agents/nope/messages", json={"prompt": "hi"}),
    ):
        error_of(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    # nothing was done: no restart, no run
    agent = await api.agent_with(authorized)
    assert agent["workers"][0]["pid"] == pid
    assert agent["restarts"] == 0
    missing = await api.client.get("/v1/conversations/a-1", headers=authorized)
    assert missing.status_code == 404, "an unauthorized request reached the agent"


async def accepted(api: AuthApi, token: str) -> None:
    """With the token, every route does its job, /openapi.json included."""
    authorized = {"authorization": f"Bearer {token}"}
    pid = (await api.agent_with(authorized))["workers"][0]["pid"]
    covers_every_route((await api.client.get("/openapi.json", headers=authorized)).json())
    for (method, path, kw), status in zip(REQUESTS, EXPECTED, strict=True):
        response = await api.client.request(method, path, headers=authorized, **kw)
        assert response.status_code == status, (method, path, response.text)
    assert (await api.agent_with(authorized))["workers"][0]["pid"] != pid  # restart did run
    # the scheme is case-insensitive (RFC 9110); streaming works with the token too
    lower = await api.client.get("/v1/agents", headers={"authorization": f"bearer {token}"})
    assert lower.status_code == 200
    async with aconnect_sse(
        api.client,
        "POST",
        "/v1/agents/misbehaving/messages",
        json={"prompt": "streamed"},
        headers=authorized,
    ) as source:
        events = [event.event async for event in source.aiter_sse()]
    assert events == ["text_delta", "final"]


async def test_env_token_guards_every_route_but_healthz(serve_axon: ServeAxon) -> None:
    server = await serve_axon(AGENT, env={"AXON_API_TOKEN": TOKEN})
    async with AuthApi(server.url) as api:
        await refused(api, TOKEN)
        await accepted(api, TOKEN)


async def test_config_token_on_a_non_loopback_listen(serve_axon: ServeAxon) -> None:
    # runtime.api_token wins over the environment; 0.0.0.0 is allowed because a token is set
    server = await serve_axon(
        AGENT.replace("[runtime]\n", f'[runtime]\napi_token = "{CONFIG_TOKEN}"\n'),
        env={"AXON_API_TOKEN": TOKEN},
        listen="0.0.0.0:0",
    )
    assert server.url.startswith("http://0.0.0.0:")
    url = server.url.replace("0.0.0.0", "127.0.0.1")
    async with AuthApi(url) as api:
        env_token = await api.client.get("/v1/agents", headers={"authorization": f"Bearer {TOKEN}"})
        error_of(env_token, 401, "unauthorized")
        await refused(api, CONFIG_TOKEN)
        await accepted(api, CONFIG_TOKEN)


async def test_without_a_token_no_route_asks_for_one(serve_axon: ServeAxon) -> None:
    server = await serve_axon(AGENT, env={"AXON_API_TOKEN": ""})
    async with AuthApi(server.url) as api:
        for headers in ({}, {"authorization": "Bearer anything-at-all-0123456789"}):
            # each round creates conversation a-1 (POST) and deletes it again (DELETE)
            for (method, path, kw), status in zip(REQUESTS, EXPECTED, strict=True):
                response = await api.client.request(method, path, headers=headers, **kw)
                assert response.status_code == status, (method, path, headers, response.text)
                assert "www-authenticate" not in response.headers
        for headers in WRONG:
            response = await api.client.get("/v1/agents", headers=headers)
            assert response.status_code == 200, response.text


async def serve_refused(tmp_path: Path, toml: str, listen: str, token: str) -> tuple[int, str, str]:
    """Run ``axon serve`` that must refuse to start; its exit code, stdout and stderr."""
    path = tmp_path / f"refused-{abs(hash((toml, listen, token)))}.toml"
    path.write_text(toml)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "axon.cli",
        "serve",
        str(path),
        "--listen",
        listen,
        "--log-format",
        "json",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AXON_API_TOKEN": token, "COLUMNS": "300"},
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_refuses_exposure_without_a_token_and_short_tokens(tmp_path: Path) -> None:
    short_in_config = AGENT.replace("[runtime]\n", '[runtime]\napi_token = "too-short"\n')
    runs = await asyncio.gather(
        serve_refused(tmp_path, AGENT, "0.0.0.0:0", ""),
        serve_refused(tmp_path, AGENT, "[::]:0", ""),
        serve_refused(tmp_path, AGENT, "127.0.0.1:0", "too-short"),
        serve_refused(tmp_path, short_in_config, "127.0.0.1:0", ""),
    )
    for code, out, err in runs:
        assert code == 2, (code, out, err)
        assert "axon is serving" not in out
        assert "worker.start" not in err, "a worker was started before the refusal"
        assert "Traceback" not in out + err
    for _, out, err in runs[:2]:
        assert "runtime.listen" in out + err
        assert "AXON_API_TOKEN" in out + err
    assert "AXON_API_TOKEN" in runs[2][1] + runs[2][2]
    assert "16" in runs[2][1] + runs[2][2]
    assert "api_token" in runs[3][1] + runs[3][2]
