"""An offline agent whose prompt triggers faults on demand, for testing Axon's supervision.

Every fault happens inside the model function (or a tool it calls), so it strikes whatever
process runs the agent, for plain (``agent.run``) and streamed runs alike. The command is the
last user prompt of the run, stripped of surrounding whitespace. Prompt grammar (exact):

``crash``
    ``os._exit(13)``.
``crash:exit:N``
    ``os._exit(N)`` (``N`` an integer).
``crash:segv``
    ``SIGSEGV`` to the current process (falls back to ``os._exit(139)`` if it survives).
``crash:kill``
    ``SIGKILL`` to the current process (falls back to ``os._exit(137)`` if it survives).
``hang:S``
    blocks the event loop with ``time.sleep(S)`` (a hung worker), then answers ``hung S``.
``sleep:S``
    ``await asyncio.sleep(S)`` (slow but well-behaved: cancellation interrupts it), then answers
    ``slept S``.
``ignore-cancel:S``
    sleeps ``S`` seconds in short ``asyncio.sleep`` steps, catching and swallowing every
    ``asyncio.CancelledError`` until the ``S`` seconds are up (the loop stays responsive, but
    cancelling the run has no effect before then), then answers ``ignored-cancel S``. A run
    cancelled meanwhile usually still ends with ``CancelledError`` once the ``S`` seconds are up
    (pydantic-ai notices the pending cancellation at its next await).
``raise:MESSAGE``
    the model calls the tool ``explode(message=MESSAGE)``, which raises
    ``RuntimeError(MESSAGE)``; the run raises that error.
``stream:N:D``
    answers ``N`` chunks ``"chunk-0 " .. "chunk-{N-1} "``; streamed, each chunk is preceded by
    ``await asyncio.sleep(D)``; not streamed, sleeps ``N*D`` seconds then returns the whole text.
``stream-crash:N``
    streamed: yields the ``N`` chunks ``"chunk-0 " .. "chunk-{N-1} "`` (each preceded by a
    0.05 s pause, so a host can forward them), pauses 0.05 s, then ``os._exit(14)``; not
    streamed: ``os._exit(14)`` at once.
``tool``
    the model calls the tool ``echo_tool(text="tool")`` once, then answers with its result,
    ``echo_tool: tool``.
anything else (including a malformed command above, e.g. ``sleep:abc``)
    answers ``echo: <prompt>``.

``S`` and ``D`` are non-negative floats of seconds, ``N`` integers (``N >= 1`` for streams);
the ``S`` in an answer is echoed as written in the prompt.

Exports: ``misbehaving_agent`` (module-level ``Agent[None, str]`` named ``"misbehaving"``),
``make_misbehaving_agent()``, and start-up failure factories for worker agent specs:
``crash_at_startup()`` (``os._exit(3)``), ``raise_at_startup()`` (raises
``RuntimeError("simulated start-up failure")``), ``slow_startup()`` (blocks
``AXON_STARTUP_DELAY`` seconds first) and ``flaky_startup()`` (fails while the
counter file named by ``AXON_STARTUP_FAILURES_FILE`` holds a positive integer, see its docstring).

With ``AXON_EXAMPLE_IMPORT_THREAD=1`` in the agent's ``env``, importing this module prints a line
on stderr and starts a thread: the fork server then refuses to fork the agent, whose workers
start cold (docs/fork-server.md). With ``AXON_EXAMPLE_IMPORT_DELAY=S``, importing it takes ``S``
seconds more (a slow agent module).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from typing import NoReturn

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCalls, FunctionModel

from axon.examples._scripting import (
    current_turn,
    seconds_arg,
    step_response,
    tool_call,
    tool_call_delta,
)

if sys.platform != "win32":
    import fcntl

__all__ = [
    "IMPORT_DELAY_ENV_VAR",
    "IMPORT_THREAD_ENV_VAR",
    "STARTUP_FAILURES_ENV_VAR",
    "crash_at_startup",
    "echo_tool",
    "explode",
    "flaky_startup",
    "make_misbehaving_agent",
    "misbehaving_agent",
    "raise_at_startup",
]

STARTUP_FAILURES_ENV_VAR = "AXON_STARTUP_FAILURES_FILE"
"""Environment variable naming the counter file used by :func:`flaky_startup`."""
IMPORT_THREAD_ENV_VAR = "AXON_EXAMPLE_IMPORT_THREAD"
"""Environment variable that makes importing this module start a thread (see the docstring)."""

IMPORT_DELAY_ENV_VAR = "AXON_EXAMPLE_IMPORT_DELAY"
"""Environment variable: seconds importing this module takes (a slow agent module)."""

if os.environ.get(IMPORT_DELAY_ENV_VAR):
    time.sleep(float(os.environ[IMPORT_DELAY_ENV_VAR]))
if os.environ.get(IMPORT_THREAD_ENV_VAR):
    print("misbehaving: starting a thread at import", file=sys.stderr, flush=True)
    threading.Thread(target=threading.Event().wait, name="import-time-thread", daemon=True).start()

_STREAM_CRASH_PAUSE = 0.05
_IGNORE_CANCEL_STEP = 0.05


# --------------------------------------------------------------------------------------- tools


def explode(message: str) -> str:
    """Raise ``RuntimeError(message)``: a tool that fails.

    Args:
        message: The error message.
    """
    raise RuntimeError(message)


def echo_tool(text: str) -> str:
    """Echo the text back.

    Args:
        text: The text to echo.
    """
    return f"echo_tool: {text}"


# ------------------------------------------------------------------------------------ faults


def _exit(code: int) -> NoReturn:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _kill_self(signum: signal.Signals, fallback_code: int) -> NoReturn:
    with contextlib.suppress(ValueError, OSError):  # ValueError: not the main thread
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(1.0)  # the signal is normally fatal before this returns
    _exit(fallback_code)


async def _ignore_cancel_sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            await asyncio.sleep(min(_IGNORE_CANCEL_STEP, remaining))
        except asyncio.CancelledError:
            continue  # deliberately misbehaving: swallow the cancellation


# ------------------------------------------------------------------------------- model logic


@dataclass(frozen=True)
class _Turn:
    prompt: str
    returns: list[ToolReturnPart]


def _current_turn(messages: Sequence[ModelMessage]) -> _Turn:
    prompt, returns = current_turn(messages)
    return _Turn(prompt.strip(), returns)


def _count(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 1 else None


def _chunks(n: int) -> list[str]:
    return [f"chunk-{i} " for i in range(n)]


async def _respond(messages: Sequence[ModelMessage], *, streaming: bool) -> ToolCallPart | str:
    """Run the fault (if any) and return the next step: a tool call or the answer text.

    Streamed chunking (``stream:`` / ``stream-crash:``) is left to the stream function.
    """
    turn = _current_turn(messages)
    prompt = turn.prompt
    command, _, arg = prompt.partition(":")

    if prompt == "crash":
        _exit(13)
    if prompt == "crash:segv":
        _kill_self(signal.SIGSEGV, 139)
    if prompt == "crash:kill":
        _kill_self(signal.SIGKILL, 137)
    if command == "crash" and arg.startswith("exit:"):
        code = arg.removeprefix("exit:")
        with contextlib.suppress(ValueError):
            _exit(int(code))

    if command == "hang" and (seconds := seconds_arg(arg)) is not None:
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the event loop is the point
        return f"hung {arg}"
    if command == "sleep" and (seconds := seconds_arg(arg)) is not None:
        await asyncio.sleep(seconds)
        return f"slept {arg}"
    if command == "ignore-cancel" and (seconds := seconds_arg(arg)) is not None:
        await _ignore_cancel_sleep(seconds)
        return f"ignored-cancel {arg}"

    if command == "raise" and arg:
        result = next((r for r in turn.returns if r.tool_name == "explode"), None)
        if result is None:
            return tool_call("explode", {"message": arg})
        return f"explode returned: {result.model_response_str()}"  # only if the error was caught

    if prompt == "tool":
        result = next((r for r in turn.returns if r.tool_name == "echo_tool"), None)
        if result is None:
            return tool_call("echo_tool", {"text": prompt})
        return result.model_response_str()

    if command == "stream":
        n_text, _, d_text = arg.partition(":")
        n, delay = _count(n_text), seconds_arg(d_text)
        if n is not None and delay is not None:
            if not streaming:
                await asyncio.sleep(n * delay)
            return "".join(_chunks(n))
    if command == "stream-crash" and _count(arg) is not None and not streaming:
        _exit(14)

    return f"echo: {prompt}"


async def _model_function(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return step_response(await _respond(messages, streaming=False))


async def _stream_function(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    prompt = _current_turn(messages).prompt
    command, _, arg = prompt.partition(":")

    if command == "stream-crash" and (n := _count(arg)) is not None:
        for chunk in _chunks(n):
            await asyncio.sleep(_STREAM_CRASH_PAUSE)
            yield chunk
        await asyncio.sleep(_STREAM_CRASH_PAUSE)
        _exit(14)

    if command == "stream":
        n_text, _, d_text = arg.partition(":")
        n, delay = _count(n_text), seconds_arg(d_text)
        if n is not None and delay is not None:
            for chunk in _chunks(n):
                await asyncio.sleep(delay)
                yield chunk
            return

    step = await _respond(messages, streaming=True)
    if isinstance(step, ToolCallPart):
        yield tool_call_delta(step)
    else:
        yield step


# ------------------------------------------------------------------------------------- agent


def make_misbehaving_agent() -> Agent[None, str]:
    """Build a fresh, fully offline misbehaving agent (see the module docstring)."""
    return Agent(
        FunctionModel(
            _model_function, stream_function=_stream_function, model_name="axon-misbehaving"
        ),
        name="misbehaving",
        output_type=str,
        deps_type=type(None),
        tools=[explode, echo_tool],
    )


misbehaving_agent: Agent[None, str] = make_misbehaving_agent()


# -------------------------------------------------------------------- start-up failure factories


def crash_at_startup() -> NoReturn:
    """Agent factory that kills its process with ``os._exit(3)``."""
    _exit(3)


def raise_at_startup() -> NoReturn:
    """Agent factory that raises ``RuntimeError("simulated start-up failure")``."""
    raise RuntimeError("simulated start-up failure")


@contextlib.contextmanager
def _locked(path: str) -> Generator[None, None, None]:
    """Serialise concurrent workers on ``<path>.lock`` (POSIX only; a no-op elsewhere)."""
    if sys.platform == "win32":
        yield
        return
    with open(f"{path}.lock", "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def flaky_startup() -> Agent[None, str]:
    """Agent factory that fails a set number of times before succeeding.

    Reads the path in ``AXON_STARTUP_FAILURES_FILE``. If it is set and the file holds an integer
    ``n > 0``, the file is rewritten atomically (temporary file + ``os.replace``) with ``n - 1``
    and ``RuntimeError("simulated start-up failure (n left)")`` is raised, ``n`` being the value
    read. Otherwise (unset, missing file, not an integer, ``n <= 0``) it returns
    :func:`make_misbehaving_agent`. Concurrent callers are serialised with a ``<path>.lock`` file.
    """
    path = os.environ.get(STARTUP_FAILURES_ENV_VAR)
    if path:
        with _locked(path):
            try:
                with open(path) as f:
                    remaining = int(f.read().strip())
            except (OSError, ValueError):
                remaining = 0
            if remaining > 0:
                directory = os.path.dirname(os.path.abspath(path))
                fd, tmp_path = tempfile.mkstemp(prefix=".startup-failures-", dir=directory)
                try:
                    with os.fdopen(fd, "w") as tmp:
                        tmp.write(f"{remaining - 1}\n")
                    os.replace(tmp_path, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp_path)
                    raise
                raise RuntimeError(f"simulated start-up failure ({remaining} left)")
    return make_misbehaving_agent()


def slow_startup() -> Agent[None, str]:
    """Agent factory that blocks for ``AXON_STARTUP_DELAY`` seconds (default 30) before
    returning :func:`make_misbehaving_agent`: a worker that is slow to become ready."""
    time.sleep(float(os.environ.get("AXON_STARTUP_DELAY", "30")))
    return make_misbehaving_agent()
