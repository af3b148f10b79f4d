"""An offline agent that attacks the worker boundary from inside its own worker, on demand.

Where :mod:`axon.examples.misbehaving` crashes, hangs and raises like a buggy agent, this agent
behaves like a *hostile* one: its model function reaches the worker's own connection to the
orchestrator and writes frames on it directly, stops reading it, prints huge lines or returns
huge results. It is how the tests, ``axon chaos --hostile-every`` and
``benchmarks/bench_hostile.py`` check that a worker is untrusted input: whatever it sends or
fails to send, the orchestrator stays bounded, other agents keep serving, and this worker is
killed and restarted (docs/threat-model.md).

It finds the connection by looking for the worker's frame channel among live objects, so it
works with any worker of this protocol family and needs nothing from Axon's worker but what a
malicious agent could find too. Run it only in tests.

The command is the last user prompt of the run, stripped. Prompt grammar (exact):

``event-bomb:N``
    one text event frame for a run id the orchestrator never used, whose ``data`` is a map
    holding ``N`` empty msgpack arrays (``N`` bytes on the wire, about 64 ``N`` bytes as Python
    lists), then answers ``bombed N``.
``flood:KIND:N``
    ``N`` frames of ``KIND``: ``ready`` (a repeated ``ready``), ``pong`` (a ``pong`` for a ping
    never sent) or ``invalid`` (a sound length with an undecodable payload), then answers
    ``flooded KIND N``.
``deaf:S``
    stops reading its connection, then for ``S`` seconds writes undecodable frames and
    unsolicited ``pong`` frames as fast as it can (the orchestrator answers each undecodable
    frame, into a connection nobody reads), then answers ``deaf S``.
``mute:S``
    stops reading its connection and writes nothing (its event loop stays free), for ``S``
    seconds, then answers ``mute S``: the orchestrator's frames pile up unread.
``sleep:S``
    ``await asyncio.sleep(S)``, then answers ``slept S`` (a well-behaved slow run, to have one
    in flight beside an attack).
``line:N`` / ``line:N:M``
    prints one line of ``N`` characters on stdout, then ``M`` (default 0) short lines, then
    answers ``printed N M``.
``big:N``
    answers with a text of ``N`` characters (``"x" * N``).
``forge:KIND``
    sends, for its own run, a ``result`` frame whose messages are not a pydantic-ai message list
    (``KIND`` ``object``: ``{"x": 1}``; ``inject``: bytes crafted to escape the JSON array they
    are stored in; ``kind``: an array of objects that are not messages), then answers
    ``forged KIND`` (a second result for the same run, which the orchestrator ignores).
anything else
    answers ``echo: <prompt>``.

``N`` and ``M`` are non-negative integers, ``S`` non-negative seconds. With
``AXON_EXAMPLE_IMPORT_LINES=N`` in the agent's ``env``, importing this module prints ``N`` lines
on stdout (a chatty module: its agent zygote prints them). Exports
``hostile_agent`` (a module-level ``Agent[None, str]`` named ``"hostile"``) and
``make_hostile_agent()``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import struct
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from axon.examples._scripting import current_turn, seconds_arg

__all__ = ["IMPORT_LINES_ENV_VAR", "hostile_agent", "make_hostile_agent"]

IMPORT_LINES_ENV_VAR = "AXON_EXAMPLE_IMPORT_LINES"
"""Environment variable: lines importing this module prints on stdout."""
_UNKNOWN_RUN = 2**31 - 1
_DEAF_BATCH = 64
_FORGED = {
    "object": b'{"x": 1}',
    # Stored runs are JSON arrays joined by their contents: this one closes the history array
    # early and adds a key of its own to whatever object the history is embedded in.
    "inject": b'[{"kind": "response", "parts": []}], "injected": {"a": [{"b": 1}]',
    "kind": b'[{"kind": "request"}, {"kind": "gossip", "parts": []}]',
}
_encoder = msgspec.msgpack.Encoder()

for _line in range(int(os.environ.get(IMPORT_LINES_ENV_VAR) or 0)):
    print(f"hostile: import line {_line}", flush=True)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _msgpack(**fields: Any) -> bytes:
    return _frame(_encoder.encode(fields))


def _live(class_name: str) -> Any:
    """The one live object of the worker whose class is called ``class_name``."""
    for obj in gc.get_objects():
        if type(obj).__name__ == class_name:
            return obj
    raise RuntimeError(f"no {class_name} in this process: not running in an Axon worker?")


def _channel_writer() -> Any:
    """The stream writer of the worker's connection to the orchestrator."""
    return _live("FrameChannel")._writer


def _own_run_id() -> int:
    """The wire id of the run this code runs in (the newest run in flight)."""
    host = _live("WorkerHost")
    current = asyncio.current_task()
    ids = [run_id for run_id, task in host._tasks.items() if task is current]
    return ids[0] if ids else max(host._tasks)


def _event_bomb(count: int) -> None:
    # A text event of a run that does not exist, whose "data" is {"x": [[], [], ...]}: a map
    # of one key, then an array header (0xdd + 4-byte length) and one 0x90 byte per empty
    # array. Protocol 1 had an untyped "data" map on its event frame (decoded in full);
    # protocol 2's text_delta frame has no such field.
    if _protocol() == 1:
        fields: dict[str, Any] = {"kind": "event", "id": _UNKNOWN_RUN, "type": "text_delta"}
    else:
        fields = {"kind": "text_delta", "id": _UNKNOWN_RUN, "text": ""}
    head = _encoder.encode(fields)
    bomb = b"\x81" + _encoder.encode("x") + b"\xdd" + struct.pack(">I", count) + b"\x90" * count
    body = bytes([head[0] + 1]) + head[1:] + _encoder.encode("data") + bomb
    _channel_writer().write(_frame(body))


def _flood(kind: str, count: int) -> None:
    if kind == "ready":
        frame = _msgpack(kind="ready", protocol=_protocol(), pid=0, max_concurrency=1)
    elif kind == "pong":
        frame = _msgpack(kind="pong", seq=0)
    else:
        frame = _frame(b"\xc1" * 16)  # 0xc1 is never used by msgpack
    writer = _channel_writer()
    for _ in range(count):
        writer.write(frame)


def _protocol() -> int:
    from axon.protocol.frames import PROTOCOL_VERSION

    return PROTOCOL_VERSION


async def _mute(seconds: float) -> None:
    _live("FrameChannel")._reader._transport.pause_reading()
    await asyncio.sleep(seconds)


async def _deaf(seconds: float) -> None:
    channel = _live("FrameChannel")
    channel._reader._transport.pause_reading()
    invalid = _frame(b"\xc1" * 16)
    pong = _msgpack(kind="pong", seq=0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(_DEAF_BATCH):
            channel._writer.write(invalid)
            channel._writer.write(pong)
        await asyncio.sleep(0)


def _forge(kind: str) -> None:
    messages = _FORGED[kind]
    frame = _msgpack(kind="result", id=_own_run_id(), output=b'"forged"', messages=messages)
    _channel_writer().write(frame)


def _count(text: str) -> int | None:
    return int(text) if text.isdigit() else None


async def _respond(prompt: str) -> str:
    command, _, arg = prompt.partition(":")
    if command == "event-bomb" and (n := _count(arg)) is not None:
        _event_bomb(n)
        return f"bombed {n}"
    if command == "flood":
        kind, _, n_text = arg.partition(":")
        if kind in ("ready", "pong", "invalid") and (n := _count(n_text)) is not None:
            _flood(kind, n)
            return f"flooded {kind} {n}"
    if command == "deaf" and (seconds := seconds_arg(arg)) is not None:
        await _deaf(seconds)
        return f"deaf {arg}"
    if command == "mute" and (seconds := seconds_arg(arg)) is not None:
        await _mute(seconds)
        return f"mute {arg}"
    if command == "sleep" and (seconds := seconds_arg(arg)) is not None:
        await asyncio.sleep(seconds)
        return f"slept {arg}"
    if command == "line":
        n_text, _, m_text = arg.partition(":")
        n, m = _count(n_text), _count(m_text or "0")
        if n is not None and m is not None:
            print("L" * n, flush=True)
            for i in range(m):
                print(f"short line {i}", flush=True)
            sys.stdout.flush()
            return f"printed {n} {m}"
    if command == "big" and (n := _count(arg)) is not None:
        return "x" * n
    if command == "forge" and arg in _FORGED:
        _forge(arg)
        return f"forged {arg}"
    return f"echo: {prompt}"


async def _model_function(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart(await _respond(_prompt(messages)))])


async def _stream_function(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield await _respond(_prompt(messages))  # the whole answer as one chunk


def _prompt(messages: Sequence[ModelMessage]) -> str:
    return current_turn(messages)[0].strip()


def make_hostile_agent() -> Agent[None, str]:
    """Build a fresh, fully offline hostile agent (see the module docstring)."""
    return Agent(
        FunctionModel(_model_function, stream_function=_stream_function, model_name="axon-hostile"),
        name="hostile",
        output_type=str,
        deps_type=type(None),
    )


hostile_agent: Agent[None, str] = make_hostile_agent()
