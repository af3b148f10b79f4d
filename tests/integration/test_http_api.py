"""The HTTP API over a real ``axon serve`` subprocess: every route, every error status, the error
envelope and its facts, the headers that go with them, and the history left unchanged by every
failure (issue 4).

Every response any test here receives goes through :class:`Api`, which fails the test on a 500 or
a body that mentions a traceback, and records ``(method, path, status)`` so that each test can
check the OpenAPI document against the statuses it actually observed.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic_ai import ModelMessagesTypeAdapter
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart

from axon.testing import TcpRelay, user_prompts

from ..conftest import FAST_SUPERVISOR_TOML, ServeAxon, descendant_pids, pid_alive

T = TypeVar("T")

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

SUPERVISOR: dict[str, float] = {
    "backoff_initial": 0.01,
    "backoff_max": 0.5,
    "heartbeat_interval": 0.25,
    "heartbeat_timeout": 4.0,
    "cancel_grace": 1.0,
    "shutdown_timeout": 3.0,
}

ROUTES = {
    ("post", "/v1/agents/{agent_id}/messages"),
    ("get", "/v1/agents"),
    ("get", "/v1/agents/{agent_id}"),
    ("post", "/v1/agents/{agent_id}/restart"),
    ("get", "/v1/conversations"),
    ("get", "/v1/conversations/{conversation_id}"),
    ("delete", "/v1/conversations/{conversation_id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/monitor"),
}
"""Every route the API documents (``/openapi.json`` and ``/docs`` themselves are not listed)."""


# ------------------------------------------------------------------------------------ helpers


class Api:
    """An ``httpx.AsyncClient`` on a server that checks every response it receives: never a
    500, never a traceback in a body; and records ``(method, path, status)`` of each."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None) -> None:
        self.seen: set[tuple[str, str, int]] = set()
        self.client = httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(60.0),
            headers=dict(headers or {}),
            event_hooks={"response": [self._check]},
        )

    async def _check(self, response: httpx.Response) -> None:
        request = response.request
        self.seen.add((request.method.lower(), request.url.path, response.status_code))
        assert response.status_code != 500, f"{request.method} {request.url}: 500"
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            body = (await response.aread()).decode(errors="replace")
            assert "Traceback" not in body, f"{request.method} {request.url}: {body}"

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.delete(path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.post(path, **kw)

    async def send(self, agent_id: str, prompt: str, **fields: Any) -> httpx.Response:
        """POST a message (JSON reply)."""
        return await self.client.post(
            f"/v1/agents/{agent_id}/messages", json={"prompt": prompt, **fields}
        )

    async def reply(self, agent_id: str, prompt: str, **fields: Any) -> dict[str, Any]:
        """POST a message that must succeed; its reply body."""
        response = await self.send(agent_id, prompt, **fields)
        assert response.status_code == 200, response.text
        return response.json()

    async def agent(self, agent_id: str) -> dict[str, Any]:
        response = await self.get(f"/v1/agents/{agent_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def history(self, conversation_id: str) -> tuple[int, list[ModelMessage]]:
        """A conversation's revision and history (``(0, [])`` if it does not exist), validated
        as pydantic-ai JSON."""
        response = await self.get(f"/v1/conversations/{conversation_id}")
        if response.status_code == 404:
            error_of(response, 404, "conversation_not_found")
            return 0, []
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["conversation_id"] == conversation_id
        messages = ModelMessagesTypeAdapter.validate_python(body["messages"])
        return body["revision"], list(messages)

    async def prompts(self, conversation_id: str) -> list[str]:
        return user_prompts((await self.history(conversation_id))[1])

    async def assert_documented(self) -> None:
        """Every status seen on a documented route is documented for it in ``/openapi.json``,
        with the error envelope as its body for errors."""
        doc = (await self.get("/openapi.json")).json()
        templates = [
            (re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path)
            for path in doc["paths"]
        ]
        for method, path, status in sorted(self.seen):
            template = next((t for pattern, t in templates if pattern.match(path)), None)
            if template is None or method not in doc["paths"][template]:
                continue  # unknown routes and methods: 404/405, nothing to document
            responses = doc["paths"][template][method]["responses"]
            assert str(status) in responses, (
                f"{method.upper()} {template} answered {status}, which /openapi.json does not "
                f"document (it lists {sorted(responses)})"
            )
            if status >= 400 and not (template == "/readyz" and status == 503):
                schema = responses[str(status)]["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/ErrorEnvelope"), (method, template, status)


def error_of(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    """Assert ``response`` is the error envelope with ``status`` and ``type``; the error."""
    assert response.status_code == status, (
        f"expected {status} {error_type}, got {response.status_code}: {response.text}"
    )
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["type"] == error_type, body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    return error


def retry_after(response: httpx.Response) -> int:
    """The ``Retry-After`` header (whole seconds, at least 1), which must be there."""
    value = response.headers.get("retry-after")
    assert value is not None, f"no Retry-After on {response.status_code}: {response.text}"
    assert value.isdigit(), value
    assert int(value) >= 1, value
    return int(value)


async def poll(
    fetch: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, timeout: float = 30.0
) -> T:
    """Fetch (a status route) until ``until(value)`` holds; ``TimeoutError`` after ``timeout``
    seconds. Waiting on responses, re-asked every 50 ms."""
    async with asyncio.timeout(timeout):
        while True:
            value = await fetch()
            if until(value):
                return value
            await asyncio.sleep(0.05)


def last_text(messages: list[ModelMessage]) -> str:
    response = messages[-1]
    assert isinstance(response, ModelResponse)
    return "".join(p.content for p in response.parts if isinstance(p, TextPart))


def misbehaving(agent_id: str, extra: str = "", **supervisor: float) -> str:
    """A ``[[agents]]`` table of the misbehaving example agent; ``supervisor``: its own
    supervisor settings (over the test defaults)."""
    table = (
        f'[[agents]]\nid = "{agent_id}"\n'
        f'agent = "axon.examples.misbehaving:misbehaving_agent"\n{extra}\n'
    )
    if supervisor:
        table += "[agents.supervisor]\n" + "".join(
            f"{key} = {value}\n" for key, value in (SUPERVISOR | supervisor).items()
        )
    return table


def config(*agents: str, runtime: str = "", shutdown_grace: float = 10) -> str:
    """An ``axon.toml``: SQLite in the server's directory, the test supervisor, ``agents``."""
    return (
        f'[runtime]\nstore = "sqlite:///axon.db"\nshutdown_grace = {shutdown_grace}\n{runtime}\n'
        + FAST_SUPERVISOR_TOML
        + "\n"
        + "\n".join(agents)
    )


# -------------------------------------------------------------------------------------- tests


WEATHER_AGENTS = """\
[[agents]]
id = "python_agent_1"
agent = "axon.examples.weather:weather_agent"
workers = 2
"""


async def test_replies_conversations_agents_and_probes(serve_axon: ServeAxon) -> None:
    server = await serve_axon(config(WEATHER_AGENTS, misbehaving("misbehaving")))
    async with Api(server.url) as api:
        # --- 200: the reply, committed -------------------------------------------------------
        ask = "What is the weather in Paris?"
        reply = await api.reply("python_agent_1", ask, conversation_id="api-a")
        assert set(reply) == {"output", "conversation_id", "run_id", "agent_id", "usage"}
        assert reply["conversation_id"] == "api-a"
        assert reply["agent_id"] == "python_agent_1"
        assert reply["output"].startswith("The weather in Paris is ")
        assert reply["output"].endswith(f'(you asked: "{ask}")')
        assert isinstance(reply["run_id"], str)
        assert reply["run_id"]
        assert reply["usage"]["requests"] == 3
        assert reply["usage"]["tool_calls"] == 2
        second = await api.reply(
            "python_agent_1", "What is the weather in Oslo?", conversation_id="api-a"
        )
        assert second["run_id"] != reply["run_id"]
        fresh = await api.reply("misbehaving", "hello")  # no conversation id: a new one
        assert CONVERSATION_ID.match(fresh["conversation_id"])
        assert fresh["conversation_id"] != "api-a"
        assert fresh["output"] == "echo: hello"
        await api.reply("misbehaving", "b", conversation_id="api-b")
        await api.reply("misbehaving", "c", conversation_id="api-c")

        # --- GET /v1/conversations/{id}: pydantic-ai JSON, paged ------------------------------
        revision, messages = await api.history("api-a")
        assert revision == 2
        assert user_prompts(messages) == [ask, "What is the weather in Oslo?"]
        assert last_text(messages) == second["output"]
        full = (await api.get("/v1/conversations/api-a")).json()["messages"]
        assert len(full) == len(messages) > 4
        for offset, limit in ((0, 1), (1, 2), (3, None), (len(full) - 1, 5), (len(full), 2)):
            params: dict[str, int] = {"offset": offset} | (
                {} if limit is None else {"limit": limit}
            )
            page = await api.get("/v1/conversations/api-a", params=params)
            assert page.status_code == 200, page.text
            stop = None if limit is None else offset + limit
            assert page.json()["messages"] == full[offset:stop], (offset, limit)
            assert page.json()["revision"] == 2
            ModelMessagesTypeAdapter.validate_python(page.json()["messages"])
        for bad in ({"offset": -1}, {"limit": 0}, {"offset": "x"}):
            error = error_of(
                await api.get("/v1/conversations/api-a", params=bad), 422, "invalid_request"
            )
            assert error["field"] == next(iter(bad))

        # --- GET /v1/conversations: listing, filter, paging -----------------------------------
        listing = await api.get("/v1/conversations", params={"limit": 1000})
        assert listing.status_code == 200
        everything = listing.json()["conversations"]
        ids = [c["conversation_id"] for c in everything]
        assert ids == sorted(ids)
        assert set(ids) == {"api-a", "api-b", "api-c", fresh["conversation_id"]}
        by_id = {c["conversation_id"]: c for c in everything}
        assert by_id["api-a"]["agent_id"] == "python_agent_1"
        assert by_id["api-a"]["revision"] == 2
        assert by_id["api-b"]["agent_id"] == "misbehaving"
        assert by_id["api-b"]["revision"] == 1
        assert by_id["api-a"]["updated_at"] >= by_id["api-a"]["created_at"] > 0
        assert listing.json()["next_after"] is None
        paged: list[str] = []
        after: str | None = None
        while True:
            params2: dict[str, Any] = {"limit": 1} | ({} if after is None else {"after": after})
            page = (await api.get("/v1/conversations", params=params2)).json()
            assert len(page["conversations"]) <= 1
            paged += [c["conversation_id"] for c in page["conversations"]]
            if (after := page["next_after"]) is None:
                break
        assert paged == ids
        mine = (await api.get("/v1/conversations", params={"agent_id": "python_agent_1"})).json()
        assert [c["conversation_id"] for c in mine["conversations"]] == ["api-a"]
        error = error_of(
            await api.get("/v1/conversations", params={"agent_id": "nope"}), 404, "agent_not_found"
        )
        assert error["agent_id"] == "nope"
        for bad in ({"limit": 0}, {"limit": 1001}, {"after": "not valid!"}):
            error = error_of(await api.get("/v1/conversations", params=bad), 422, "invalid_request")
            assert error["field"] == next(iter(bad))

        # --- DELETE /v1/conversations/{id} ----------------------------------------------------
        deleted = await api.delete("/v1/conversations/api-c")
        assert deleted.status_code == 204
        assert deleted.content == b""
        assert await api.history("api-c") == (0, [])
        for method in (api.get, api.delete):
            error = error_of(await method("/v1/conversations/api-c"), 404, "conversation_not_found")
            assert error["conversation_id"] == "api-c"
            error = error_of(await method("/v1/conversations/never"), 404, "conversation_not_found")
            assert error["conversation_id"] == "never"
            error = error_of(await method("/v1/conversations/bad%20id"), 422, "invalid_request")
            assert error["field"] == "conversation_id"
            error = error_of(await method("/v1/conversations/" + "x" * 129), 422, "invalid_request")
            assert error["field"] == "conversation_id"
        listed = (await api.get("/v1/conversations")).json()["conversations"]
        assert "api-c" not in {c["conversation_id"] for c in listed}
        assert await api.prompts("api-b") == ["b"]  # the others are untouched

        # --- unknown agents, routes and methods -----------------------------------------------
        for response in (
            await api.send("nope", "hello"),
            await api.get("/v1/agents/nope"),
            await api.post("/v1/agents/nope/restart"),
        ):
            assert error_of(response, 404, "agent_not_found")["agent_id"] == "nope"
        error_of(await api.get("/v1/nothing/here"), 404, "not_found")
        error_of(await api.get("/"), 404, "not_found")
        error_of(await api.client.put("/v1/agents"), 405, "method_not_allowed")
        error_of(await api.get("/v1/agents/python_agent_1/messages"), 405, "method_not_allowed")

        # --- GET /v1/agents, GET /v1/agents/{id} ----------------------------------------------
        agents = (await api.get("/v1/agents")).json()["agents"]
        assert [a["id"] for a in agents] == ["python_agent_1", "misbehaving"]
        children = set(descendant_pids(server.pid))
        for agent in agents:
            assert agent["state"] == "running"
            assert agent["restarts"] == 0
            assert agent["in_flight"] == 0
            assert agent["recent_exits"] == []
            assert agent == await api.agent(agent["id"])
            for worker in agent["workers"]:
                assert worker["state"] == "running"
                assert worker["last_exit"] is None
                assert worker["pid"] in children
                assert pid_alive(worker["pid"])
        assert [w["index"] for w in agents[0]["workers"]] == [0, 1]
        assert len(agents[1]["workers"]) == 1

        # --- POST /v1/agents/{id}/restart: new processes --------------------------------------
        old = {w["pid"] for w in agents[0]["workers"]}
        restarted = await api.post("/v1/agents/python_agent_1/restart")
        assert restarted.status_code == 200, restarted.text
        body = restarted.json()
        assert body["id"] == "python_agent_1"
        assert body["state"] == "running"
        new = {w["pid"] for w in body["workers"]}
        assert len(new) == 2
        assert not new & old
        assert all(w["state"] == "running" for w in body["workers"])
        assert all(pid_alive(pid) for pid in new)
        assert not [pid for pid in old if pid_alive(pid)], "the old workers outlived the restart"
        assert (await api.reply("python_agent_1", "weather in Rome?", conversation_id="api-a"))[
            "output"
        ].startswith("The weather in Rome is ")
        assert (await api.history("api-a"))[0] == 3  # history survives the restart

        # --- probes ------------------------------------------------------------------------------
        health = await api.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = await api.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "ready": True,
            "store": "ok",
            "agents": {"python_agent_1": "running", "misbehaving": "running"},
            "not_serving": [],
        }

        # --- /openapi.json: every route, and every status observed above ----------------------
        doc = (await api.get("/openapi.json")).json()
        documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
        assert documented == ROUTES
        docs = await api.get("/docs")
        assert docs.status_code == 200
        assert "openapi.json" in docs.text
        await api.assert_documented()


async def test_request_validation_and_body_limits(serve_axon: ServeAxon) -> None:
    server = await serve_axon(
        config(
            misbehaving("misbehaving", "max_prompt_chars = 50\ntimeout = 10\nmax_timeout = 30"),
            runtime="max_body_bytes = 1024",
        )
    )
    url = "/v1/agents/misbehaving/messages"
    async with Api(server.url) as api:
        await api.reply("misbehaving", "seed", conversation_id="v-1")

        def body(**fields: Any) -> dict[str, Any]:
            return {"prompt": "hello", "conversation_id": "v-1", **fields}

        # 422 with the field named, for every invalid field
        invalid: list[tuple[dict[str, Any], str]] = [
            (body(prompt=""), "prompt"),
            (body(prompt="   \n\t "), "prompt"),
            (body(prompt="x" * 51), "prompt"),
            (body(prompt=5), "prompt"),
            (body(prompt=None), "prompt"),
            ({"conversation_id": "v-1"}, "prompt"),
            (body(conversation_id="bad id!"), "conversation_id"),
            (body(conversation_id=""), "conversation_id"),
            (body(conversation_id="-starts-with-dash"), "conversation_id"),
            (body(conversation_id="x" * 129), "conversation_id"),
            (body(conversation_id=7), "conversation_id"),
            (body(timeout=0), "timeout"),
            (body(timeout=5e-324), "timeout"),  # the smallest float: once a 504 (issue 12)
            (body(timeout=0.0099), "timeout"),
            (body(timeout=-1), "timeout"),
            (body(timeout=30.5), "timeout"),
            (body(timeout="5"), "timeout"),
            (body(stream="yes"), "stream"),
            (body(stream=1), "stream"),
            (body(policy="sometimes"), "policy"),
            (body(on_disconnect="later"), "on_disconnect"),
            (body(unknown_key=1), "unknown_key"),
        ]
        for fields, field in invalid:
            error = error_of(await api.post(url, json=fields), 422, "invalid_request")
            assert error["field"] == field, (fields, error)
            assert field in error["message"] or field == "prompt", error
        # the limits themselves are accepted
        assert (await api.reply("misbehaving", "y" * 50, conversation_id="v-2"))["output"] == (
            "echo: " + "y" * 50
        )
        await api.reply("misbehaving", "bounded", conversation_id="v-2", timeout=30)
        shortest = await api.send("misbehaving", "shortest", conversation_id="v-3", timeout=0.01)
        assert shortest.status_code in (200, 504), shortest.text  # 10 ms may not be enough
        document = (await api.get("/openapi.json")).json()
        timeout = document["components"]["schemas"]["MessageRequest"]["properties"]["timeout"]
        number = next(o for o in timeout["anyOf"] if o.get("type") == "number")
        assert (number["minimum"], number["maximum"]) == (0.01, 30)
        assert "exclusiveMinimum" not in number

        # 400: not a JSON object
        for raw in (b"not json", b"[1, 2]", b'"prompt"', b"42", b"null", b"", b'{"prompt": '):
            error = error_of(
                await api.post(url, content=raw, headers={"content-type": "application/json"}),
                400,
                "invalid_request",
            )
            assert error["field"] == "body", raw

        # 415: a JSON object not declared as JSON (no Content-Type, curl -d's form type, text)
        valid = json.dumps(body(prompt="undeclared")).encode()
        for content_type in (None, "application/x-www-form-urlencoded", "text/plain"):
            headers = {} if content_type is None else {"content-type": content_type}
            error = error_of(
                await api.post(url, content=valid, headers=headers), 415, "unsupported_media_type"
            )
            assert "application/json" in error["message"], content_type

        # 413: a body over runtime.max_body_bytes, declared (Content-Length) or chunked
        big = json.dumps(body(prompt="z" * 2000)).encode()
        declared = await api.post(url, content=big, headers={"content-type": "application/json"})
        assert error_of(declared, 413, "payload_too_large")["limit"] == 1024

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 400):
                yield big[i : i + 400]

        chunked = await api.post(
            url, content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in chunked.request.headers
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        assert error_of(chunked, 413, "payload_too_large")["limit"] == 1024
        # just under the limit (padded with whitespace): accepted
        padded = json.dumps(body(prompt="padded")).encode().ljust(1024)
        ok = await api.post(url, content=padded, headers={"content-type": "application/json"})
        assert ok.status_code == 200
        assert ok.json()["output"] == "echo: padded"
        over = padded + b" "
        error_of(
            await api.post(url, content=over, headers={"content-type": "application/json"}),
            413,
            "payload_too_large",
        )

        # 404 before anything else about the body: the agent does not exist
        error = error_of(
            await api.send("nope", "hello", conversation_id="v-1"), 404, "agent_not_found"
        )
        assert error["agent_id"] == "nope"

        # nothing of the rejected requests reached the conversation
        assert await api.prompts("v-1") == ["seed", "padded"]
        assert await api.prompts("v-2") == ["y" * 50, "bounded"]
        await api.assert_documented()


FAULTS = config(
    misbehaving("misbehaving", "timeout = 10"),
    # restarts wait 1-2 s (jitter): long enough to be seen restarting
    misbehaving("crashy", backoff_initial=2.0, backoff_max=2.0),
    # fails for good at its first crash
    misbehaving("fragile", max_restarts=0, failed_cooldown=60),
    # one run at a time, no queue
    misbehaving("solo", "max_concurrency = 1\nqueue_size = 0"),
)


async def test_run_failures_map_to_statuses_and_leave_history_unchanged(
    serve_axon: ServeAxon,
) -> None:
    server = await serve_axon(FAULTS)
    async with Api(server.url) as api:
        for agent_id, cid in (
            ("crashy", "f-crash"),
            ("misbehaving", "f-run"),
            ("fragile", "f-fail"),
        ):
            await api.reply(agent_id, "seed", conversation_id=cid)
        crashy_pid = (await api.agent("crashy"))["workers"][0]["pid"]

        # --- 502 agent_crashed (exit code), then 503 while it restarts ------------------------
        crashed = error_of(
            await api.send("crashy", "crash:exit:7", conversation_id="f-crash"),
            502,
            "agent_crashed",
        )
        assert crashed["agent_id"] == "crashy"
        assert crashed["pid"] == crashy_pid
        assert crashed["exit_code"] == 7
        assert crashed["signal"] is None
        restarting = await api.send("crashy", "hello", conversation_id="f-crash")
        unavailable = error_of(restarting, 503, "agent_unavailable")
        assert unavailable["agent_id"] == "crashy"
        assert unavailable["state"] == "restarting"
        assert 0 < unavailable["retry_after"] <= retry_after(restarting) < 30
        not_ready = await api.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["ready"] is False
        assert not_ready.json()["not_serving"] == ["crashy"]
        assert not_ready.json()["agents"]["crashy"] == "restarting"

        # --- 502 agent_run_failed, 504 agent_timeout --------------------------------------------
        failed = error_of(
            await api.send("misbehaving", "raise:boom", conversation_id="f-run"),
            502,
            "agent_run_failed",
        )
        assert failed["agent_id"] == "misbehaving"
        assert failed["remote_type"] == "RuntimeError"
        assert failed["remote_message"] == "boom"
        timed_out = error_of(
            await api.send("misbehaving", "sleep:5", conversation_id="f-run", timeout=0.5),
            504,
            "agent_timeout",
        )
        assert timed_out["agent_id"] == "misbehaving"
        assert timed_out["timeout"] == 0.5

        # --- 409 conversation_busy (policy reject), while another conversation runs -----------
        in_flight = asyncio.create_task(
            api.send("misbehaving", "sleep:1.5", conversation_id="f-run")
        )
        await poll(lambda: api.agent("misbehaving"), lambda a: a["in_flight"] == 1)
        busy = error_of(
            await api.send("misbehaving", "now", conversation_id="f-run", policy="reject"),
            409,
            "conversation_busy",
        )
        assert busy["conversation_id"] == "f-run"
        assert busy["reason"] == "in_progress"
        elsewhere = await api.reply(
            "misbehaving", "other", conversation_id="f-other", policy="reject"
        )
        assert elsewhere["output"] == "echo: other"
        assert (await in_flight).json()["output"] == "slept 1.5"

        # --- 409 run_interrupted for the interrupted run, 200 for the interrupting one --------
        doomed = asyncio.create_task(api.send("misbehaving", "sleep:20", conversation_id="f-run"))
        await poll(lambda: api.agent("misbehaving"), lambda a: a["in_flight"] == 1)
        winner = await api.reply(
            "misbehaving", "instead", conversation_id="f-run", policy="interrupt"
        )
        assert winner["output"] == "echo: instead"
        interrupted = error_of(await doomed, 409, "run_interrupted")
        assert interrupted["conversation_id"] == "f-run"
        assert await api.prompts("f-run") == ["seed", "sleep:1.5", "instead"]

        # --- 429 overloaded + Retry-After (one slot, no queue) --------------------------------
        hog = asyncio.create_task(api.send("solo", "sleep:1.5", conversation_id="f-solo"))
        await poll(lambda: api.agent("solo"), lambda a: a["in_flight"] == 1)
        full = await api.send("solo", "hello", conversation_id="f-solo-2")
        overloaded = error_of(full, 429, "overloaded")
        assert overloaded["agent_id"] == "solo"
        assert overloaded["queue_size"] == 0
        assert retry_after(full) >= overloaded["retry_after"] > 0
        assert (await hog).status_code == 200
        assert await api.history("f-solo-2") == (0, [])

        # --- 502 agent_crashed with a signal, once crashy is back -------------------------------
        back = await poll(lambda: api.agent("crashy"), lambda a: a["state"] == "running")
        assert back["restarts"] == 1
        assert back["workers"][0]["pid"] != crashy_pid
        assert [e["exit_code"] for e in back["recent_exits"]] == [7]
        assert back["workers"][0]["last_exit"]["pid"] == crashy_pid
        assert (await api.get("/readyz")).status_code == 200
        segv = error_of(
            await api.send("crashy", "crash:segv", conversation_id="f-crash"), 502, "agent_crashed"
        )
        assert segv["signal"] == 11
        assert segv["signal_name"] == "SIGSEGV"
        assert segv["exit_code"] is None
        after = await poll(lambda: api.agent("crashy"), lambda a: len(a["recent_exits"]) == 2)
        assert [(e["exit_code"], e["signal"]) for e in after["recent_exits"]] == [
            (7, None),
            (None, 11),
        ]
        assert after["restarts"] == 2

        # --- FAILED: 502 for the crash, then 503 + Retry-After until restarted by hand --------
        killed = error_of(
            await api.send("fragile", "crash:kill", conversation_id="f-fail"), 502, "agent_crashed"
        )
        assert killed["signal"] == 9
        assert killed["signal_name"] == "SIGKILL"
        await poll(lambda: api.agent("fragile"), lambda a: a["state"] == "failed")
        refused = await api.send("fragile", "hello", conversation_id="f-fail")
        gone = error_of(refused, 503, "agent_unavailable")
        assert gone["state"] == "failed"
        assert gone["agent_id"] == "fragile"
        # the rest of the 60 s cooldown, plus how long a worker takes to start
        assert 30 < gone["retry_after"] <= retry_after(refused) < 90
        ready = await api.get("/readyz")  # a FAILED agent does not hold readiness back
        assert ready.json()["agents"]["fragile"] == "failed"
        assert "fragile" not in ready.json()["not_serving"]
        revived = await api.post("/v1/agents/fragile/restart")
        assert revived.status_code == 200
        assert revived.json()["state"] == "running"
        assert pid_alive(revived.json()["workers"][0]["pid"])
        assert (await api.reply("fragile", "alive", conversation_id="f-fail"))[
            "output"
        ] == "echo: alive"

        # --- nothing lost, nothing of a failed run committed ----------------------------------
        assert await api.prompts("f-crash") == ["seed"]
        assert await api.prompts("f-fail") == ["seed", "alive"]
        assert (await api.history("f-crash"))[0] == 1
        await api.assert_documented()


async def test_readyz_and_conversations_when_the_store_is_unreachable(
    serve_axon: ServeAxon, postgres_url: str
) -> None:
    async with TcpRelay.in_front_of(postgres_url) as relay:
        store = f"{relay.rewrite(postgres_url)}&connect_timeout=1&command_timeout=1"
        server = await serve_axon(
            config(misbehaving("misbehaving"), runtime="").replace(
                'store = "sqlite:///axon.db"', f'store = "{store}"'
            )
        )
        async with Api(server.url) as api:
            await api.reply("misbehaving", "before", conversation_id="s-1")
            assert (await api.get("/readyz")).status_code == 200
            await relay.cut()
            not_ready = await api.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["ready"] is False
            assert not_ready.json()["store"] != "ok"
            assert not_ready.json()["agents"] == {"misbehaving": "running"}
            for response in (
                await api.send("misbehaving", "during", conversation_id="s-1"),
                await api.get("/v1/conversations/s-1"),
                await api.get("/v1/conversations"),
                await api.delete("/v1/conversations/s-1"),
            ):
                error = error_of(response, 503, "store_unavailable")
                assert error["store"] == "postgresql"
                assert retry_after(response) >= 1
            relay.restore()
            await poll(lambda: api.get("/readyz"), lambda r: r.status_code == 200)
            await api.reply("misbehaving", "after", conversation_id="s-1")
            assert await api.prompts("s-1") == ["before", "after"]
            await api.assert_documented()


async def test_accepted_connections_send_without_waiting_for_acks() -> None:
    """The listener ``axon serve`` binds makes asyncio set TCP_NODELAY on every connection it
    accepts (else each response written in two parts waits ~40 ms for a delayed ACK)."""
    from axon.http.server import ListenAddress, bind

    sock = bind(ListenAddress("127.0.0.1:0"))
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        option = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        nodelay.set_result(option)
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        async with asyncio.timeout(10):
            assert await nodelay != 0
        writer.close()
        await writer.wait_closed()
