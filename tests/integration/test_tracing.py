"""OpenTelemetry traces across the process boundary: one request is one tree, from the
orchestrator's span down to pydantic-ai's spans in a real worker process, recorded by an
in-memory exporter (and, once, by a real OTLP/HTTP receiver behind ``axon serve``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from axon import (
    AgentCrashed,
    AgentRunFailed,
    AgentSpec,
    AgentTimeout,
    Axon,
    FinalResult,
    RuntimeSpec,
    TextDelta,
)
from axon.http.app import create_app
from axon.protocol.channel import FrameChannel
from axon.protocol.codec import HEADER_SIZE, encode_frame
from axon.protocol.frames import Frame, Run

from ..conftest import MISBEHAVING, WEATHER, ServeAxon, StartAxon

WEATHER_NAME = "weather"  # the pydantic-ai agent's own name (its invoke_agent span)
WEATHER_NAME_MODEL = "axon-weather"  # the weather example's FunctionModel name (chat spans)
TRACED = RuntimeSpec(tracing=True)


class Recorder(SpanProcessor):
    """Every span the orchestrator's provider ends, with a way to await one."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self._export = SimpleSpanProcessor(self.exporter)
        self._waiters: list[tuple[Callable[[ReadableSpan], bool], asyncio.Future[None]]] = []

    def on_end(self, span: ReadableSpan) -> None:
        self._export.on_end(span)
        for matches, future in self._waiters:
            if not future.done() and matches(span):
                future.set_result(None)

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    async def wait_for(self, matches: Callable[[ReadableSpan], bool], timeout: float = 15) -> None:
        if any(matches(span) for span in self.spans):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((matches, future))
        async with asyncio.timeout(timeout):
            await future


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.exporter.shutdown()


def provider_of(recorder: Recorder) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    return provider


@pytest.fixture
def sent_runs(monkeypatch: pytest.MonkeyPatch) -> list[Run]:
    """Every ``run`` frame the orchestrator writes to a worker (the real channel, observed)."""
    runs: list[Run] = []
    send = FrameChannel.send_nowait

    def observed(self: FrameChannel, frame: Frame) -> None:
        if isinstance(frame, Run):
            runs.append(frame)
        send(self, frame)

    monkeypatch.setattr(FrameChannel, "send_nowait", observed)
    return runs


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def request_span(spans: Sequence[ReadableSpan], agent_id: str) -> ReadableSpan:
    (span,) = [
        s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == "axon"
    ]
    assert span.name == f"invoke_agent {agent_id}"
    assert span.kind is SpanKind.CLIENT
    return span


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == span_id(parent)]


def worker_pid(axon: Axon, agent_id: str) -> int:
    (worker,) = axon.agent(agent_id).workers
    assert worker.pid is not None
    return worker.pid


def check_weather_tree(
    spans: Sequence[ReadableSpan], root: ReadableSpan, pid: int, cid: str
) -> None:
    """The worker's spans of one weather run: pydantic-ai's run span under ``root``, three
    model requests and the two tool calls under it, all from ``pid``, inside ``root``'s time."""
    assert pid != os.getpid()
    assert root.attributes is not None
    assert root.attributes["axon.worker.pid"] == pid
    assert {trace_id(s) for s in spans} == {trace_id(root)}

    (run,) = children(spans, root)
    assert run.name == f"invoke_agent {WEATHER_NAME}"
    below = children(spans, run)
    assert sorted(s.name for s in below) == [
        f"chat {WEATHER_NAME_MODEL}",
        f"chat {WEATHER_NAME_MODEL}",
        f"chat {WEATHER_NAME_MODEL}",
        "execute_tool get_lat_lng",
        "execute_tool get_weather",
    ]
    assert len(spans) == 1 + 1 + 5  # nothing else, nothing lost
    for span in [run, *below]:
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "pydantic-ai"
        assert span.attributes is not None
        assert span.attributes["axon.worker.pid"] == pid
        assert span.attributes["gen_ai.conversation.id"] == cid
        assert root.start_time is not None
        assert root.end_time is not None
        assert span.start_time is not None
        assert span.end_time is not None
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.name"] == WEATHER_NAME
    for span in below:
        assert span.attributes is not None
        kind = "chat" if span.name.startswith("chat") else "execute_tool"
        assert span.attributes["gen_ai.operation.name"] == kind
        assert span.kind is (SpanKind.CLIENT if kind == "chat" else SpanKind.INTERNAL)
        if kind == "execute_tool":
            assert span.attributes["gen_ai.tool.name"] == span.name.removeprefix("execute_tool ")


def check_request_attributes(root: ReadableSpan, agent_id: str, cid: str, stream: bool) -> None:
    assert root.attributes is not None
    assert dict(root.attributes) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": agent_id,
        "gen_ai.agent.name": agent_id,
        "gen_ai.conversation.id": cid,
        "axon.stream": stream,
        "axon.run.id": 1,
        "axon.worker.pid": root.attributes["axon.worker.pid"],
        "axon.outcome": "ok",
    }
    assert root.status.status_code is StatusCode.UNSET


async def test_a_request_is_one_trace_from_the_orchestrator_into_the_worker(
    start_axon: StartAxon, recorder: Recorder, sent_runs: list[Run]
) -> None:
    axon = await start_axon(
        AgentSpec(id="w1", agent=WEATHER), runtime=TRACED, tracer_provider=provider_of(recorder)
    )
    reply = await axon.send_message("w1", "What is the weather in Paris?", conversation_id="t-1")
    assert "Paris" in reply.output

    spans = recorder.spans
    root = request_span(spans, "w1")
    assert root.parent is None  # no caller span: the request starts the trace
    check_request_attributes(root, "w1", "t-1", stream=False)
    check_weather_tree(spans, root, worker_pid(axon, "w1"), "t-1")

    # The run frame carried the request span's context (W3C traceparent, sampled).
    (run,) = sent_runs
    assert root.context is not None
    flags = f"{root.context.trace_flags:02x}"
    assert root.context.trace_flags.sampled
    assert run.trace == {"traceparent": f"00-{trace_id(root):032x}-{span_id(root):016x}-{flags}"}


async def test_a_streamed_run_is_traced_the_same_way(
    start_axon: StartAxon, recorder: Recorder
) -> None:
    axon = await start_axon(
        AgentSpec(id="w1", agent=WEATHER), runtime=TRACED, tracer_provider=provider_of(recorder)
    )
    events = [e async for e in axon.stream_message("w1", "weather in Oslo?", conversation_id="t-2")]
    assert any(isinstance(e, TextDelta) for e in events)
    assert isinstance(events[-1], FinalResult)

    spans = recorder.spans
    root = request_span(spans, "w1")
    check_request_attributes(root, "w1", "t-2", stream=True)
    check_weather_tree(spans, root, worker_pid(axon, "w1"), "t-2")


async def test_a_caller_span_is_the_parent_of_the_request_span(
    start_axon: StartAxon, recorder: Recorder
) -> None:
    provider = provider_of(recorder)
    axon = await start_axon(
        AgentSpec(id="w1", agent=WEATHER), runtime=TRACED, tracer_provider=provider
    )
    with provider.get_tracer("caller").start_as_current_span("handle order") as caller:
        await axon.send_message("w1", "weather in Rome?", conversation_id="t-3")
    caller_id = caller.get_span_context().span_id

    spans = recorder.spans
    root = request_span(spans, "w1")
    assert root.parent is not None
    assert root.parent.span_id == caller_id
    assert {trace_id(s) for s in spans} == {caller.get_span_context().trace_id}
    check_weather_tree(
        [s for s in spans if span_id(s) != caller_id], root, worker_pid(axon, "w1"), "t-3"
    )


async def test_an_http_traceparent_is_the_parent_of_the_request_span(
    start_axon: StartAxon, recorder: Recorder
) -> None:
    axon = await start_axon(
        AgentSpec(id="w1", agent=WEATHER), runtime=TRACED, tracer_provider=provider_of(recorder)
    )
    caller_trace, caller_span = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    transport = httpx.ASGITransport(app=create_app(axon))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        response = await client.post(
            "/v1/agents/w1/messages",
            json={"prompt": "weather in Lima?", "conversation_id": "t-4"},
            headers={"traceparent": f"00-{caller_trace:032x}-{caller_span:016x}-01"},
        )
    assert response.status_code == 200, response.text

    spans = recorder.spans
    root = request_span(spans, "w1")
    assert root.parent is not None
    assert (root.parent.trace_id, root.parent.span_id) == (caller_trace, caller_span)
    assert root.parent.is_remote
    check_weather_tree(spans, root, worker_pid(axon, "w1"), "t-4")


async def test_an_agent_that_raises_is_an_error_span_with_the_workers_spans(
    start_axon: StartAxon, recorder: Recorder
) -> None:
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING), runtime=TRACED, tracer_provider=provider_of(recorder)
    )
    with pytest.raises(AgentRunFailed):
        await axon.send_message("m", "raise:boom", conversation_id="t-5")

    spans = recorder.spans
    root = request_span(spans, "m")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None
    assert root.attributes["error.type"] == "agent_run_failed"
    assert root.attributes["axon.outcome"] == "agent_run_failed"
    # The worker's spans made it back, failed tool call and its exception event included.
    (run,) = children(spans, root)
    assert run.name == "invoke_agent misbehaving"
    assert run.status.status_code is StatusCode.ERROR
    (tool,) = [s for s in spans if s.name == "execute_tool explode"]
    assert tool.parent is not None
    assert tool.parent.span_id == span_id(run)
    raised = [e for e in tool.events + run.events if e.name == "exception"]
    assert raised
    assert {(e.attributes or {}).get("exception.message") for e in raised} == {"boom"}


async def test_a_crash_mid_run_is_an_error_span_and_the_workers_spans_are_lost(
    start_axon: StartAxon, recorder: Recorder
) -> None:
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING), runtime=TRACED, tracer_provider=provider_of(recorder)
    )
    pid = worker_pid(axon, "m")
    with pytest.raises(AgentCrashed):
        await axon.send_message("m", "crash", conversation_id="t-6")

    (root,) = recorder.spans  # the worker died before it could send its spans
    assert request_span([root], "m") is root
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None
    assert root.attributes["error.type"] == "agent_crashed"
    assert root.attributes["axon.worker.pid"] == pid


async def test_a_timeout_is_an_error_span_and_the_cancelled_runs_spans_still_arrive(
    start_axon: StartAxon, recorder: Recorder
) -> None:
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING), runtime=TRACED, tracer_provider=provider_of(recorder)
    )
    with pytest.raises(AgentTimeout):
        await axon.send_message("m", "sleep:30", conversation_id="t-7", timeout=0.5)

    root = request_span(recorder.spans, "m")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None
    assert root.attributes["error.type"] == "agent_timeout"
    # The worker ends the cancelled run and sends its spans; they join the ended request span.
    await recorder.wait_for(lambda s: s.name == "invoke_agent misbehaving")
    (run,) = children(recorder.spans, root)
    assert run.attributes is not None
    assert run.attributes["axon.worker.pid"] == worker_pid(axon, "m")


async def test_tracing_off_exports_nothing_and_sends_no_trace_data(
    start_axon: StartAxon, recorder: Recorder, sent_runs: list[Run]
) -> None:
    axon = await start_axon(
        AgentSpec(id="w1", agent=WEATHER), tracer_provider=provider_of(recorder)
    )
    assert axon.config.runtime.tracing is False
    await axon.send_message("w1", "weather in Kyiv?")
    events = [e async for e in axon.stream_message("w1", "weather in Kyiv?")]
    assert isinstance(events[-1], FinalResult)

    assert recorder.spans == []
    assert [run.trace for run in sent_runs] == [None, None]
    for run in sent_runs:  # not even an empty field on the wire
        assert "trace" not in msgspec.msgpack.decode(encode_frame(run)[HEADER_SIZE:])


_NO_SDK = textwrap.dedent(
    """
    import asyncio, sys
    sys.modules["opentelemetry.sdk"] = None  # the SDK is not installed, as far as we can tell
    from axon import AgentSpec, Axon, ConfigError, RuntimeSpec

    spec = AgentSpec(id="m", agent="axon.examples.misbehaving:misbehaving_agent")

    async def untraced():
        async with Axon([spec]) as axon:
            return (await axon.send_message("m", "hi")).output

    print(asyncio.run(untraced()))
    sdk = [m for m, module in sys.modules.items() if m.startswith("opentelemetry.sdk") and module]
    print(sdk or "no sdk")
    print("tracing module loaded:", "axon.observability.tracing" in sys.modules)
    try:
        Axon([spec], runtime=RuntimeSpec(tracing=True))
    except ConfigError as exc:
        print(exc.key)
        print(exc.reason)
    """
)


def test_tracing_without_the_sdk_is_a_config_error_and_off_needs_no_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NO_SDK], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        "echo: hi",
        "no sdk",
        "tracing module loaded: False",
        "runtime.tracing",
    ]
    assert lines[4].startswith("tracing needs the OpenTelemetry SDK, which cannot be imported")
    assert lines[4].endswith(": pip install 'axon-runtime[otel]'")


# -- axon serve, exporting over OTLP/HTTP ------------------------------------------------------


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver on a real socket: keeps every export request."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of every span received."""
        found: list[tuple[dict[str, Any], Any]] = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found += [(resource, span) for span in scope_spans.spans]
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        values[a.key] = getattr(a.value, kind) if kind else None
    return values


async def test_axon_serve_exports_the_whole_tree_under_the_callers_traceparent(
    serve_axon: ServeAxon, otlp: OtlpReceiver, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    toml = textwrap.dedent(
        f"""
        [runtime]
        tracing = true

        [[agents]]
        id = "w1"
        agent = "{WEATHER}"
        """
    )
    server = await serve_axon(toml, env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url})
    caller_trace, caller_span = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    response = await http.post(
        f"{server.url}/v1/agents/w1/messages",
        json={"prompt": "weather in Quito?", "conversation_id": "t-8"},
        headers={"traceparent": f"00-{caller_trace:032x}-{caller_span:016x}-01"},
    )
    assert response.status_code == 200, response.text
    agents = (await http.get(f"{server.url}/v1/agents/w1")).json()
    pid = agents["workers"][0]["pid"]
    assert await server.stop() == 0  # the exporter is flushed on the way out

    received = otlp.spans()
    assert {resource["service.name"] for resource, _ in received} == {"axon"}
    spans = [span for _, span in received if int.from_bytes(span.trace_id, "big") == caller_trace]
    by_id = {s.span_id: s for s in spans}

    def ancestors(span: Any) -> list[Any]:
        found: list[Any] = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            found.append(span)
        return found

    (root,) = [s for s in spans if s.name == "invoke_agent w1"]
    assert attributes(root)["gen_ai.conversation.id"] == "t-8"
    assert attributes(root)["axon.outcome"] == "ok"
    assert attributes(root)["axon.worker.pid"] == pid
    # Under the caller's span: below FastAPI's own HTTP server span (it traces requests once a
    # global SDK provider exists, and axon serve set one up), or directly.
    top = ([root, *ancestors(root)])[-1]
    assert int.from_bytes(top.parent_span_id, "big") == caller_span
    assert [s.name for s in ancestors(root)] in (
        [],  # a FastAPI without its own telemetry
        ["fastapi.endpoint", "POST /v1/agents/{agent_id}/messages"],
    )

    worker = [s for s in spans if root in ancestors(s)]
    assert sorted(s.name for s in worker) == [
        f"chat {WEATHER_NAME_MODEL}",
        f"chat {WEATHER_NAME_MODEL}",
        f"chat {WEATHER_NAME_MODEL}",
        "execute_tool get_lat_lng",
        "execute_tool get_weather",
        f"invoke_agent {WEATHER_NAME}",
    ]
    for span in worker:
        assert attributes(span)["axon.worker.pid"] == pid
