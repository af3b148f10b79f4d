"""The HTTP API: routes over a started :class:`~axon.runtime.Axon`.

``create_app(axon)`` returns an ASGI app (FastAPI) whose OpenAPI document (``/openapi.json``)
lists every route's request, response and error bodies. It does not start or stop the runtime:
``axon serve`` (:mod:`axon.http.server`) does, around the HTTP server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from axon._tasks import TaskSet
from axon._version import __version__
from axon.errors import ConversationNotFound
from axon.http.dashboard import dashboard_routes
from axon.http.errors import install_error_handlers, plain_error
from axon.http.guard import EdgeGuard
from axon.http.origin import OriginGuard, OriginPolicy
from axon.http.relay import ClientGone, RunRelay, connection_cutter, watch_disconnect
from axon.http.schemas import (
    CONVERSATION_ID_PATTERN,
    AgentBody,
    AgentsBody,
    ConversationBody,
    ConversationInfoBody,
    ConversationsBody,
    ErrorEnvelope,
    HealthBody,
    MessageRequest,
    ReadinessBody,
    ReplyBody,
)
from axon.http.sse import EventStreamResponse
from axon.runtime import Axon
from axon.stream import (
    SSE_EVENT_NAMES,
    FinalResult,
    Reply,
    StreamEvent,
    reply_json,
    sse_json_schemas,
)

__all__ = ["create_app"]

CLIENT_CLOSED_REQUEST = 499  # nginx's convention; nobody is left to read it

_ERROR_MEANINGS = {
    400: "The body is not JSON.",
    401: "An API token is configured and the request did not carry it (Authorization: Bearer).",
    403: "A web page of another origin sent it (`forbidden_origin`): its `Origin` is neither "
    "this server's nor listed in `runtime.cors_origins`.",
    404: "No such agent, conversation or route.",
    409: "The conversation is busy (policy `reject`), its run was interrupted, or another "
    "orchestrator committed to it first.",
    413: "The request body is larger than `runtime.max_body_bytes`, or the conversation's "
    "history is larger than the agent's `max_history_bytes` (`history_too_large`).",
    415: "The body was not sent as `Content-Type: application/json`.",
    421: "The `Host` header names no address this server answers to (`forbidden_host`): the "
    "loopback names, the listen host and `runtime.allowed_hosts`.",
    422: "A field is missing or invalid (empty or oversized prompt, bad conversation id, timeout "
    "out of bounds, unknown key).",
    429: "The agent's queue is full (back-pressure); retry after `Retry-After` seconds.",
    502: "The worker crashed during the run (`agent_crashed`), the agent raised "
    "(`agent_run_failed`), its result was over the agent's `max_result_bytes` "
    "(`result_too_large`), or the worker sent something that breaks the protocol "
    "(`protocol_error`).",
    503: "The agent is restarting or failed (`agent_unavailable`), the store is unreachable "
    "(`store_unavailable`), the server already serves `runtime.max_connections` connections "
    "(`too_many_connections`), or it is shutting down and the request did not finish within "
    "the grace period (`shutting_down`); retry after `Retry-After` seconds.",
    504: "The run did not finish within its timeout.",
}


def _sse_event(name: str, data_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data_schema,
            },
        },
    }


_SSE_EVENT_SCHEMA: dict[str, Any] = {
    "oneOf": [_sse_event(name, schema) for name, schema in sse_json_schemas().items()]
}
"""One Server-Sent Event of a streamed reply: its name and its JSON data (derived from the
event types of :mod:`axon.stream`)."""


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorEnvelope, "description": _ERROR_MEANINGS[status]}
        for status in sorted({400, 401, 413, 421, 503, *statuses})
    }


def create_app(
    axon: Axon,
    *,
    token: str | None = None,
    max_body_bytes: int = 1_048_576,
    origins: OriginPolicy | None = None,
) -> FastAPI:
    """The HTTP API over ``axon`` (already started). ``token``: require ``Authorization: Bearer
    <token>`` on every route but ``/healthz``. ``origins``: the ``Host`` names and web origins
    answered (default: loopback names only, no CORS; :mod:`axon.http.origin`)."""
    app = FastAPI(
        title="Axon",
        version=__version__,
        summary="Supervised worker processes for pydantic-ai agents.",
        description='Every error is `{"error": {"type", "message", ...facts}}` with the '
        "status that fits. Streaming replies are Server-Sent Events with the event names "
        + ", ".join(f"`{n}`" for n in SSE_EVENT_NAMES)
        + ".",
    )
    app.state.axon = axon
    app.state.relays = TaskSet("http", axon.events)
    app.openapi = lambda: _document(app, axon)  # type: ignore[method-assign]
    install_error_handlers(app)
    app.include_router(_api_routes())
    app.include_router(_probe_routes())
    app.include_router(dashboard_routes())
    app.add_middleware(EdgeGuard, token=token, max_body_bytes=max_body_bytes)
    app.add_middleware(OriginGuard, policy=origins or OriginPolicy())  # outermost: runs first
    return app


def _document(app: FastAPI, axon: Axon) -> dict[str, Any]:
    """FastAPI's document, with the request limits of the configured agents (the largest
    across agents: each agent enforces its own)."""
    if app.openapi_schema is None:
        document = FastAPI.openapi(app)
        agents = axon.config.agents
        fields = document["components"]["schemas"]["MessageRequest"]["properties"]
        prompt = fields["prompt"]
        prompt["pattern"] = r"\S"  # not blank
        if agents:
            prompt["maxLength"] = max(a.max_prompt_chars for a in agents)
            for option in fields["timeout"]["anyOf"]:
                if option.get("type") == "number":
                    option["maximum"] = max(a.max_timeout for a in agents)
    return app.openapi_schema  # pyright: ignore[reportReturnType]


def _runtime(request: Request) -> Axon:
    return request.app.state.axon


def _relays(request: Request) -> TaskSet:
    return request.app.state.relays


AgentId = Annotated[str, Path(description="An agent id from the config.")]
ConversationId = Annotated[
    str, Path(pattern=CONVERSATION_ID_PATTERN, description="A conversation id.")
]


def _api_routes() -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post(
        "/agents/{agent_id}/messages",
        response_model=ReplyBody,
        summary="Send a message to an agent",
        responses={
            200: {
                "description": "The committed reply (JSON), or, when `stream` is true or the "
                "request accepts `text/event-stream`, the run as Server-Sent Events.",
                "content": {
                    "text/event-stream": {
                        "schema": _SSE_EVENT_SCHEMA,
                        "example": 'event: text_delta\ndata: {"text": "Sunny"}\n\n',
                    }
                },
            },
            **_errors(403, 404, 409, 415, 422, 429, 502, 503, 504),
        },
    )
    async def post_message(agent_id: AgentId, body: MessageRequest, request: Request) -> Response:
        axon = _runtime(request)
        accepts_sse = "text/event-stream" in request.headers.get("accept", "")
        stream = body.stream or ("stream" not in body.model_fields_set and accepts_sse)
        options: dict[str, Any] = {
            "conversation_id": body.conversation_id,
            "timeout": body.timeout,
            "policy": body.policy,
        }
        if stream:
            events = axon.stream_message(agent_id, body.prompt, **options)
        else:
            events = _reply_only(lambda: axon.send_message(agent_id, body.prompt, **options))

        def start_relay() -> RunRelay:
            return RunRelay(
                events,
                tasks=_relays(request),
                log=axon.events,
                on_disconnect=body.on_disconnect,
                agent_id=agent_id,
                conversation_id=body.conversation_id,
                cut_connection=connection_cutter(request.scope),
            )

        if axon.config.runtime.tracing:
            from axon.observability.tracing import incoming_context

            # The run executes in the relay's task, which copies the current context when it
            # is created: the caller's traceparent must be current by then.
            with incoming_context(request.headers):
                relay = start_relay()
        else:
            relay = start_relay()
        handed_over = False
        try:
            async with watch_disconnect(request.receive, relay):
                first = await relay.next()  # errors before the first event get their status
            if stream:
                handed_over = True
                return EventStreamResponse(relay, first)
            assert isinstance(first, FinalResult)
            return Response(reply_json(first.reply), media_type="application/json")
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        finally:
            if not handed_over:
                await relay.aclose()

    @router.get(
        "/agents", response_model=AgentsBody, summary="Every agent's status", responses=_errors()
    )
    async def list_agents(request: Request) -> AgentsBody:
        return AgentsBody(agents=[AgentBody.model_validate(s) for s in _runtime(request).agents()])

    @router.get(
        "/agents/{agent_id}",
        response_model=AgentBody,
        summary="One agent's status: state, workers (pid, state, restarts, in-flight), exits",
        responses=_errors(404),
    )
    async def get_agent(agent_id: AgentId, request: Request) -> AgentBody:
        return AgentBody.model_validate(_runtime(request).agent(agent_id))

    @router.post(
        "/agents/{agent_id}/restart",
        response_model=AgentBody,
        summary="Restart an agent's workers (also brings a FAILED agent back)",
        description="Returns once the agent is running again, or FAILED.",
        responses=_errors(403, 404),
    )
    async def restart_agent(agent_id: AgentId, request: Request) -> AgentBody:
        return AgentBody.model_validate(await _runtime(request).restart_agent(agent_id))

    @router.get(
        "/conversations",
        response_model=ConversationsBody,
        summary="Conversations, ordered by id, a page at a time",
        responses=_errors(404, 422, 503),
    )
    async def list_conversations(
        request: Request,
        agent_id: Annotated[str | None, Query(description="Only this agent's.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[
            str | None,
            Query(pattern=CONVERSATION_ID_PATTERN, description="The previous page's `next_after`."),
        ] = None,
    ) -> ConversationsBody:
        found = await _runtime(request).list_conversations(agent_id, limit=limit, after=after)
        return ConversationsBody(
            conversations=[ConversationInfoBody.model_validate(c) for c in found],
            next_after=found[-1].conversation_id if len(found) == limit else None,
        )

    @router.get(
        "/conversations/{conversation_id}",
        response_model=ConversationBody,
        summary="A conversation's history as pydantic-ai JSON",
        responses=_errors(404, 422, 503),
    )
    async def get_conversation(
        conversation_id: ConversationId,
        request: Request,
        offset: Annotated[int, Query(ge=0, description="First message to return.")] = 0,
        limit: Annotated[int | None, Query(ge=1, description="Messages to return.")] = None,
    ) -> Response:
        stored = await _runtime(request).load_conversation(
            conversation_id, offset=offset, limit=limit
        )
        if stored.revision == 0:
            raise ConversationNotFound(conversation_id)
        # The stored JSON goes out as it is: the edge never parses a history it only relays.
        return Response(
            _conversation_json(conversation_id, stored.revision, stored.messages),
            media_type="application/json",
        )

    @router.delete(
        "/conversations/{conversation_id}",
        status_code=204,
        response_class=Response,
        summary="Forget a conversation",
        responses=_errors(403, 404, 422, 503),
    )
    async def delete_conversation(conversation_id: ConversationId, request: Request) -> Response:
        if not await _runtime(request).delete_conversation(conversation_id):
            raise ConversationNotFound(conversation_id)
        return Response(status_code=204)

    return router


def _probe_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", response_model=HealthBody, summary="Liveness: the process answers")
    async def healthz() -> HealthBody:
        return HealthBody()

    @router.get(
        "/readyz",
        response_model=ReadinessBody,
        summary="Readiness: the store answers and every agent that is not FAILED can serve",
        responses={
            503: {"model": ReadinessBody, "description": "Not ready (see the body)."},
            **_errors(),
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        readiness = await _runtime(request).check_ready()
        return JSONResponse(
            ReadinessBody.of(readiness).model_dump(mode="json"),
            status_code=200 if readiness.ready else 503,
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={
            200: {
                "description": "The metrics; see docs/metrics.md.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            404: {
                "model": ErrorEnvelope,
                "description": "Metrics are off (`runtime.metrics = false`).",
            },
            **_errors(),
        },
    )
    async def metrics(request: Request) -> Response:
        recorder = _runtime(request).metrics
        if recorder is None:
            return plain_error(404, "not_found", "metrics are off (runtime.metrics = false)")
        body, content_type = await recorder.scrape()
        return Response(body, media_type=content_type)

    return router


async def _reply_only(send: Callable[[], Awaitable[Reply]]) -> AsyncIterator[StreamEvent]:
    yield FinalResult(await send())


def _conversation_json(conversation_id: str, revision: int, messages: bytes) -> bytes:
    """``{"conversation_id", "revision", "messages"}`` around the stored JSON, unparsed."""
    head = json.dumps({"conversation_id": conversation_id, "revision": revision})
    return head[:-1].encode() + b', "messages": ' + messages + b"}"
