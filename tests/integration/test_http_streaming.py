"""Server-Sent Events from a real ``axon serve``: event order, time to first event, errors before
and during a stream, and what a client's disconnect does to its run (issue 4).

Arrival times are only ever compared with each other (never with an absolute wall-clock budget):
a stream that was buffered until the run ended would deliver its first and last events together.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from axon.testing import AxonServer

from ..conftest import ServeAxon
from .test_http_api import Api, config, error_of, last_text, misbehaving, poll, retry_after

EVENT_NAMES = {"text_delta", "tool_call", "tool_result", "final", "error"}
MESSAGES = "/v1/agents/{}/messages"


@dataclass
class Arrived:
    name: str
    data: Any
    at: float  # loop time of arrival


@asynccontextmanager
async def sse(
    api: Api, agent_id: str, prompt: str, **fields: Any
) -> AsyncIterator[tuple[httpx.Response, AsyncIterator[Arrived]]]:
    """POST a message with ``Accept: text/event-stream``; the response and its events as they
    arrive. Leaving the block closes the connection."""
    loop = asyncio.get_running_loop()
    async with aconnect_sse(
        api.client, "POST", MESSAGES.format(agent_id), json={"prompt": prompt, **fields}
    ) as source:

        async def events() -> AsyncIterator[Arrived]:
            event: ServerSentEvent
            async for event in source.aiter_sse():
                assert event.event in EVENT_NAMES, event
                assert "Traceback" not in event.data
                yield Arrived(event.event, json.loads(event.data), loop.time())

        yield source.response, events()


async def stream_all(api: Api, agent_id: str, prompt: str, **fields: Any) -> list[Arrived]:
    async with sse(api, agent_id, prompt, **fields) as (response, events):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [event async for event in events]


def check_final(events: list[Arrived]) -> dict[str, Any]:
    """Exactly one ``final``, last; the text deltas add up to its output. Its reply body."""
    names = [e.name for e in events]
    assert names.count("final") == 1, names
    assert names[-1] == "final", names
    final = events[-1].data
    assert set(final) == {"output", "conversation_id", "run_id", "agent_id", "usage"}
    assert "".join(e.data["text"] for e in events if e.name == "text_delta") == final["output"]
    return final


def parse_raw(text: str) -> list[tuple[str, Any]]:
    """An SSE body parsed by hand: each event is ``event: NAME`` and one ``data: JSON`` line;
    comment lines (``: keepalive``) are skipped."""
    parsed: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 2, block
        assert lines[0].startswith("event: "), block
        assert lines[1].startswith("data: "), block
        parsed.append(
            (lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: ")))
        )
    return parsed


STREAMING = config(
    '[[agents]]\nid = "python_agent_2"\nagent = "axon.examples.weather:weather_agent"\n',
    misbehaving("misbehaving", "timeout = 10"),
    misbehaving("solo", "max_concurrency = 1\nqueue_size = 0"),
)


async def test_event_order_first_event_and_errors(serve_axon: ServeAxon) -> None:
    server = await serve_axon(STREAMING)
    async with Api(server.url) as api:
        # --- a tool-using run: tool calls and results, then the text, then final -------------
        ask = "What is the weather in Lisbon?"
        events = await stream_all(api, "python_agent_2", ask, conversation_id="st-1", stream=True)
        names = [e.name for e in events]
        first_text = names.index("text_delta")
        assert names[:first_text] == ["tool_call", "tool_result", "tool_call", "tool_result"]
        assert set(names[first_text:-1]) == {"text_delta"}
        assert len(names[first_text:-1]) > 1, "the text was not streamed in pieces"
        tools = [e.data for e in events[:first_text]]
        assert [t["tool_name"] for t in tools] == ["get_lat_lng"] * 2 + ["get_weather"] * 2
        assert tools[0]["args"] == {"location_description": "Lisbon"}
        assert tools[0]["tool_call_id"] == tools[1]["tool_call_id"] != tools[2]["tool_call_id"]
        assert tools[2]["tool_call_id"] == tools[3]["tool_call_id"]
        assert set(tools[1]["content"]) == {"lat", "lng"}
        assert tools[2]["args"] == tools[1]["content"]
        final = check_final(events)
        assert final["conversation_id"] == "st-1"
        assert final["agent_id"] == "python_agent_2"
        assert final["output"].endswith(f'(you asked: "{ask}")')
        assert final["usage"]["tool_calls"] == 2
        revision, messages = await api.history("st-1")  # committed before `final` was sent
        assert revision == 1
        assert last_text(messages) == final["output"]

        # --- `stream: true` alone (no Accept header), parsed by hand off the wire -------------
        async with api.client.stream(
            "POST", MESSAGES.format("misbehaving"), json={"prompt": "tool", "stream": True}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            raw = (await response.aread()).decode()
        wire = parse_raw(raw)
        assert [name for name, _ in wire] == ["tool_call", "tool_result", "text_delta", "final"]
        assert wire[0][1]["tool_name"] == "echo_tool"
        assert wire[1][1]["content"] == "echo_tool: tool"
        assert wire[3][1]["output"] == "echo_tool: tool"

        # --- `Accept: text/event-stream` streams without `stream`; `stream: false` wins -------
        accepted = await stream_all(api, "misbehaving", "hello", conversation_id="st-2")
        assert check_final(accepted)["output"] == "echo: hello"
        plain = await api.post(
            MESSAGES.format("misbehaving"),
            json={"prompt": "plain", "stream": False, "conversation_id": "st-2"},
            headers={"accept": "text/event-stream"},
        )
        assert plain.status_code == 200
        assert plain.headers["content-type"] == "application/json"
        assert plain.json()["output"] == "echo: plain"

        # --- the first event does not wait for the whole run ----------------------------------
        paced = await stream_all(api, "misbehaving", "stream:5:0.4", conversation_id="st-3")
        deltas = [e for e in paced if e.name == "text_delta"]
        assert [e.data["text"] for e in deltas] == [f"chunk-{i} " for i in range(5)]
        check_final(paced)
        # the agent sleeps 0.4 s before each chunk: 1.6 s between the first and the last
        assert paced[-1].at - deltas[0].at > 1.0, "the stream was held back until the run ended"
        assert all(b.at >= a.at for a, b in itertools.pairwise(paced))

        # --- errors before the first event: plain JSON errors with their status --------------
        async with sse(api, "nope", "hello", stream=True) as (response, _):
            await response.aread()
            assert error_of(response, 404, "agent_not_found")["agent_id"] == "nope"
        async with sse(api, "misbehaving", "   ", stream=True) as (response, _):
            await response.aread()
            assert error_of(response, 422, "invalid_request")["field"] == "prompt"
        hog = asyncio.create_task(api.send("solo", "sleep:1.5"))
        await poll(lambda: api.agent("solo"), lambda a: a["in_flight"] == 1)
        async with sse(api, "solo", "hello", stream=True) as (response, _):
            await response.aread()
            error_of(response, 429, "overloaded")
            assert retry_after(response) >= 1
        assert (await hog).status_code == 200

        # --- a crash mid-stream: the deltas so far, then an `error` event; nothing committed --
        await api.reply("misbehaving", "seed", conversation_id="st-crash")
        crashed = await stream_all(api, "misbehaving", "stream-crash:3", conversation_id="st-crash")
        assert [e.name for e in crashed] == ["text_delta"] * 3 + ["error"]
        assert [e.data["text"] for e in crashed[:3]] == ["chunk-0 ", "chunk-1 ", "chunk-2 "]
        error = crashed[-1].data["error"]
        assert error["type"] == "agent_crashed"
        assert error["status"] == 502
        assert error["exit_code"] == 14
        assert error["agent_id"] == "misbehaving"
        assert await api.prompts("st-crash") == ["seed"]
        await api.assert_documented()


async def wait_logs(
    server: AxonServer, event: str, count: int = 1, timeout: float = 15.0, **fields: Any
) -> list[dict[str, Any]]:
    """The JSON log records of ``event`` with ``fields``, once there are ``count`` of them."""

    async def matching() -> list[dict[str, Any]]:
        records = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
        return [
            r
            for r in records
            if r.get("event") == event and all(r.get(k) == v for k, v in fields.items())
        ]

    return await poll(matching, lambda found: len(found) >= count, timeout=timeout)


async def test_disconnect_cancels_the_run_or_lets_it_finish(serve_axon: ServeAxon) -> None:
    server = await serve_axon(
        config(misbehaving("misbehaving", "timeout = 60")), args=("--log-format", "json")
    )
    async with Api(server.url) as api:
        for cid in ("d-1", "d-2", "d-3", "d-4"):
            await api.reply("misbehaving", "seed", conversation_id=cid)
        pid = (await api.agent("misbehaving"))["workers"][0]["pid"]

        async def cancelled_cleanly(cid: str) -> None:
            """The run ended in the worker long before it would have finished, without the
            worker being killed for ignoring the cancel, and nothing was committed."""
            await poll(lambda: api.agent("misbehaving"), lambda a: a["in_flight"] == 0, timeout=5)
            agent = await api.agent("misbehaving")
            assert agent["workers"][0]["pid"] == pid
            assert agent["restarts"] == 0
            await wait_logs(server, "http.disconnected", conversation=cid, on_disconnect="cancel")
            seed, cancelled = await wait_logs(server, "run.finished", 2, conversation=cid)
            assert seed["outcome"] == "ok"
            assert cancelled["outcome"] == "cancelled"
            assert (await api.history(cid))[0] == 1
            assert await api.prompts(cid) == ["seed"]

        # --- a stream left after two deltas: its 10 s run is cancelled ------------------------
        async with sse(api, "misbehaving", "stream:40:0.25", conversation_id="d-1") as (_, events):
            seen = []
            async for event in events:
                seen.append(event.name)
                if len(seen) == 2:
                    break
        assert seen == ["text_delta", "text_delta"]
        await cancelled_cleanly("d-1")

        # --- a JSON request whose client hangs up: its 30 s run is cancelled ------------------
        async with Api(server.url) as leaving:
            request = asyncio.create_task(
                leaving.send("misbehaving", "sleep:30", conversation_id="d-2")
            )
            await poll(lambda: api.agent("misbehaving"), lambda a: a["in_flight"] == 1)
            request.cancel()
        await cancelled_cleanly("d-2")

        # --- on_disconnect=finish: the run completes after the client left, and commits -------
        async with sse(
            api, "misbehaving", "stream:8:0.2", conversation_id="d-3", on_disconnect="finish"
        ) as (_, events):
            first = await anext(events)
            assert first.name == "text_delta"
        await wait_logs(server, "http.disconnected", conversation="d-3", on_disconnect="finish")
        _, messages = await poll(lambda: api.history("d-3"), lambda h: h[0] == 2, timeout=20)
        assert last_text(messages) == "".join(f"chunk-{i} " for i in range(8))
        assert await api.prompts("d-3") == ["seed", "stream:8:0.2"]

        async with Api(server.url) as leaving:
            request = asyncio.create_task(
                leaving.send(
                    "misbehaving", "sleep:1", conversation_id="d-4", on_disconnect="finish"
                )
            )
            await poll(lambda: api.agent("misbehaving"), lambda a: a["in_flight"] == 1)
            request.cancel()
        await wait_logs(server, "http.disconnected", conversation="d-4", on_disconnect="finish")
        _, messages = await poll(lambda: api.history("d-4"), lambda h: h[0] == 2, timeout=20)
        assert last_text(messages) == "slept 1"
        for cid in ("d-3", "d-4"):
            finished = await wait_logs(server, "run.finished", 2, conversation=cid)
            assert [r["outcome"] for r in finished] == ["ok", "ok"]

        # the worker served all of it: same process, still answering
        assert (await api.agent("misbehaving"))["workers"][0]["pid"] == pid
        assert (await api.reply("misbehaving", "still here"))["output"] == "echo: still here"


SLOW_CONSUMER_CHUNKS = 20_000
"""Text deltas of a run streamed to a client that reads none of them: far more than the
buffers between the server and that client hold (~200 KB, some 3,500 events) plus the relay's
bound (1,000 events)."""


async def stalled_stream(
    url: str, conversation_id: str, on_disconnect: str = "cancel", agent_id: str = "misbehaving"
) -> socket.socket:
    """A client that asks a misbehaving agent for a long stream, then never reads its
    socket."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # A real network's segment size: over loopback (64 KiB segments) the server's kernel would
    # give the connection a send buffer of megabytes before the stream stalls.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1200)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    body = json.dumps(
        {
            "prompt": f"stream:{SLOW_CONSUMER_CHUNKS}:0",
            "conversation_id": conversation_id,
            "stream": True,
            "on_disconnect": on_disconnect,
        }
    ).encode()
    head = (
        f"POST {MESSAGES.format(agent_id)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    await loop.sock_sendall(sock, head.encode() + body)
    return sock


async def closed_by_server(sock: socket.socket) -> None:
    """Reads what is left on ``sock`` until the server's close (EOF, or a reset)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30):
        with contextlib.suppress(ConnectionResetError):
            while await loop.sock_recv(sock, 65536):
                pass


async def test_a_stream_client_that_does_not_read_is_cut(serve_axon: ServeAxon) -> None:
    server = await serve_axon(
        config(misbehaving("misbehaving", "timeout = 120")), args=("--log-format", "json")
    )
    async with Api(server.url) as api:
        for cid, on_disconnect in (("slow-cancel", "cancel"), ("slow-finish", "finish")):
            sock = await stalled_stream(server.url, cid, on_disconnect)
            try:
                [cut] = await wait_logs(server, "http.slow_consumer", conversation=cid, timeout=60)
                # the run's events waiting for the client never exceeded the bound
                assert cut["pending"] == 1000
                assert cut["agent"] == "misbehaving"
                assert cut["on_disconnect"] == on_disconnect
                await closed_by_server(sock)
            finally:
                sock.close()

        # on_disconnect=cancel: the run was cancelled like a client that left; nothing committed
        [run] = await wait_logs(server, "run.finished", conversation="slow-cancel", timeout=30)
        assert run["outcome"] == "cancelled"
        assert (await api.history("slow-cancel"))[0] == 0
        # on_disconnect=finish: the run went on without its client, and committed all of it
        _, messages = await poll(
            lambda: api.history("slow-finish"), lambda h: h[0] == 1, timeout=60
        )
        assert last_text(messages) == "".join(f"chunk-{i} " for i in range(SLOW_CONSUMER_CHUNKS))
        await wait_logs(server, "run.finished", conversation="slow-finish", outcome="ok")

        # the server serves on: a later stream, read by its client, is whole
        events = await stream_all(api, "misbehaving", "stream:3:0", conversation_id="after")
        assert [e.name for e in events] == ["text_delta"] * 3 + ["final"]
        assert (await api.reply("misbehaving", "later"))["output"] == "echo: later"
