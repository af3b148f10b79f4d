"""The trace data on the wire (the ``run`` frame's ``trace``, the ``spans`` frame) and the two
halves that produce and consume it: worker spans -> records -> frame -> re-created spans."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from axon.errors import AgentTimeout, ProtocolError
from axon.observability.tracing import RunTracer, incoming_context
from axon.protocol.codec import HEADER_SIZE, decode_payload, encode_frame
from axon.protocol.frames import Run, SpanEventRecord, SpanRecord, Spans
from axon.worker.tracing import span_records

# -- the wire ---------------------------------------------------------------------------------

span_ids = st.integers(min_value=1, max_value=2**64 - 1)
scalars = st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text()
attribute_maps = st.dictionaries(
    st.text(), scalars | st.lists(st.text(), max_size=3) | st.lists(st.integers(0, 9)), max_size=4
)
times = st.integers(min_value=0, max_value=2**63 - 1)
records = st.builds(
    SpanRecord,
    name=st.text(),
    span_id=span_ids,
    start_ns=times,
    end_ns=times,
    parent_id=st.none() | span_ids,
    kind=st.sampled_from(["internal", "server", "client", "producer", "consumer"]),
    attributes=attribute_maps,
    events=st.lists(
        st.builds(SpanEventRecord, name=st.text(), time_ns=times, attributes=attribute_maps),
        max_size=2,
    ),
    status=st.sampled_from(["unset", "ok", "error"]),
    status_message=st.none() | st.text(),
    scope=st.text(),
    scope_version=st.none() | st.text(),
)


def payload(frame: Any) -> dict[str, Any]:
    return msgspec.msgpack.decode(encode_frame(frame)[HEADER_SIZE:])


@given(st.integers(0, 2**63 - 1), st.lists(records, max_size=4))
@settings(max_examples=200)
def test_spans_frames_survive_an_encode_decode_round_trip(
    run_id: int, spans: list[SpanRecord]
) -> None:
    frame = Spans.of(run_id, spans)
    decoded = decode_payload(encode_frame(frame)[HEADER_SIZE:])
    assert decoded == frame
    assert isinstance(decoded, Spans)
    assert decoded.records() == spans


def test_a_spans_frame_is_a_map_of_plain_span_maps() -> None:
    record = SpanRecord(name="chat m", span_id=7, start_ns=1, end_ns=2, parent_id=5, kind="client")
    assert payload(Spans.of(3, [record])) == {
        "kind": "spans",
        "id": 3,
        "spans": [
            {
                "name": "chat m",
                "span_id": 7,
                "start_ns": 1,
                "end_ns": 2,
                "parent_id": 5,
                "kind": "client",
            }
        ],
    }


def test_the_run_frame_carries_trace_headers_only_when_given() -> None:
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    traced = Run(id=1, prompt="p", trace=headers)
    assert payload(traced)["trace"] == headers
    assert decode_payload(encode_frame(traced)[HEADER_SIZE:]) == traced
    assert "trace" not in payload(Run(id=1, prompt="p"))


def test_old_and_new_peers_read_each_others_run_frames() -> None:
    class RunV1(msgspec.Struct, tag="run", tag_field="kind"):  # a peer without ``trace``
        id: int
        prompt: str

    new = encode_frame(Run(id=4, prompt="p", trace={"traceparent": "x"}))[HEADER_SIZE:]
    assert msgspec.msgpack.decode(new, type=RunV1) == RunV1(id=4, prompt="p")
    old = msgspec.msgpack.encode(RunV1(id=4, prompt="p"))
    assert decode_payload(old) == Run(id=4, prompt="p", trace=None)


@pytest.mark.parametrize(
    "fields",
    [
        {"id": 1, "spans": {}},
        {"id": 1, "spans": [{"name": "a"}]},
        {"id": 1, "spans": [{"name": "a", "span_id": "1", "start_ns": 0, "end_ns": 0}]},
        {"id": 1, "spans": [{"name": "a", "span_id": 1, "start_ns": 0, "end_ns": 0, "events": 3}]},
        {"id": 1, "spans": [{"name": 1, "span_id": 1, "start_ns": 0, "end_ns": 0}]},
        {"spans": []},
    ],
)
def test_malformed_spans_are_refused_when_read(fields: dict[str, Any]) -> None:
    # The frame's spans stay raw until the run they belong to is known: only then are they
    # decoded, and refused.
    try:
        frame = decode_payload(msgspec.msgpack.encode({"kind": "spans", **fields}))
    except ProtocolError:
        assert "id" not in fields  # only a frame without its run id is refused at once
        return
    assert isinstance(frame, Spans)
    with pytest.raises(ValueError, match="malformed"):
        frame.records()


def test_spans_over_their_bound_are_refused_when_read() -> None:
    from axon.protocol.frames import MAX_SPANS_BYTES

    record = SpanRecord(name="x" * MAX_SPANS_BYTES, span_id=1, start_ns=0, end_ns=0)
    frame = decode_payload(encode_frame(Spans.of(1, [record]))[HEADER_SIZE:])
    assert isinstance(frame, Spans)
    with pytest.raises(ValueError, match="limit"):
        frame.records()


def test_a_run_frame_with_a_malformed_trace_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_payload(msgspec.msgpack.encode({"kind": "run", "id": 1, "prompt": "p", "trace": 5}))


# -- worker spans -> records -> orchestrator spans ----------------------------------------------


def recording_provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def worker_spans(carrier: dict[str, str]) -> list[ReadableSpan]:
    """What a worker's run produces under the orchestrator's ``carrier``: a run span, a model
    call and a failing tool call, from a scope of its own."""
    from opentelemetry import propagate

    provider, exporter = recording_provider()
    tracer = provider.get_tracer("pydantic-ai", "2.68.0")
    parent = propagate.extract(carrier)
    with tracer.start_as_current_span("invoke_agent a", context=parent) as run:
        run.set_attribute("gen_ai.operation.name", "invoke_agent")
        with tracer.start_as_current_span("chat m", kind=SpanKind.CLIENT) as chat:
            chat.set_attribute("gen_ai.usage.input_tokens", 12)
            chat.set_attribute("tags", ("a", "b"))
        with tracer.start_as_current_span("execute_tool t") as tool:
            tool.add_event("exception", {"exception.message": "boom"}, timestamp=12345)
            tool.set_status(StatusCode.ERROR, "boom")
    return list(exporter.get_finished_spans())


def test_worker_spans_are_recreated_as_one_tree_under_the_request_span() -> None:
    provider, exporter = recording_provider()
    request = RunTracer(provider).start("a1", "c-1", stream=False)
    carrier = request.carrier()
    assert carrier is not None
    produced = worker_spans(carrier)
    frame = Spans.of(1, span_records(produced))
    decoded = decode_payload(encode_frame(frame)[HEADER_SIZE:])
    assert isinstance(decoded, Spans)

    request.routed(1, 4242)
    request.replay(decoded.records())
    request.end("ok")

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["chat m", "execute_tool t", "invoke_agent a", "invoke_agent a1"]
    root = spans["invoke_agent a1"]
    run, chat, tool = spans["invoke_agent a"], spans["chat m"], spans["execute_tool t"]
    assert root.context is not None
    assert run.context is not None
    assert run.parent is not None
    assert run.parent.span_id == root.context.span_id
    assert chat.parent is not None
    assert chat.parent.span_id == run.context.span_id
    assert tool.parent is not None
    assert tool.parent.span_id == run.context.span_id
    assert {s.context.trace_id for s in spans.values() if s.context} == {root.context.trace_id}

    originals = {s.name: s for s in produced}
    for name in ("invoke_agent a", "chat m", "execute_tool t"):
        made, original = spans[name], originals[name]
        assert made.context is not None
        assert original.context is not None
        assert made.context.span_id != original.context.span_id  # ids belong to a process
        assert (made.start_time, made.end_time) == (original.start_time, original.end_time)
        assert made.kind == original.kind
        assert made.instrumentation_scope is not None
        assert (made.instrumentation_scope.name, made.instrumentation_scope.version) == (
            "pydantic-ai",
            "2.68.0",
        )
        assert dict(made.attributes or {}) == {
            **dict(original.attributes or {}),
            "axon.worker.pid": 4242,
        }
    assert chat.kind is SpanKind.CLIENT
    assert dict(chat.attributes or {})["tags"] == ("a", "b")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.status.description == "boom"
    (event,) = tool.events
    assert (event.name, event.timestamp, dict(event.attributes or {})) == (
        "exception",
        12345,
        {"exception.message": "boom"},
    )
    assert run.status.status_code is StatusCode.UNSET
    assert dict(root.attributes or {})["axon.worker.pid"] == 4242


def test_spans_that_arrive_after_the_request_span_ended_still_join_it() -> None:
    provider, exporter = recording_provider()
    request = RunTracer(provider).start("a1", "c-1", stream=False)
    carrier = request.carrier()
    assert carrier is not None
    request.end("agent_timeout", AgentTimeout("a1", timeout=0.5))
    request.replay(span_records(worker_spans(carrier)))
    assert len(exporter.get_finished_spans()) == 4


def record(span_id: int, parent_id: int | None, name: str | None = None) -> SpanRecord:
    return SpanRecord(
        name=name or f"s{span_id}", span_id=span_id, parent_id=parent_id, start_ns=1, end_ns=2
    )


def test_broken_parent_links_hang_under_the_request_span_and_nothing_is_lost() -> None:
    provider, exporter = recording_provider()
    request = RunTracer(provider).start("a1", "c-1", stream=False)
    request.replay(
        [
            record(3, parent_id=2),  # a child listed before its parent
            record(2, parent_id=99),  # a parent the worker never sent
            record(4, parent_id=5),  # a cycle: 4 -> 5 -> 4
            record(5, parent_id=4),
            record(6, parent_id=6),  # its own parent
            record(7, parent_id=None),
            msgspec.structs.replace(record(8, parent_id=7), kind="?", status="?"),
        ]
    )
    request.end("ok")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert len(spans) == 8
    root = spans["invoke_agent a1"]
    assert root.context is not None
    ids = {name: s.context.span_id for name, s in spans.items() if s.context}

    def parent_of(name: str) -> int | None:
        parent = spans[name].parent
        return parent.span_id if parent else None

    assert parent_of("s3") == ids["s2"]
    assert parent_of("s2") == root.context.span_id
    assert parent_of("s5") == root.context.span_id  # the cycle is cut where it closes
    assert parent_of("s4") == ids["s5"]
    assert parent_of("s6") == root.context.span_id
    assert parent_of("s7") == root.context.span_id
    assert parent_of("s8") == ids["s7"]
    assert spans["s8"].kind is SpanKind.INTERNAL  # unknown names fall back to the defaults
    assert spans["s8"].status.status_code is StatusCode.UNSET


def test_an_unsampled_request_sends_no_trace_and_records_nothing() -> None:
    provider, exporter = recording_provider(sampler=ALWAYS_OFF)
    request = RunTracer(provider).start("a1", "c-1", stream=False)
    assert request.carrier() is None
    request.replay([record(1, parent_id=None)])
    request.end("ok")
    assert exporter.get_finished_spans() == ()


def test_the_request_span_records_the_outcome() -> None:
    provider, exporter = recording_provider()
    tracer = RunTracer(provider)
    tracer.start("a1", "c-1", stream=True).end("ok")
    tracer.start("a1", "c-2", stream=False).end("agent_timeout", AgentTimeout("a1", timeout=2))
    tracer.start("a1", "c-3", stream=False).end("error", KeyError("a bug"))
    tracer.start("a1", "c-4", stream=False).end("cancelled")
    ok, timeout, bug, cancelled = exporter.get_finished_spans()

    assert ok.status.status_code is StatusCode.UNSET
    assert dict(ok.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": "a1",
        "gen_ai.agent.name": "a1",
        "gen_ai.conversation.id": "c-1",
        "axon.stream": True,
        "axon.outcome": "ok",
    }
    assert timeout.status.status_code is StatusCode.ERROR
    assert timeout.status.description == "agent 'a1' did not answer within 2s"
    assert (timeout.attributes or {})["error.type"] == "agent_timeout"
    assert timeout.events == ()  # an expected failure, no stack trace
    assert bug.status.status_code is StatusCode.ERROR
    assert (bug.attributes or {})["error.type"] == "KeyError"
    assert [e.name for e in bug.events] == ["exception"]
    assert cancelled.status.status_code is StatusCode.UNSET
    assert "error.type" not in (cancelled.attributes or {})


def test_incoming_headers_become_the_parent_unless_a_span_is_current() -> None:
    provider, _ = recording_provider()
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    with incoming_context(headers):
        current = trace.get_current_span().get_span_context()
        assert (current.trace_id, current.span_id) == (
            0x4BF92F3577B34DA6A3CE929D0E0E4736,
            0x00F067AA0BA902B7,
        )
        assert current.is_remote
    assert not trace.get_current_span().get_span_context().is_valid

    server_span = provider.get_tracer("http").start_as_current_span("POST")
    with server_span as server, incoming_context(headers):
        assert trace.get_current_span() is server
    with incoming_context({}):
        assert not trace.get_current_span().get_span_context().is_valid
