"""Typed errors to HTTP responses, at the edge: one envelope, the status that fits.

``{"error": {"type": "agent_unavailable", "message": "...", **facts}}``. Nothing a client sends
can produce a 500 or a stack trace: validation failures are 400/422, unknown routes 404/405, and
an unexpected exception (a bug) is logged and answered with a bare ``internal_error``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from axon.errors import (
    AgentCrashed,
    AgentNotFound,
    AgentRunFailed,
    AgentTimeout,
    AgentUnavailable,
    AxonError,
    ConversationBusy,
    ConversationNotFound,
    ForbiddenHost,
    ForbiddenOrigin,
    HistoryTooLarge,
    InvalidRequest,
    Overloaded,
    ProtocolError,
    RequestTimeout,
    ResultTooLarge,
    RunInterrupted,
    ShuttingDown,
    StoreUnavailable,
    TooManyConnections,
    Unauthorized,
)

__all__ = [
    "STATUS",
    "error_payload",
    "error_response",
    "install_error_handlers",
    "plain_error",
    "retry_after_header",
    "status_of",
]


# The errors below are the HTTP edge's own, like ShuttingDown: about a connection or a browser,
# never raised by the Python API. Each says what the client can do.


STATUS: dict[type[AxonError], int] = {
    InvalidRequest: 422,
    Unauthorized: 401,
    ForbiddenOrigin: 403,
    RequestTimeout: 408,
    ForbiddenHost: 421,
    AgentNotFound: 404,
    ConversationNotFound: 404,
    ConversationBusy: 409,
    RunInterrupted: 409,
    HistoryTooLarge: 413,
    Overloaded: 429,
    AgentCrashed: 502,
    AgentRunFailed: 502,
    ResultTooLarge: 502,
    ProtocolError: 502,
    AgentUnavailable: 503,
    StoreUnavailable: 503,
    ShuttingDown: 503,
    TooManyConnections: 503,
    AgentTimeout: 504,
}
"""The HTTP status of each error a request can end with."""

_STATUS_TYPES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def status_of(exc: AxonError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # pyright: ignore[reportArgumentType]
    return 500


def retry_after_header(exc: AxonError) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) for errors that say when to retry."""
    retry_after = exc.facts.get("retry_after")
    if isinstance(retry_after, int | float) and math.isfinite(retry_after):
        return {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return {}


def error_payload(exc: AxonError) -> dict[str, Any]:
    return {"error": exc.to_dict()}


def error_response(exc: AxonError) -> JSONResponse:
    headers = retry_after_header(exc)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_payload(exc), status_code=status_of(exc), headers=headers)


def plain_error(status: int, error_type: str, message: str, **facts: Any) -> JSONResponse:
    """The envelope for an edge failure that is no ``AxonError`` (bad body, unknown route)."""
    return JSONResponse(
        {"error": {"type": error_type, "message": message, **facts}}, status_code=status
    )


async def _on_axon_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AxonError)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(e) for e in exc.errors()]
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body_problem = any(p["field"] == "body" or p["kind"] == "json_invalid" for p in problems)
    if body_problem and not (content_type == "application/json" or content_type.endswith("+json")):
        # Only a body declared as JSON is parsed (a guard against cross-site form posts).
        return plain_error(
            415,
            "unsupported_media_type",
            "send the body as JSON with the header 'Content-Type: application/json'",
            field="body",
        )
    if any(p["kind"] == "json_invalid" for p in problems):
        return plain_error(400, "invalid_request", "the body is not valid JSON", field="body")
    if any(p["field"] == "body" for p in problems):  # no body, or not a JSON object
        return plain_error(400, "invalid_request", "the body must be a JSON object", field="body")
    first = problems[0] if problems else {"field": None, "message": "invalid request"}
    message = str(first["message"])
    if first["field"]:
        message = f"{first['field']}: {message}"
    return plain_error(
        422,
        "invalid_request",
        message,
        field=first["field"],
        errors=[{"field": p["field"], "message": p["message"]} for p in problems],
    )


def _problem(error: Any) -> dict[str, Any]:
    loc = [str(part) for part in error.get("loc", ())]
    # ("body", "prompt") -> "prompt"; ("query", "limit") -> "limit"; ("body",) -> "body"
    field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else None)
    return {"field": field, "message": str(error.get("msg", "invalid")), "kind": error.get("type")}


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error_type = _STATUS_TYPES.get(exc.status_code, "http_error")
    response = plain_error(exc.status_code, error_type, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        # Starlette names only the first route matching the path; a path may have several.
        response.headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
    return response


def _allowed_methods(request: Request) -> set[str]:
    allowed: set[str] = set()
    for route in request.app.router.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(request.scope)[0] is not Match.NONE:
            allowed |= set(methods)
    return allowed


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    request.app.state.axon.events.emit(
        "http.internal_error",
        logging.ERROR,
        method=request.method,
        path=request.url.path,
        error=repr(exc),
    )
    return plain_error(500, "internal_error", "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AxonError, _on_axon_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
