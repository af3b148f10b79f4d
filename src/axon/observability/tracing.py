"""OpenTelemetry traces of runs, across the orchestrator <-> worker process boundary.

Why this shape: the user configures tracing once, in the orchestrator (a ``TracerProvider``
passed to ``Axon``, the global one, or ``axon serve``'s OTLP exporter), and gets one tree per
request. The orchestrator opens one span per request (:class:`RunTracer`, :class:`RunSpan`) and
puts its context in the ``run`` frame (W3C trace-context). The worker (:class:`WorkerTracing`)
runs the agent under that context with pydantic-ai's own instrumentation, keeps the run's
finished spans in memory (workers have no exporter and need no config) and sends them back in a
``spans`` frame just before the run's ``result`` or ``error``. The orchestrator re-creates them
under the request span with the public API (:meth:`RunSpan.replay`), so whatever exporter the
user set up sees pydantic-ai's ``invoke_agent``/``chat``/``execute_tool`` spans nested under
Axon's. A worker that dies mid-run takes its unsent spans with it; the request span still ends,
with ``error.type`` ``agent_crashed``.

The SDK is optional (``pip install 'axon-runtime[otel]'``). This module imports only the
OpenTelemetry API (a dependency of pydantic-ai) when it is imported, the SDK lazily, and Axon
imports this module only when ``runtime.tracing`` is on: with tracing off no OpenTelemetry code
runs and no frame carries trace data. See docs/tracing.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from axon._version import __version__
from axon.errors import AxonError, ConfigError
from axon.protocol.frames import SpanRecord

if TYPE_CHECKING:
    pass

__all__ = [
    "INSTALL_HINT",
    "RunSpan",
    "RunTracer",
    "incoming_context",
    "install_otlp_exporter",
    "require_sdk",
]

INSTALL_HINT = "pip install 'axon-runtime[otel]'"
"""How to get what tracing needs (the distribution is ``axon-runtime``)."""

SCOPE = "axon"
"""Instrumentation scope of the orchestrator's request spans."""

_logger = logging.getLogger(__name__)

_KINDS = {kind.name.lower(): kind for kind in SpanKind}
_STATUSES = {code.name.lower(): code for code in StatusCode}
_MAX_SCOPES = 64
"""Tracers cached per instrumentation scope of replayed spans (a worker names the scopes)."""


def require_sdk(*, exporter: bool = False) -> None:
    """``ConfigError`` (key ``runtime.tracing``) unless the OpenTelemetry SDK (and, with
    ``exporter``, its OTLP/HTTP span exporter) can be imported."""
    try:
        import opentelemetry.sdk.trace  # pyright: ignore[reportUnusedImport]

        if exporter:
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        what = "the OpenTelemetry SDK" + (" and its OTLP/HTTP exporter" if exporter else "")
        missing = exc.name or str(exc)
        raise ConfigError(
            "runtime.tracing",
            f"tracing needs {what}, which cannot be imported ({missing}): {INSTALL_HINT}",
        ) from None


# -- orchestrator ------------------------------------------------------------------------------


class RunTracer:
    """Opens the span of each request of one runtime, from ``provider`` (else the global one,
    looked up at each span, so a provider set after the runtime was built is used)."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        require_sdk()
        self._provider = provider
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=provider)
        self._scopes: dict[tuple[str, str | None], trace.Tracer] = {}

    def start(self, agent_id: str, conversation_id: str, stream: bool) -> RunSpan:
        """The span of one request, a child of the current context (the caller's span, or the
        HTTP request's ``traceparent``). Not made current: the request's iterator yields to
        its caller while the span is open."""
        span = self._tracer.start_span(
            f"invoke_agent {agent_id}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": agent_id,
                "gen_ai.agent.name": agent_id,
                "gen_ai.conversation.id": conversation_id,
                "axon.stream": stream,
            },
        )
        return RunSpan(self, span)

    def tracer_for(self, scope: str, version: str | None) -> trace.Tracer:
        """A tracer of the same instrumentation scope as a worker's span (e.g. pydantic-ai)."""
        key = (scope, version)
        tracer = self._scopes.get(key)
        if tracer is None:
            tracer = trace.get_tracer(
                scope or "axon.worker", version, tracer_provider=self._provider
            )
            if len(self._scopes) < _MAX_SCOPES:
                self._scopes[key] = tracer
        return tracer


class RunSpan:
    """The orchestrator's span of one request."""

    __slots__ = ("_pid", "_recorded", "_span", "_tracer")

    def __init__(self, tracer: RunTracer, span: trace.Span) -> None:
        self._tracer = tracer
        self._span = span
        self._recorded = span.is_recording()  # an SDK span, sampled (False once it ends)
        self._pid: int | None = None

    def carrier(self) -> dict[str, str] | None:
        """This span's context as propagation headers for the ``run`` frame; None when it is
        not recorded (no SDK provider, or not sampled): the worker then traces nothing."""
        if not self._recorded:
            return None
        headers: dict[str, str] = {}
        propagate.inject(headers, context=trace.set_span_in_context(self._span))
        return headers or None

    def routed(self, run_id: int, pid: int | None) -> None:
        """The request's run went to worker ``pid`` as run ``run_id`` of its connection."""
        self._pid = pid
        self._span.set_attribute("axon.run.id", run_id)
        if pid is not None:
            self._span.set_attribute("axon.worker.pid", pid)

    def replay(self, records: Sequence[SpanRecord]) -> None:
        """Re-create a worker's finished spans under this span, keeping their tree, names,
        kinds, times, attributes, events and status; each is marked with ``axon.worker.pid``.
        (New span ids: a span id belongs to the process that created it.) Spans of a run the
        caller gave up on arrive after this span ended: they still join its tree."""
        if not self._recorded or not records:
            return
        try:
            self._replay(records)
        except Exception:  # a malformed record must not break the worker's read loop
            _logger.exception("could not record the spans of worker %s", self._pid)

    def _replay(self, records: Sequence[SpanRecord]) -> None:
        by_id = {record.span_id: record for record in records}
        made: dict[int, trace.Span] = {}
        root = trace.set_span_in_context(self._span)
        extra = {} if self._pid is None else {"axon.worker.pid": self._pid}

        def make(record: SpanRecord) -> None:
            parent = made.get(record.parent_id) if record.parent_id is not None else None
            span = self._tracer.tracer_for(record.scope, record.scope_version).start_span(
                record.name,
                context=root if parent is None else trace.set_span_in_context(parent),
                kind=_KINDS.get(record.kind, SpanKind.INTERNAL),
                attributes={**record.attributes, **extra},
                start_time=record.start_ns,
            )
            for event in record.events:
                span.add_event(event.name, event.attributes, event.time_ns)
            code = _STATUSES.get(record.status, StatusCode.UNSET)
            if code is not StatusCode.UNSET:
                span.set_status(
                    Status(code, record.status_message if code is StatusCode.ERROR else None)
                )
            made[record.span_id] = span

        # Parents before children (a parent id may point anywhere in the list, or in a cycle
        # from a broken worker: a span whose parent is not made yet hangs under the root).
        for record in records:
            chain: list[SpanRecord] = []
            seen: set[int] = set()
            current: SpanRecord | None = record
            while current is not None and current.span_id not in made:
                if current.span_id in seen:
                    break
                seen.add(current.span_id)
                chain.append(current)
                parent_id = current.parent_id
                current = by_id.get(parent_id) if parent_id is not None else None
            for link in reversed(chain):
                make(link)
        for record in records:  # in the order the worker ended them
            made[record.span_id].end(end_time=record.end_ns)

    def end(self, outcome: str, error: BaseException | None = None) -> None:
        """End the span with the request's outcome (``run.finished``'s); an error sets status
        ERROR and ``error.type`` (the ``AxonError`` type, else the exception's class)."""
        span = self._span
        span.set_attribute("axon.outcome", outcome)
        if error is not None:
            if isinstance(error, AxonError):
                span.set_attribute("error.type", error.type)
                span.set_status(Status(StatusCode.ERROR, error.message))
            else:
                span.set_attribute("error.type", type(error).__qualname__)
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()


@contextlib.contextmanager
def incoming_context(headers: Mapping[str, str]) -> Generator[None]:
    """While inside, the current context is the caller's trace named by ``headers`` (W3C
    ``traceparent``/``tracestate``, or what ``OTEL_PROPAGATORS`` selects), unless a span is
    current already: an HTTP instrumentation (FastAPI's own, when a global SDK provider is set)
    joined the caller's trace, and the request span belongs under its span."""
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        context.detach(token)


def install_otlp_exporter() -> Callable[[], None] | None:
    """For ``axon serve``: unless the global tracer provider already is an SDK provider, make
    one that batches spans to the OTLP/HTTP exporter (configured by the standard ``OTEL_*``
    variables; ``service.name`` ``axon`` unless ``OTEL_SERVICE_NAME``/
    ``OTEL_RESOURCE_ATTRIBUTES`` say otherwise) and set it as the global one.

    Returns the function that flushes and shuts it down (call it on exit), or None if a provider
    was already there (its owner flushes it). ``ConfigError`` if the SDK or exporter is missing.
    """
    require_sdk(exporter=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    # The environment's resource attributes win over our default service name.
    resource = Resource.create({"service.name": "axon"}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


# -- worker ------------------------------------------------------------------------------------
