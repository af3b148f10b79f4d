"""The child side of a worker: import one agent and serve runs over the frame protocol.

Life of a worker process::

    take its end of the connection (a socket pair made by the orchestrator) -> send ``hello``
    import the agent (and deps factory)  -> send ``ready``   (or ``error`` + exit 3)
    serve frames until ``shutdown`` (exit 0) or EOF without a shutdown (exit 5)

Runs execute concurrently as tasks of one ``TaskGroup``, at most ``max_concurrency`` at a time.
Heartbeat pings are answered from the same event loop, so a blocked loop stops answering them
and the orchestrator can tell a hung worker from a busy one.

Tracing: a ``run`` frame that carries the orchestrator's trace context runs under it with
pydantic-ai's instrumentation, and the run's finished spans go back in a ``spans`` frame just
before its ``result`` or ``error`` (see :mod:`axon.observability.tracing`). The OpenTelemetry SDK
is imported on the first such run, never in a worker that is not traced.

Cancellation contract: a ``cancel`` frame cancels the run's pydantic-ai ``CancellationToken``;
the run then ends with an ``error`` frame of type ``cancelled``. A run whose code ignores the
cancel is the orchestrator's problem: it kills the whole worker after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
from pydantic_core import to_json

from axon.errors import (
    AgentRunFailed,
    AgentTimeout,
    AxonError,
    Cancelled,
    FrameTooLarge,
    ProtocolError,
    ResultTooLarge,
    StartupFailed,
)
from axon.protocol.channel import ChannelClosed, FrameChannel
from axon.protocol.codec import from_orchestrator
from axon.protocol.frames import (
    PROTOCOL_VERSION,
    Cancel,
    Error,
    Event,
    Frame,
    Hello,
    Ping,
    Pong,
    Ready,
    Result,
    Run,
    RunEvent,
    Shutdown,
    Spans,
)
from axon.protocol.settings import WorkerSettings
from axon.stream import TextDelta, ToolCall, ToolResult
from axon.worker.faults import FaultArms
from axon.worker.prctl import die_with_parent, set_process_name

if TYPE_CHECKING:
    from axon.worker.tracing import WorkerTracing

__all__ = [
    "EXIT_CONNECTION_LOST",
    "EXIT_PROTOCOL",
    "EXIT_STARTUP_FAILED",
    "main",
    "serve_process",
    "warm_up",
]

EXIT_STARTUP_FAILED = 3
"""The agent (or its deps factory) could not be imported or built."""
EXIT_PROTOCOL = 4
"""The orchestrator's byte stream became unreadable (an absurd frame length)."""
EXIT_CONNECTION_LOST = 5
"""The connection closed without a ``shutdown`` frame: not a stop we were asked for."""


_MAX_REMOTE_MESSAGE = 8192
"""Characters of an agent's exception message that are sent (the rest is cut)."""


def _log(message: str) -> None:
    """One line on stderr; the orchestrator tags it with this worker's identity."""
    print(message, file=sys.stderr, flush=True)


def warm_up() -> None:
    """Exercise a run's encoding and decoding once, then run a private agent
    (:func:`_warm_up_runs`): what the root zygote does before it forks (:mod:`axon.worker.zygote`),
    so the state these build on first use is shared by every worker."""
    from pydantic_ai import ModelMessagesTypeAdapter
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

    from axon.protocol.codec import encode_frame, from_worker

    messages = [
        ModelRequest(parts=[UserPromptPart("warm up")]),
        ModelResponse(parts=[TextPart("warm up")]),
    ]
    encoded = ModelMessagesTypeAdapter.dump_json(messages)
    ModelMessagesTypeAdapter.validate_json(encoded)
    to_json({"output": "warm up", "usage": [1, 2]})
    run = Run(id=1, prompt="warm up", history=encoded, conversation_id="c", timeout=1.0)
    from_orchestrator.decode(encode_frame(run)[4:])
    result = Result(id=1, output=b'"warm up"', messages=encoded, run_id="r")
    from_worker.decode(encode_frame(result)[4:])
    asyncio.run(_warm_up_runs(messages))


async def _warm_up_runs(history: list[Any]) -> None:
    """A run and a streamed run of a private agent (``TestModel``, one async tool, no user
    code): what pydantic-ai builds lazily on a first run is then built before the fork. The
    loop is closed afterwards and no thread is left (the zygote checks)."""
    from pydantic_ai import Agent, CancellationToken
    from pydantic_ai.models.test import TestModel

    agent = Agent(TestModel(), name="axon-warm-up")

    @agent.tool_plain
    async def echo(text: str) -> str:  # pyright: ignore[reportUnusedFunction]
        return text

    options: dict[str, Any] = {
        "message_history": history,
        "conversation_id": "warm-up",
        "timeout": 10.0,
    }
    await agent.run("warm up", cancellation_token=CancellationToken(), **options)
    async with agent.run_stream_events(
        "warm up", cancellation_token=CancellationToken(), **options
    ) as events:
        async for _ in events:
            pass


def load_agent(settings: WorkerSettings) -> tuple[Any, Any, Any]:
    """Import the agent (calling it if it is a factory), its model override and deps."""
    from pydantic_ai import Agent
    from pydantic_ai.models import infer_model

    from axon.config import resolve_import_path

    target = resolve_import_path(settings.agent)
    agent = target if isinstance(target, Agent) else target()
    if not isinstance(agent, Agent):
        raise TypeError(
            f"{settings.agent} returned {type(agent).__name__}, not a pydantic_ai.Agent"
        )
    model = infer_model(settings.model) if settings.model else None
    deps = resolve_import_path(settings.deps)() if settings.deps else None
    return agent, model, deps


class WorkerHost:
    """Serves runs of one agent on one frame channel."""

    def __init__(
        self,
        settings: WorkerSettings,
        channel: FrameChannel,
        agent: Any,
        model: Any,
        deps: Any,
        faults: FaultArms | None = None,
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._agent = agent
        self._model = model
        self._deps = deps
        self._tokens: dict[int, Any] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._tracing: WorkerTracing | None = None
        self._capabilities: list[Any] = [] if faults is None else [faults.capability]
        """What every run gets besides the agent's own (fault injection, under chaos)."""

    async def serve(self) -> int:
        """Serve until shutdown or EOF; the process exit code."""
        async with asyncio.TaskGroup() as group:
            while True:
                try:
                    frame = await self._channel.recv()
                except ChannelClosed:
                    self._cancel_all()
                    return EXIT_CONNECTION_LOST
                except FrameTooLarge as exc:
                    await self._reject(exc)
                    self._cancel_all()
                    return EXIT_PROTOCOL
                except ProtocolError as exc:
                    await self._reject(exc)
                    continue
                if isinstance(frame, Shutdown):
                    await self._drain(frame.grace)
                    return 0
                self._dispatch(frame, group)

    def _dispatch(self, frame: Frame, group: asyncio.TaskGroup) -> None:
        match frame:
            case Ping(seq=seq):
                self._send(Pong(seq=seq))
            case Run():
                if frame.id in self._tasks:
                    self._send_error(frame.id, ProtocolError(f"run id {frame.id} already in use"))
                    return
                from pydantic_ai import CancellationToken

                # The token exists before the task first runs: a ``cancel`` read in the same
                # batch of bytes as its ``run`` must not find nothing to cancel.
                token = CancellationToken()
                self._tokens[frame.id] = token
                self._tasks[frame.id] = group.create_task(self._run(frame, token))
            case Cancel(id=run_id):
                token = self._tokens.get(run_id)
                if token is not None:
                    token.cancel()
            case Error():
                # The orchestrator rejected a frame of ours: log it, never answer an error
                # with an error.
                with contextlib.suppress(ValueError):
                    _log(f"orchestrator reported: {frame.payload().get('message')}")
            case _:
                self._send_error(None, ProtocolError(f"unexpected frame {type(frame).__name__}"))

    async def _run(self, frame: Run, token: Any) -> None:
        from pydantic_ai import ModelMessagesTypeAdapter, RunCancelled, RunTimedOut

        spans: list[Any] | None = None
        answer: Result | Error | None = None
        try:
            with contextlib.ExitStack() as traced:
                capabilities = list(self._capabilities)
                kwargs: dict[str, Any] = {
                    "conversation_id": frame.conversation_id,
                    "cancellation_token": token,
                    "timeout": frame.timeout,
                    "deps": self._deps,
                    "capabilities": capabilities,
                }
                if frame.trace is not None:
                    tracing = self._worker_tracing()
                    spans = traced.enter_context(tracing.run(frame.trace))
                    capabilities.append(tracing.capability)
                if self._model is not None:
                    kwargs["model"] = self._model
                async with self._slots:
                    kwargs["message_history"] = ModelMessagesTypeAdapter.validate_json(
                        frame.history
                    )
                    if frame.stream:
                        result = await self._run_streamed(frame, kwargs)
                    else:
                        result = await self._agent.run(frame.prompt, **kwargs)
            answer = Result(
                id=frame.id,
                output=to_json(result.output),
                messages=ModelMessagesTypeAdapter.dump_json(result.new_messages()),
                run_id=result.run_id,
                usage=to_json(result.usage),
            )
        except RunTimedOut:  # a subclass of RunCancelled: catch it first
            err = AgentTimeout(self._settings.agent_id, timeout=frame.timeout or 0.0)
            answer = Error.of(frame.id, err.to_dict())
        except RunCancelled:
            answer = Error.of(frame.id, Cancelled().to_dict())
        except ChannelClosed:
            pass
        except FrameTooLarge as exc:  # one event of the stream was over the limit
            answer = Error.of(frame.id, self._too_large(exc).to_dict())
        except Exception as exc:
            answer = Error.of(frame.id, self._run_failed(exc).to_dict())
        finally:
            self._tokens.pop(frame.id, None)
            self._tasks.pop(frame.id, None)
        if answer is not None:
            if spans:
                self._send_spans(frame.id, spans)
            self._answer(frame.id, answer)

    def _answer(self, run_id: int, answer: Result | Error) -> None:
        """Send how run ``run_id`` ended. A result over ``max_result_bytes`` fails the run alone
        (``ResultTooLarge``): nothing of what is sent for one run can end the others."""
        try:
            self._channel.send_nowait(answer)
        except ChannelClosed:
            pass
        except FrameTooLarge as exc:
            self._send(Error.of(run_id, self._too_large(exc).to_dict()))

    def _too_large(self, exc: FrameTooLarge) -> ResultTooLarge:
        return ResultTooLarge(self._settings.agent_id, size=exc.size, limit=exc.limit)

    def _run_failed(self, exc: Exception) -> AgentRunFailed:
        message = str(exc)
        if len(message) > _MAX_REMOTE_MESSAGE:
            message = f"{message[:_MAX_REMOTE_MESSAGE]}... [{len(message)} characters]"
        return AgentRunFailed(
            self._settings.agent_id, remote_type=type(exc).__name__, remote_message=message
        )

    def _worker_tracing(self) -> WorkerTracing:
        if self._tracing is None:
            from axon.worker.tracing import WorkerTracing

            self._tracing = WorkerTracing()
        return self._tracing

    def _send_spans(self, run_id: int, spans: list[Any]) -> None:
        """The run's finished spans, before its answer. Spans that cannot be sent (too large
        for one frame, or an attribute msgpack cannot carry) are dropped: the run is not."""
        from axon.worker.tracing import span_records

        try:
            frame = Spans.of(run_id, span_records(spans))
            self._channel.send_nowait(frame)
        except ChannelClosed:
            pass
        except (FrameTooLarge, TypeError, OverflowError, ValueError) as exc:
            _log(f"the spans of run {run_id} were dropped: {exc}")

    async def _run_streamed(self, frame: Run, kwargs: dict[str, Any]) -> Any:
        from pydantic_ai import (
            AgentRunResultEvent,
            FunctionToolCallEvent,
            FunctionToolResultEvent,
            PartDeltaEvent,
            PartStartEvent,
            TextPart,
            TextPartDelta,
        )

        result: Any = None
        async with self._agent.run_stream_events(frame.prompt, **kwargs) as events:
            async for event in events:
                if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    self._event(frame.id, TextDelta(event.delta.content_delta))
                elif (
                    isinstance(event, PartStartEvent)
                    and isinstance(event.part, TextPart)
                    and event.part.content
                ):
                    self._event(frame.id, TextDelta(event.part.content))
                elif isinstance(event, FunctionToolCallEvent):
                    part = event.part
                    self._event(
                        frame.id, ToolCall(part.tool_name, _tool_args(part), part.tool_call_id)
                    )
                elif isinstance(event, FunctionToolResultEvent):
                    part = event.part
                    returned = ToolResult(part.tool_name, to_json(part.content), part.tool_call_id)
                    self._event(frame.id, returned)
                elif isinstance(event, AgentRunResultEvent):
                    result = event.result
        if result is None:
            raise RuntimeError("the agent's event stream ended without a result")
        return result

    def _event(self, run_id: int, event: RunEvent) -> None:
        """Send one event of a streamed run; ``FrameTooLarge`` (its run fails) if it is over
        ``max_result_bytes``."""
        with contextlib.suppress(ChannelClosed):
            self._channel.send_nowait(Event(id=run_id, event=event))

    def _send(self, frame: Frame) -> None:
        with contextlib.suppress(ChannelClosed):
            self._channel.send_nowait(frame)

    def _send_error(self, run_id: int | None, err: AxonError) -> None:
        self._send(Error.of(run_id, err.to_dict()))

    async def _reject(self, exc: ProtocolError) -> None:
        _log(f"protocol error: {exc.message}")
        with contextlib.suppress(ChannelClosed):
            await self._channel.send(Error.of(None, exc.to_dict()))

    async def _drain(self, grace: float) -> None:
        """Let in-flight runs finish for ``grace`` seconds, then cancel what is left."""
        pending = list(self._tasks.values())
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        with contextlib.suppress(ChannelClosed):
            await self._channel.drain()

    def _cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()


def _tool_args(part: Any) -> bytes:
    """A tool call's arguments as JSON: an object when they parse, else as the model sent
    them."""
    try:
        return to_json(part.args_as_dict())
    except Exception:
        return to_json(part.args)


async def _main_async(fd: int, settings: WorkerSettings) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    channel = FrameChannel(reader, writer, from_orchestrator, max_send=settings.max_result_bytes)
    await channel.send(Hello(protocol=PROTOCOL_VERSION, pid=os.getpid()))
    try:
        agent, model, deps = load_agent(settings)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"[:_MAX_REMOTE_MESSAGE]
        _log(f"start-up failed: {message}")
        with contextlib.suppress(ChannelClosed):
            await channel.send(Error.of(None, StartupFailed(message).to_dict()))
        return EXIT_STARTUP_FAILED
    # Before ``ready``: a fault signal sent to a ready worker must find its handler.
    faults = FaultArms.install(asyncio.get_running_loop())
    await channel.send(
        Ready(
            protocol=PROTOCOL_VERSION,
            pid=os.getpid(),
            agent_name=getattr(agent, "name", None),
            max_concurrency=settings.max_concurrency,
        )
    )
    code = await WorkerHost(settings, channel, agent, model, deps, faults).serve()
    await channel.aclose()
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m axon.worker FD SETTINGS_JSON`` (a cold start); ``FD`` is the
    worker's end of its connection to the orchestrator, inherited."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[0].isdigit():
        _log("usage: python -m axon.worker FD SETTINGS_JSON")
        return 2
    die_with_parent()
    serve_process(int(args[0]), msgspec.json.decode(args[1], type=WorkerSettings))


def serve_process(fd: int, settings: WorkerSettings) -> NoReturn:
    """Be this worker until it is done, then exit the process: the life of a worker process
    after it started, cold (:func:`main`) or forked by a zygote (:mod:`axon.worker.zygote`)."""
    set_process_name(f"axon-w:{settings.agent_id}")
    # The orchestrator stops us with a shutdown frame; SIGINT from a terminal's Ctrl-C must not
    # kill workers before the orchestrator has drained them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop
    except ImportError:
        code = asyncio.run(_main_async(fd, settings))
    else:
        code = uvloop.run(_main_async(fd, settings))
    # Everything the orchestrator needs was sent; skip the interpreter's slow teardown of a
    # large heap (it can take a second) so a stopped worker is gone at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
