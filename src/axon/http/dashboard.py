"""The live dashboard: ``/dashboard`` (a static page, its assets in the package) and the JSON it
and ``axon top`` poll, ``/v1/monitor``.

The page and its files (``dashboard_assets/``: our HTML, JS and CSS, and uPlot for the charts,
vendored with its licence) are read once from the package with :mod:`importlib.resources` and
served from memory: no CDN, no network fetch, nothing to install. They hold no data, so the
guard lets them through without the token (:data:`axon.http.guard.OPEN_PREFIXES`). The guard
marks each request with whether the API requires a token, and the page says so in a ``<meta>``:
then it asks for the token before its first API call (a request refused with 401 would be the
first thing a user sees, and an error in the browser's console) and sends it with every call.

Caching: the page is ``no-cache`` (revalidated by ETag on each load, so an upgrade shows at
once); it names each asset with a ``?v=<content hash>``, so a versioned asset is ``immutable``
for a year. ``/v1/monitor`` is ``no-store``. The page's Content-Security-Policy allows only its
own origin (no inline script, no eval) and no framing (its restart buttons must not be
clickjacked).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from axon.http.errors import plain_error
from axon.http.guard import AUTH_REQUIRED
from axon.http.schemas import AgentBody, ErrorEnvelope, WorkerBody
from axon.runtime import Axon

__all__ = [
    "FeedEntryBody",
    "MonitorAgentBody",
    "MonitorBody",
    "MonitorWorkerBody",
    "dashboard_routes",
]

_ASSETS = "dashboard_assets"
_PAGE = "index.html"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_IMMUTABLE = "public, max-age=31536000, immutable"


# -- /v1/monitor bodies (the OpenAPI document; the route itself sends Monitor.snapshot as is) ----


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MonitorWorkerBody(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    cpu_percent: float | None = Field(
        description="CPU use of the worker process over the last sampling second (100 = one "
        "core); null until two samples were taken or while no process runs."
    )
    rss_bytes: int | None = Field(description="Resident memory; null while no process runs.")


class MonitorAgentBody(AgentBody):
    model_config = ConfigDict(extra="forbid")

    workers: list[MonitorWorkerBody]  # pyright: ignore[reportIncompatibleVariableOverride]


class SeriesBody(_Strict):
    """Columns, oldest first, one entry per bucket, ending at the last complete one."""

    t: list[float] = Field(description="Unix time of each bucket's start.")
    requests: list[float] = Field(description="Runs finished per second.")
    errors: list[float] = Field(
        description="Runs per second that ended with an outcome other than ok or cancelled."
    )
    p50_s: list[float | None] = Field(
        description="Median latency of the runs that succeeded (null: none did); within 5 %."
    )
    p99_s: list[float | None] = Field(description="99th percentile, likewise.")
    in_flight: list[int | None] = Field(description="Runs in flight (null: not sampled).")
    queued: list[int | None] = Field(description="Runs waiting for a worker slot.")


class NowBody(_Strict):
    window_s: float = Field(description="The rates and percentiles are over this many seconds.")
    requests_per_s: float
    errors_per_s: float
    error_ratio: float | None = Field(description="errors / requests (null: no request).")
    p50_s: float | None
    p99_s: float | None
    in_flight: int = Field(description="Runs in flight now, every agent.")
    queued: int = Field(description="Runs waiting for a worker slot now, every agent.")


class TotalsBody(_Strict):
    """Since the server started."""

    requests: int
    errors: int
    outcomes: dict[str, int] = Field(description="Runs per outcome (`ok`, an error type, ...).")
    restarts: int = Field(description="Worker restarts (`agent.restart` events).")
    crashes: int = Field(description="Worker exits that were not requested.")


class FeedEntryBody(_Strict):
    seq: int = Field(description="Grows by one per entry: pass the last one seen as `since`.")
    time: float = Field(description="Unix time.")
    level: str = Field(description="info, warning or error.")
    event: str = Field(description="The structured event's name (see docs/dashboard.md).")
    fields: dict[str, Any] = Field(description="The event's fields.")


class MonitorBody(_Strict):
    """The live picture: agents and workers, charts' series, totals and recent events."""

    time: float = Field(description="Server's Unix time of this snapshot.")
    started_at: float
    bucket_s: float = Field(description="Seconds per series entry.")
    window_s: float = Field(description="Seconds the series covers.")
    agents: list[MonitorAgentBody]
    series: SeriesBody
    now: NowBody
    totals: TotalsBody
    events: list[FeedEntryBody] = Field(
        description="Notable events with `seq > since`, oldest first (all those kept, at most "
        "500, when `since` is omitted or beyond `last_seq`)."
    )
    last_seq: int = Field(description="The newest event's seq (0: none yet).")


# -- static files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


@functools.cache
def _assets() -> dict[str, _Asset]:
    """Every servable file of the package's ``dashboard_assets``, by name (the only names the
    asset route answers: no path from a request ever reaches the file system)."""
    found: dict[str, _Asset] = {}
    for entry in resources.files("axon.http").joinpath(_ASSETS).iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            found[entry.name] = _Asset(body, _TYPES[suffix], _etag(body))
    return found


@functools.cache
def _page(auth_required: bool) -> _Asset:
    """``index.html`` with each ``{{asset:NAME}}`` made a versioned URL and ``{{auth}}`` set."""
    text = resources.files("axon.http").joinpath(_ASSETS, _PAGE).read_text("utf-8")
    for name, asset in _assets().items():
        text = text.replace("{{asset:" + name + "}}", f"dashboard/{name}?v={asset.etag[1:9]}")
    text = text.replace("{{auth}}", "token" if auth_required else "none")
    body = text.encode()
    return _Asset(body, "text/html; charset=utf-8", _etag(body))


def _send(request: Request, asset: _Asset, headers: dict[str, str]) -> Response:
    headers = {**headers, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def dashboard_routes() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/v1/monitor",
        response_model=MonitorBody,
        summary="The live picture behind /dashboard and `axon top`",
        description="Agents and workers (with CPU % and RSS), request rate, error rate, p50/p99 "
        "latency and in-flight per second over the last 10 minutes, totals, and notable events "
        "(crashes, restarts, state changes, timeouts) after `since`. Poll it with the previous "
        "answer's `last_seq`; a `last_seq` below your cursor means the server restarted.",
        responses={
            401: {
                "model": ErrorEnvelope,
                "description": "An API token is configured and the request did not carry it.",
            },
            421: {
                "model": ErrorEnvelope,
                "description": "The `Host` header names no address this server answers to.",
            },
            422: {"model": ErrorEnvelope, "description": "`since` is not an integer >= 0."},
        },
    )
    async def monitor(
        request: Request,
        since: Annotated[
            int | None,
            Query(ge=0, description="Only events with a greater `seq` (a previous `last_seq`)."),
        ] = None,
    ) -> Response:
        axon: Axon = request.app.state.axon
        # Sent as it is (no response-model pass: this is polled every second by every
        # dashboard); tests validate it against MonitorBody. msgspec: 3x faster than json.
        body = msgspec.json.encode(axon.monitor.snapshot(since))
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    @router.get("/dashboard", include_in_schema=False)
    async def page(request: Request) -> Response:
        return _send(request, _page(bool(request.scope.get(AUTH_REQUIRED))), _PAGE_HEADERS)

    @router.get("/dashboard/", include_in_schema=False)
    async def page_slash() -> Response:
        return RedirectResponse("../dashboard", status_code=308)

    @router.get("/dashboard/{name}", include_in_schema=False)
    async def asset(name: str, request: Request) -> Response:
        found = _assets().get(name)
        if found is None:
            return plain_error(404, "not_found", f"no dashboard file {name!r}")
        versioned = request.query_params.get("v") == found.etag[1:9]
        cache = _IMMUTABLE if versioned else "no-cache"
        return _send(request, found, {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})

    return router
