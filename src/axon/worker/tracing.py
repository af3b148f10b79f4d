"""A traced run in a worker (the worker's half of :mod:`axon.observability.tracing`).

A ``run`` frame that carries the orchestrator's trace context runs under it with pydantic-ai's
instrumentation; :class:`WorkerTracing` collects the run's finished spans and
:func:`span_records` turns them into the plain records of the ``spans`` frame, which the
orchestrator re-creates under its request span. Imported on the first traced run only: an
untraced worker never imports the OpenTelemetry SDK.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace

from axon.protocol.frames import SpanEventRecord, SpanRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace import Span as SdkSpan

__all__ = ["WorkerTracing", "span_records"]


_run_spans: contextvars.ContextVar[list[ReadableSpan] | None] = contextvars.ContextVar(
    "axon_run_spans", default=None
)
"""The finished spans of the run whose task (or a task it started) is running."""


def _collector() -> Any:
    """A span processor that keeps each finished span in the list of the run it started in."""
    from opentelemetry.sdk.trace import SpanProcessor

    class RunSpanCollector(SpanProcessor):
        def __init__(self) -> None:
            self._owners: dict[int, list[ReadableSpan]] = {}

        def on_start(self, span: SdkSpan, parent_context: context.Context | None = None) -> None:
            spans = _run_spans.get()
            if spans is not None:
                self._owners[span.get_span_context().span_id] = spans

        def on_end(self, span: ReadableSpan) -> None:
            span_context = span.get_span_context()
            if span_context is None:  # pragma: no cover - a started span always has one
                return
            spans = self._owners.pop(span_context.span_id, None)
            if spans is not None:
                spans.append(span)

    return RunSpanCollector()


class WorkerTracing:
    """A worker's half: a private SDK provider that only collects, and pydantic-ai's
    ``Instrumentation`` capability bound to it. Made on the first run that carries a trace, so
    an untraced worker never imports the SDK."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from pydantic_ai.capabilities import Instrumentation
        from pydantic_ai.models.instrumented import InstrumentationSettings

        self.provider = TracerProvider()  # never exported from here: no resource to describe
        self.provider.add_span_processor(_collector())
        self.capability = Instrumentation(
            settings=InstrumentationSettings(tracer_provider=self.provider)
        )
        """Passed to each traced run (``capabilities=[...]``): it takes precedence over the
        agent's own ``instrument`` settings for that run, and leaves untraced runs alone."""
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            # Nobody in this process set one: spans the agent's own code opens with the
            # OpenTelemetry API during a run are collected too.
            trace.set_tracer_provider(self.provider)

    @contextlib.contextmanager
    def run(self, carrier: Mapping[str, str]) -> Generator[list[ReadableSpan]]:
        """While inside (in the run's task), spans start under the orchestrator's span named by
        ``carrier`` and each one that ends is added to the yielded list."""
        spans: list[ReadableSpan] = []
        token = context.attach(propagate.extract(carrier))
        reset = _run_spans.set(spans)
        try:
            yield spans
        finally:
            _run_spans.reset(reset)
            context.detach(token)


def span_records(spans: Sequence[ReadableSpan]) -> list[SpanRecord]:
    """Finished spans as the plain records of a ``spans`` frame."""
    records: list[SpanRecord] = []
    for span in spans:
        span_context = span.get_span_context()
        if span_context is None:  # pragma: no cover - a started span always has one
            continue
        scope = span.instrumentation_scope
        records.append(
            SpanRecord(
                name=span.name,
                span_id=span_context.span_id,
                parent_id=span.parent.span_id if span.parent is not None else None,
                kind=span.kind.name.lower(),
                start_ns=span.start_time or 0,
                end_ns=span.end_time or 0,
                attributes=dict(span.attributes or {}),
                events=[
                    SpanEventRecord(
                        name=event.name,
                        time_ns=event.timestamp,
                        attributes=dict(event.attributes or {}),
                    )
                    for event in span.events
                ],
                status=span.status.status_code.name.lower(),
                status_message=span.status.description,
                scope=scope.name if scope is not None else "",
                scope_version=scope.version if scope is not None else None,
            )
        )
    return records
