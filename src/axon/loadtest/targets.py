"""Where a load goes: a running ``axon serve`` over HTTP, or an :class:`~axon.runtime.Axon` in
this process.

A target does one request and reports how it went; the load generator
(:mod:`axon.loadtest.workload`) times it. Both targets speak the same terms, so a figure means
the same thing whichever was measured: a successful request returns an :class:`Exchange` (the
output, and when each text chunk of a stream arrived); a failed one raises an
:class:`~axon.errors.AxonError` whose ``type`` is the outcome (over HTTP, the server's error
envelope or SSE ``error`` event, decoded by :mod:`axon.client`).

The HTTP target is asynchronous (httpx + httpx-sse) so one process can hold thousands of
requests in flight; the in-process target calls ``send_message`` / ``stream_message``, which
measures the runtime without the HTTP layer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
from httpx_sse import SSEError, aconnect_sse

from axon.client import (
    body_of,
    error_from_body,
    message_body,
    not_an_event_stream,
    path_segment,
    read_event,
    transport_error,
)
from axon.errors import AgentNotFound, ConnectionLost, RemoteError
from axon.stream import FinalResult, StreamEvent, TextDelta

__all__ = ["Exchange", "HttpTarget", "InProcessTarget", "Target"]


@dataclass
class Exchange:
    """A successful request: the committed reply's ``output`` and, streamed, the monotonic time
    each text chunk arrived."""

    output: Any
    token_times: list[float] = field(default_factory=list)


class Target(Protocol):
    """What the load generator needs of a target. Implement it to load anything else (the unit
    tests use one that only sleeps)."""

    @property
    def name(self) -> str:
        """Where the load goes, for reports (a URL, ``config:<path>``)."""
        ...

    def agent_timeout(self, agent: str) -> float | None:
        """The agent's own run timeout, if the target knows it (used for deadlines when the plan
        gives none)."""
        ...

    async def send(
        self, agent: str, prompt: str, conversation_id: str, timeout: float | None, stream: bool
    ) -> Exchange:
        """Run one request; raise its typed error if it fails."""
        ...


class HttpTarget:
    """A running ``axon serve`` at ``url`` (``token``: its bearer token, if it needs one).

    ``max_connections`` bounds the open connections (keep it at least the concurrency, or the
    requests queue in the client and the latency measured grows with that wait). Use it as an
    async context manager; :meth:`check` first to fail fast on a wrong URL, token or agent.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        max_connections: int = 1000,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": "axon-bench"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # No read timeout here: the load generator bounds each request by its deadline.
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(None, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )

    @property
    def name(self) -> str:
        return self.url

    def agent_timeout(self, agent: str) -> float | None:
        return None  # the API does not publish it

    async def __aenter__(self) -> HttpTarget:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self, agents: list[str]) -> None:
        """Raise ``ServerUnreachable``, ``Unauthorized`` (or another typed error) if the server
        cannot serve this load, and ``AgentNotFound`` for the first agent it does not have."""
        try:
            response = await self._http.get("/v1/agents", timeout=10.0)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from None
        body = body_of(response)
        if response.is_error:
            raise error_from_body(body, response.status_code)
        found = body.get("agents") if isinstance(body, dict) else None
        if not isinstance(found, list):
            raise RemoteError(
                f"{self.url}/v1/agents did not answer with an agent list: is this an axon server?",
                error_type="http_error",
                status=response.status_code,
            )
        known = {str(a.get("id")) for a in cast(list[dict[str, Any]], found)}
        for agent in agents:
            if agent not in known:
                raise AgentNotFound(agent)

    async def send(
        self, agent: str, prompt: str, conversation_id: str, timeout: float | None, stream: bool
    ) -> Exchange:
        body = message_body(prompt, conversation_id, timeout, stream=stream)
        path = f"/v1/agents/{path_segment(agent)}/messages"
        try:
            if stream:
                return await self._stream(path, body)
            response = await self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from None
        data = body_of(response)
        if response.is_error:
            raise error_from_body(data, response.status_code)
        output = data.get("output") if isinstance(data, dict) else None
        return Exchange(output)

    async def _stream(self, path: str, body: dict[str, Any]) -> Exchange:
        exchange = Exchange(None)
        async with aconnect_sse(self._http, "POST", path, json=body) as source:
            response = source.response
            if response.is_error:
                await response.aread()
                raise error_from_body(body_of(response), response.status_code)
            try:
                async for sse in source.aiter_sse():
                    event = read_event(sse.event, sse.data)
                    if isinstance(event, TextDelta):
                        exchange.token_times.append(time.monotonic())
                    elif isinstance(event, FinalResult):
                        exchange.output = event.reply.output
                        return exchange
            except SSEError as exc:
                raise not_an_event_stream(exc, response.status_code) from None
        raise ConnectionLost(self.url, "the event stream ended without a final event")


class InProcessTarget:
    """An :class:`~axon.runtime.Axon` runtime in this process (already started, or started and
    stopped by :meth:`from_config`)."""

    def __init__(self, axon: Any, name: str = "in-process") -> None:
        from axon.runtime import Axon

        self.axon: Axon = axon
        self._name = name

    @classmethod
    @contextlib.asynccontextmanager
    async def from_config(cls, config: str | Path) -> AsyncGenerator[InProcessTarget]:
        """Start a runtime from ``config`` for the block and stop it after (no worker is left).
        Raises ``ConfigError`` for a bad config, or what ``Axon.start`` raises."""
        from axon.runtime import Axon

        async with Axon.from_config(config) as axon:
            yield cls(axon, name=f"config:{config}")

    @property
    def name(self) -> str:
        return self._name

    def check(self, agents: list[str]) -> None:
        """``AgentNotFound`` for the first agent the runtime does not have."""
        known = {a.id for a in self.axon.config.agents}
        for agent in agents:
            if agent not in known:
                raise AgentNotFound(agent)

    def agent_timeout(self, agent: str) -> float | None:
        spec = next((a for a in self.axon.config.agents if a.id == agent), None)
        return None if spec is None else spec.timeout

    async def send(
        self, agent: str, prompt: str, conversation_id: str, timeout: float | None, stream: bool
    ) -> Exchange:
        if not stream:
            reply = await self.axon.send_message(
                agent, prompt, conversation_id=conversation_id, timeout=timeout
            )
            return Exchange(reply.output)
        exchange = Exchange(None)
        # The runtime's stream is an async generator: closing it early cancels the run.
        events = cast(
            AsyncGenerator[StreamEvent],
            self.axon.stream_message(
                agent, prompt, conversation_id=conversation_id, timeout=timeout
            ),
        )
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, TextDelta):
                    exchange.token_times.append(time.monotonic())
                elif isinstance(event, FinalResult):
                    exchange.output = event.reply.output
        return exchange
