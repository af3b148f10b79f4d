"""Graceful shutdown of a real ``axon serve`` on SIGTERM and SIGINT: stop accepting, let in-flight
requests (JSON and streams) finish up to ``runtime.shutdown_grace``, stop the workers, exit 0
(issue 4)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from axon.store.urls import open_store
from axon.testing import AxonServer, user_prompts

from ..conftest import ServeAxon, descendant_pids, pid_alive
from .test_http_api import Api, config, error_of, misbehaving, poll
from .test_http_streaming import Arrived, check_final, sse


async def committed_prompts(tmp_path: Path, conversation_id: str) -> list[str]:
    """The user prompts committed to ``conversation_id`` in the (stopped) server's SQLite store."""
    from pydantic_ai import ModelMessagesTypeAdapter

    store = open_store(f"sqlite:///{tmp_path / 'axon.db'}")
    await store.open()
    try:
        history = await store.load(conversation_id)
    finally:
        await store.close()
    return user_prompts(ModelMessagesTypeAdapter.validate_json(history.messages))


async def refuses_connections(server: AxonServer) -> bool:
    """Whether a new connection to the server is refused."""
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as fresh:
            await fresh.get("/healthz")
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:  # accepted just before the listener closed, then dropped
        return False
    return False


async def stream_into(api: Api, events: list[Arrived], prompt: str, conversation_id: str) -> int:
    async with sse(api, "misbehaving", prompt, conversation_id=conversation_id) as (response, it):
        async for event in it:
            events.append(event)
        return response.status_code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_lets_in_flight_requests_finish(
    serve_axon: ServeAxon, tmp_path: Path, sig: signal.Signals
) -> None:
    server = await serve_axon(config(misbehaving("misbehaving", "timeout = 60")))
    async with Api(server.url) as api:
        await api.reply("misbehaving", "seed", conversation_id="sd-1")
        workers = set(descendant_pids(server.pid))
        assert (await api.agent("misbehaving"))["workers"][0]["pid"] in workers

        # a run whose client left with on_disconnect=finish, outlasting the requests below
        async with Api(server.url) as leaving:
            left = asyncio.create_task(
                leaving.send(
                    "misbehaving", "sleep:4", conversation_id="sd-3", on_disconnect="finish"
                )
            )
            await poll(lambda: api.agent("misbehaving"), lambda a: a["in_flight"] == 1)
            left.cancel()
        slow = asyncio.create_task(api.send("misbehaving", "sleep:3", conversation_id="sd-1"))
        streamed: list[Arrived] = []
        streaming = asyncio.create_task(stream_into(api, streamed, "stream:6:0.4", "sd-2"))
        await poll(lambda: api.agent("misbehaving"), lambda a: a["in_flight"] == 3)

        server.send_signal(sig)
        await poll(lambda: refuses_connections(server), bool, timeout=10)
        assert not slow.done(), "new connections were still accepted when the request ended"

        reply = await slow
        assert reply.status_code == 200, reply.text
        assert reply.json()["output"] == "slept 3"
        assert await streaming == 200
        final = check_final(streamed)
        assert final["output"] == "".join(f"chunk-{i} " for i in range(6))

    assert await server.wait(timeout=30) == 0
    assert not [pid for pid in workers if pid_alive(pid)], "workers outlived axon serve"
    assert "stopped." in server.stdout()
    assert await committed_prompts(tmp_path, "sd-1") == ["seed", "sleep:3"]
    assert await committed_prompts(tmp_path, "sd-2") == ["stream:6:0.4"]
    assert await committed_prompts(tmp_path, "sd-3") == ["sleep:4"]  # finished, then stopped


async def test_requests_longer_than_the_grace_period_are_cut(
    serve_axon: ServeAxon, tmp_path: Path
) -> None:
    server = await serve_axon(config(misbehaving("misbehaving", "timeout = 60"), shutdown_grace=1))
    loop = asyncio.get_running_loop()
    async with Api(server.url) as api:
        await api.reply("misbehaving", "seed", conversation_id="g-1")
        workers = set(descendant_pids(server.pid))
        long = asyncio.create_task(api.send("misbehaving", "sleep:30", conversation_id="g-1"))
        streamed: list[Arrived] = []
        streaming = asyncio.create_task(stream_into(api, streamed, "stream:100:0.3", "g-2"))
        await poll(lambda: api.agent("misbehaving"), lambda a: a["in_flight"] == 2)

        async def stream_began() -> bool:
            return bool(streamed)

        await poll(stream_began, bool)

        signalled = loop.time()
        server.send_signal(signal.SIGTERM)
        assert await server.wait(timeout=30) == 0
        took = loop.time() - signalled
        # cut at the 1 s grace: far sooner than the 30 s the runs would take
        assert took < 15, f"shutdown took {took:.1f}s with shutdown_grace = 1"

        results = await asyncio.gather(long, streaming, return_exceptions=True)
    cut, stream_end = results
    # the JSON request: 503 shutting_down (not uvicorn's bare 500), with Retry-After
    assert isinstance(cut, httpx.Response), repr(cut)
    error = error_of(cut, 503, "shutting_down")
    assert error["retry_after"] == 1
    assert cut.headers["retry-after"] == "1"
    # the stream: the chunks so far, then an `error` event; no `final`
    assert stream_end == 200
    names = [e.name for e in streamed]
    assert names == ["text_delta"] * (len(names) - 1) + ["error"], names
    assert streamed[-1].data["error"]["type"] == "shutting_down"
    assert streamed[-1].data["error"]["status"] == 503
    assert not [pid for pid in workers if pid_alive(pid)], "workers outlived axon serve"
    assert await committed_prompts(tmp_path, "g-1") == ["seed"]
    assert await committed_prompts(tmp_path, "g-2") == []
