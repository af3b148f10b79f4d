"""A small synchronous client of Axon's HTTP API (what the ``axon`` CLI uses).

```python
from axon.client import AxonClient

with AxonClient("http://127.0.0.1:8000", token=None) as client:
    reply = client.send("python_agent_1", "What is the weather in Paris?")
    print(reply["output"], reply["conversation_id"])
    for event in client.stream("python_agent_1", "And in Rome?",
                               conversation_id=reply["conversation_id"]):
        if isinstance(event, TextDelta):
            print(event.text, end="", flush=True)
```

Every failure is an :class:`~axon.errors.AxonError`: an HTTP error envelope (or an SSE ``error``
event) becomes the matching subclass (``AgentNotFound``, ``Overloaded`` with ``retry_after``,
``Unauthorized``, ...) through :meth:`AxonError.from_dict`; an error type this client does not
know becomes :class:`RemoteError`; a server that cannot be reached raises
:class:`ServerUnreachable`, and a connection that breaks mid-answer :class:`ConnectionLost`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse

from axon.errors import AxonError, ConnectionLost, RemoteError, ServerUnreachable
from axon.stream import ErrorEvent, FinalResult, StreamEvent, from_sse

__all__ = ["DEFAULT_URL", "AxonClient", "read_event"]

DEFAULT_URL = "http://127.0.0.1:8000"
STREAM_READ_TIMEOUT = 60.0
"""Seconds without a byte before a stream is given up (the server sends a keepalive every 15 s)."""


def error_from_body(body: object, status: int | None) -> AxonError:
    """The typed error of an error envelope ``{"error": {"type", "message", ...}}`` (or of a
    body that is not one: a proxy's page, say)."""
    data = body.get("error") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        text = body if isinstance(body, str) else json.dumps(body)
        return RemoteError(
            f"HTTP {status}: {text[:200]}".strip(), error_type="http_error", status=status
        )
    fields = {str(k): v for k, v in cast(dict[Any, Any], data).items()}
    sent_status = fields.pop("status", None)  # SSE error events carry the status they stand for
    if status is None and isinstance(sent_status, int):
        status = sent_status
    error = AxonError.from_dict(fields)
    error_type = str(fields.get("type", ""))
    if type(error) is AxonError and error_type != AxonError.type:
        return RemoteError(
            str(fields.get("message", "")), error_type=error_type or "http_error", status=status
        )
    return error


def error_type_of(error: AxonError) -> str:
    """The error's ``type`` as the server named it (also for :class:`RemoteError`)."""
    return error.error_type if isinstance(error, RemoteError) else error.type


class AxonClient:
    """A synchronous client of one Axon server.

    ``token``: sent as ``Authorization: Bearer <token>``. ``timeout``: seconds to connect, and
    to wait for answers that are not runs (agents, history, ...). A run (``send``) waits as long
    as its ``timeout`` plus a margin, or, with none, as long as the server does (it enforces every
    run's deadline); a stream gives up after 60 s without a byte (the server sends keepalives).
    """

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        headers = {"User-Agent": "axon-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, follow_redirects=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- runs ------------------------------------------------------------------------------

    def send(
        self,
        agent: str,
        prompt: str,
        conversation_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run ``prompt`` on ``agent`` and return the committed reply: ``{"output",
        "conversation_id", "run_id", "agent_id", "usage"}``."""
        body = message_body(prompt, conversation_id, timeout, stream=False)
        return self._json(
            "POST",
            f"/v1/agents/{path_segment(agent)}/messages",
            json=body,
            timeout=self._run_timeout(timeout),
        )

    def stream(
        self,
        agent: str,
        prompt: str,
        conversation_id: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[StreamEvent]:
        """Run ``prompt`` on ``agent`` as Server-Sent Events, yielding the same typed events as
        ``Axon.stream_message`` as they arrive: ``TextDelta``, ``ToolCall``, ``ToolResult``, and
        last ``FinalResult`` (the committed reply). An ``error`` event raises its typed error;
        an event this client does not know is skipped. Closing the iterator early disconnects,
        which cancels the run."""
        body = message_body(prompt, conversation_id, timeout, stream=True)
        path = f"/v1/agents/{path_segment(agent)}/messages"
        stream_timeout = httpx.Timeout(self._timeout, read=STREAM_READ_TIMEOUT)
        try:
            with connect_sse(self._http, "POST", path, json=body, timeout=stream_timeout) as source:
                response = source.response
                if response.is_error:
                    response.read()
                    raise error_from_body(body_of(response), response.status_code)
                try:
                    for sse in source.iter_sse():
                        event = read_event(sse.event, sse.data)
                        if event is None:
                            continue
                        yield event
                        if isinstance(event, FinalResult):
                            return
                except SSEError as exc:
                    raise not_an_event_stream(exc, response.status_code) from None
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from None
        raise ConnectionLost(self.url, "the event stream ended without a final event")

    # -- agents ----------------------------------------------------------------------------

    def agents(self) -> list[dict[str, Any]]:
        """Every agent's status (``GET /v1/agents``)."""
        return cast(list[dict[str, Any]], self._json("GET", "/v1/agents")["agents"])

    def agent(self, agent_id: str) -> dict[str, Any]:
        """One agent's status: ``id``, ``state``, ``restarts``, ``in_flight``, ``workers``,
        ``recent_exits``."""
        return self._json("GET", f"/v1/agents/{path_segment(agent_id)}")

    def restart(self, agent: str) -> dict[str, Any]:
        """Restart the agent's workers; returns its status once it runs again (or is FAILED)."""
        return self._json(
            "POST", f"/v1/agents/{path_segment(agent)}/restart", timeout=self._run_timeout(None)
        )

    # -- monitoring ------------------------------------------------------------------------

    def monitor(self, since: int | None = None) -> dict[str, Any]:
        """The live picture behind ``/dashboard`` and ``axon top`` (``GET /v1/monitor``):
        ``agents`` (each worker with ``cpu_percent`` and ``rss_bytes``), per-second ``series``
        over the last 10 minutes, ``now``, ``totals``, and the notable ``events`` with a
        ``seq`` greater than ``since`` (pass the previous answer's ``last_seq``)."""
        params = {} if since is None else {"since": since}
        return self._json("GET", "/v1/monitor", params=params)

    # -- conversations ---------------------------------------------------------------------

    def history(
        self, conversation_id: str, offset: int = 0, limit: int | None = None
    ) -> dict[str, Any]:
        """``{"conversation_id", "revision", "messages"}``, the messages as pydantic-ai JSON
        (``pydantic_ai.ModelMessagesTypeAdapter.validate_python(body["messages"])``)."""
        params: dict[str, int] = {}
        if offset:
            params["offset"] = offset
        if limit is not None:
            params["limit"] = limit
        return self._json(
            "GET", f"/v1/conversations/{path_segment(conversation_id)}", params=params
        )

    def delete(self, conversation_id: str) -> None:
        """Forget a conversation (``ConversationNotFound`` if there is none)."""
        self._request("DELETE", f"/v1/conversations/{path_segment(conversation_id)}")

    # -- plumbing --------------------------------------------------------------------------

    def _run_timeout(self, run_timeout: float | None) -> httpx.Timeout:
        read = None if run_timeout is None else run_timeout + 30.0
        return httpx.Timeout(self._timeout, read=read)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        body = body_of(response)
        if not isinstance(body, dict):
            raise RemoteError(
                f"expected a JSON object from {method} {path}, got: {str(body)[:200]}",
                error_type="http_error",
                status=response.status_code,
            )
        return cast(dict[str, Any], body)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from None
        if response.is_error:
            raise error_from_body(body_of(response), response.status_code)
        return response


def transport_error(url: str, exc: httpx.TransportError) -> AxonError:
    """The typed error of a failed exchange with the server at ``url``: ``ServerUnreachable``
    when nothing answered, ``ConnectionLost`` when the connection broke or went silent."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
        return ServerUnreachable(url, reason)
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer in time ({type(exc).__name__})"
    return ConnectionLost(url, reason)


def not_an_event_stream(exc: SSEError, status: int | None) -> RemoteError:
    """The error of a streamed answer that is not Server-Sent Events (a proxy's page, say)."""
    return RemoteError(
        f"the server did not answer with an event stream: {exc}",
        error_type="http_error",
        status=status,
    )


def message_body(
    prompt: str, conversation_id: str | None, timeout: float | None, *, stream: bool
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/agents/{agent}/messages``."""
    body: dict[str, Any] = {"prompt": prompt, "stream": stream}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    if timeout is not None:
        body["timeout"] = timeout
    return body


def path_segment(value: str) -> str:
    """One URL path segment (a ``/`` in an id must not reach another route)."""
    return quote(value, safe="")


def read_event(name: str, data: str) -> StreamEvent | None:
    """The typed event of one Server-Sent Event of a run (None for a keepalive, or an event
    this client does not know); an ``error`` event raises its typed error, and data that does
    not match its event raises :class:`RemoteError`. The one SSE reader of the client, the CLI
    and ``axon bench``."""
    if not name or (name == "message" and not data):
        return None
    try:
        event = from_sse(name, data)
    except (ValueError, TypeError):
        raise RemoteError(
            f"malformed {name} event data: {data[:200]}", error_type="http_error", status=None
        ) from None
    if isinstance(event, ErrorEvent):
        raise error_from_body({"error": event.error}, None)
    return event


def body_of(response: httpx.Response) -> object:
    """The response's JSON, or its text if it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return response.text
