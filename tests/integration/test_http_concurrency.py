"""The seed's concurrency scenarios again, through HTTP: one real ``axon serve`` subprocess for
the module, driven by many concurrent ``httpx`` requests.

The weather agent quotes the exact prompt in its answer and calls two tools per run, so a reply
or a committed history that belongs to another request is detected by content, not by count.
Every test uses its own prompts and conversation ids, so they share the server safely.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic_ai import ModelMessagesTypeAdapter

from axon.examples.weather import LATENCY_ENV_VAR
from axon.testing import AxonServer

from ..conftest import TEST_SERVER_TOML, descendant_pids, pid_alive
from .test_concurrency import assert_weather_run, quote, split_runs

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT = httpx.Timeout(60.0)
LIMITS = httpx.Limits(max_connections=500, max_keepalive_connections=500)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AxonServer]:
    """One ``axon serve`` for the module; at teardown SIGTERM must end it with exit code 0 and
    no worker process left."""
    workdir: Path = tmp_path_factory.mktemp("http-concurrency")
    config = workdir / "axon.toml"
    config.write_text(TEST_SERVER_TOML)
    # Each weather model step takes 20 ms (3 per run), so concurrent runs really overlap.
    server = await AxonServer.start(config, cwd=workdir, env={LATENCY_ENV_VAR: "0.02"})
    pids = set(descendant_pids(server.pid))
    try:
        yield server
    finally:
        pids |= set(descendant_pids(server.pid))
        code = await server.stop()
        assert code == 0, f"axon serve exited with {code}:\n{server.logs()}"
        assert not {pid for pid in pids if pid_alive(pid)}, "workers outlived axon serve"
        assert "internal_error" not in server.logs(), server.logs()


@pytest_asyncio.fixture(loop_scope="module")
async def client(server: AxonServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, limits=LIMITS) as client:
        yield client


# ------------------------------------------------------------------------------------ helpers


async def send(client: httpx.AsyncClient, agent_id: str, prompt: str, **body: Any) -> Any:
    """POST a message; the JSON reply (the status must be 200)."""
    response = await client.post(f"/v1/agents/{agent_id}/messages", json={"prompt": prompt, **body})
    assert response.status_code == 200, (prompt, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def history(client: httpx.AsyncClient, conversation_id: str) -> list[Any]:
    response = await client.get(f"/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["conversation_id"] == conversation_id
    return ModelMessagesTypeAdapter.validate_python(body["messages"])


async def assert_history_is_exactly(
    client: httpx.AsyncClient, conversation_id: str, prompts: list[str]
) -> None:
    """The conversation committed exactly these runs, in this order, each whole."""
    runs = split_runs(await history(client, conversation_id))
    assert [r.prompt for r in runs] == prompts, conversation_id
    for run, prompt in zip(runs, prompts, strict=True):
        assert_weather_run(run, prompt)


def assert_weather_reply(reply: Any, agent_id: str, prompt: str, location: str) -> None:
    assert reply["agent_id"] == agent_id
    assert isinstance(reply["output"], str)
    assert quote(prompt) in reply["output"], (prompt, reply["output"])
    assert reply["output"].startswith(f"The weather in {location} is ")
    assert reply["usage"]["tool_calls"] == 2  # both tools ran, in this run


async def stream(client: httpx.AsyncClient, agent_id: str, prompt: str) -> list[tuple[str, Any]]:
    """POST a streamed message; its Server-Sent Events as ``(name, data)``, in order."""
    events: list[tuple[str, Any]] = []
    async with client.stream(
        "POST",
        f"/v1/agents/{agent_id}/messages",
        json={"prompt": prompt},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert name is not None, line
                events.append((name, json.loads(line.removeprefix("data: "))))
                name = None
    return events


# ------------------------------------------------------------------------ the seed's two tests


async def test_concurrent_requests_to_two_agents(client: httpx.AsyncClient) -> None:
    """Seed test 1 over HTTP: two agents x 10 concurrent requests; every reply is its own, with
    its tool calls, and every new conversation holds exactly its own run."""
    agent_ids = ["python_agent_1", "python_agent_2"]
    requests = [
        (agent_id, f"What is the weather in {agent_id} on {n}?")
        for agent_id in agent_ids
        for n in range(10)
    ]
    replies = await asyncio.gather(*(send(client, a, p) for a, p in requests))

    assert len({r["conversation_id"] for r in replies}) == len(requests)
    assert len({r["run_id"] for r in replies}) == len(requests)
    for (agent_id, prompt), reply in zip(requests, replies, strict=True):
        assert_weather_reply(reply, agent_id, prompt, agent_id)
    await asyncio.gather(
        *(
            assert_history_is_exactly(client, r["conversation_id"], [p])
            for (_, p), r in zip(requests, replies, strict=True)
        )
    )


async def test_concurrent_requests_to_the_same_agent(client: httpx.AsyncClient) -> None:
    """Seed test 2 over HTTP: 10 concurrent requests to one agent (two workers)."""
    prompts = [f"What is the weather in Lyon on day {n}?" for n in range(10)]
    replies = await asyncio.gather(*(send(client, "python_agent_1", p) for p in prompts))

    assert len({r["conversation_id"] for r in replies}) == len(prompts)
    assert len({r["run_id"] for r in replies}) == len(prompts)
    for prompt, reply in zip(prompts, replies, strict=True):
        assert_weather_reply(reply, "python_agent_1", prompt, "Lyon")
        await assert_history_is_exactly(client, reply["conversation_id"], [prompt])


# --------------------------------------------------------------------------------- at scale


async def test_300_concurrent_requests_across_agents(client: httpx.AsyncClient) -> None:
    """250 one-turn and 25 two-turn conversations (300 requests) over two agents, all started
    at once: every request succeeds, every reply quotes its own prompt, and every conversation
    holds exactly its own prompts, in order."""
    agent_ids = ["python_agent_1", "python_agent_2"]

    async def conversation(n: int, turns: int) -> tuple[str, list[str], list[Any]]:
        agent_id = agent_ids[n % 2]
        cid = f"http-load-{n}"
        prompts = [f"What is the weather in City{n} on turn {t}?" for t in range(turns)]
        replies = [await send(client, agent_id, p, conversation_id=cid) for p in prompts]
        return agent_id, prompts, replies

    plans = [(n, 1) for n in range(250)] + [(n, 2) for n in range(250, 275)]
    assert sum(turns for _, turns in plans) == 300
    results = await asyncio.gather(*(conversation(n, turns) for n, turns in plans))

    for (n, _), (agent_id, prompts, replies) in zip(plans, results, strict=True):
        for prompt, reply in zip(prompts, replies, strict=True):
            assert reply["conversation_id"] == f"http-load-{n}"
            assert_weather_reply(reply, agent_id, prompt, f"City{n}")
    await asyncio.gather(
        *(
            assert_history_is_exactly(client, f"http-load-{n}", prompts)
            for (n, _), (_, prompts, _) in zip(plans, results, strict=True)
        )
    )
    agents = (await client.get("/v1/agents")).json()["agents"]
    assert all(a["in_flight"] == 0 for a in agents if a["id"] in agent_ids)


# ------------------------------------------------------------------------ one conversation


class RawRequest:
    """One ``POST`` on its own connection, sent in two steps: the head with ``Expect:
    100-continue``, then (once the server has answered ``100 Continue``, i.e. its app has
    started on this request) the body. httpx cannot pause between the two, hence raw HTTP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start(cls, url: httpx.URL, path: str, body: dict[str, Any]) -> RawRequest:
        assert url.host is not None
        assert url.port is not None
        reader, writer = await asyncio.open_connection(url.host, url.port)
        request = cls(reader, writer)
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            "Content-Type: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(payload)
        await writer.drain()
        return request

    async def response(self) -> tuple[int, Any]:
        """The status and the JSON body of the final response."""
        status_line, *header_lines = (
            (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        )
        headers = dict(line.lower().split(": ", 1) for line in header_lines if line)
        body = await self.reader.readexactly(int(headers["content-length"]))
        self.writer.close()
        await self.writer.wait_closed()
        return int(status_line.split()[1]), json.loads(body)


async def test_concurrent_messages_to_one_conversation_commit_once_in_arrival_order(
    server: AxonServer, client: httpx.AsyncClient
) -> None:
    """20 concurrent messages to one conversation (agent with 2 workers, policy ``enqueue``):
    each is committed exactly once, whole, and in the order the server received them.

    Each request is started only once the server has begun handling the previous one (it
    answered ``100 Continue``), so the arrival order is the start order; all 20 are in flight
    together (the replies are read only after the last one is sent)."""
    cid = "http-shared"
    prompts = [f"What is the weather in Town{n} on {n}?" for n in range(20)]
    url = httpx.URL(server.url)
    started = []
    for prompt in prompts:
        body = {"prompt": prompt, "conversation_id": cid, "policy": "enqueue"}
        started.append(await RawRequest.start(url, "/v1/agents/python_agent_1/messages", body))
    answers = await asyncio.gather(*(r.response() for r in started))

    for n, (prompt, (status, reply)) in enumerate(zip(prompts, answers, strict=True)):
        assert status == 200, (n, reply)
        assert reply["conversation_id"] == cid
        assert_weather_reply(reply, "python_agent_1", prompt, f"Town{n}")
    assert len({reply["run_id"] for _, reply in answers}) == 20
    await assert_history_is_exactly(client, cid, prompts)
    page = (await client.get(f"/v1/conversations/{cid}")).json()
    assert page["revision"] == 20


# ------------------------------------------------------------------ streaming and JSON mixed


async def test_streams_interleaved_with_json_requests(client: httpx.AsyncClient) -> None:
    """Streamed (SSE) and JSON requests at once, on the same agents: every stream carries its
    own run's events in order (tool calls and results, then text deltas that add up to the
    final reply), every JSON reply is its own, and slow streams of another agent deliver their
    chunks in order alongside."""
    streamed = [f"What is the weather in Streamtown{n}?" for n in range(15)]
    plain = [f"What is the weather in Jsonville{n}?" for n in range(15)]
    slow = [f"stream:5:0.0{n % 5}" for n in range(6)]

    stream_tasks = [stream(client, "python_agent_1", p) for p in streamed]
    json_tasks = [send(client, "python_agent_1", p) for p in plain]
    slow_tasks = [stream(client, "misbehaving", p) for p in slow]
    # Interleave the three kinds, so they are sent in a mixed order.
    tasks: list[Any] = []
    for n in range(15):
        tasks += [stream_tasks[n], json_tasks[n], *([slow_tasks[n]] if n < 6 else [])]
    results = await asyncio.gather(*tasks)
    by_kind: dict[str, list[Any]] = {"stream": [], "json": [], "slow": []}
    for n in range(15):
        by_kind["stream"].append(results.pop(0))
        by_kind["json"].append(results.pop(0))
        if n < 6:
            by_kind["slow"].append(results.pop(0))

    for n, (prompt, events) in enumerate(zip(streamed, by_kind["stream"], strict=True)):
        names = [name for name, _ in events]
        assert names[:4] == ["tool_call", "tool_result", "tool_call", "tool_result"], names
        assert [data["tool_name"] for _, data in events[:4]] == [
            "get_lat_lng",
            "get_lat_lng",
            "get_weather",
            "get_weather",
        ]
        assert names[-1] == "final", names
        assert set(names[4:-1]) == {"text_delta"}, names
        final = events[-1][1]
        text = "".join(data["text"] for _, data in events[4:-1])
        assert text == final["output"]
        assert_weather_reply(final, "python_agent_1", prompt, f"Streamtown{n}")
        await assert_history_is_exactly(client, final["conversation_id"], [prompt])
    for n, (prompt, reply) in enumerate(zip(plain, by_kind["json"], strict=True)):
        assert_weather_reply(reply, "python_agent_1", prompt, f"Jsonville{n}")
        await assert_history_is_exactly(client, reply["conversation_id"], [prompt])
    for events in by_kind["slow"]:
        assert [name for name, _ in events] == ["text_delta"] * 5 + ["final"]
        assert [data["text"] for _, data in events[:5]] == [f"chunk-{i} " for i in range(5)]
        assert events[-1][1]["output"] == "".join(f"chunk-{i} " for i in range(5))
