"""Guarantee 5, bad input: malformed requests, unknown agents, oversized prompts, invalid
conversation ids and malformed frames between orchestrator and worker get a clear typed error;
nothing crashes, nothing is lost.

Real worker processes running the misbehaving example agent.
"""

from __future__ import annotations

import logging
import math
import struct
from typing import Any

import msgspec
import pytest

from axon import AgentNotFound, AgentSpec, Axon, InvalidRequest
from axon.pool.process import WorkerProcess
from axon.testing import user_prompts, wait_until_serving, worker_pids
from axon.worker.host import EXIT_PROTOCOL

from ..conftest import MISBEHAVING, StartAxon, pid_alive


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Any:
    """caplog seeing every ``axon`` event, even if something turned propagation off."""
    monkeypatch.setattr(logging.getLogger("axon"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="axon")
    return caplog


def events(caplog: pytest.LogCaptureFixture, name: str, **match: Any) -> list[dict[str, Any]]:
    found = []
    for record in caplog.records:
        fields: dict[str, Any] = getattr(record, "fields", {})
        if getattr(record, "event", None) == name and all(
            fields.get(k) == v for k, v in match.items()
        ):
            found.append(fields)
    return found


async def serving_with_history(start_axon: StartAxon, **spec: Any) -> Axon:
    """One agent ``m`` (plus ``other``) with one committed turn in conversation ``c``."""
    axon = await start_axon(
        AgentSpec(id="m", agent=MISBEHAVING, **spec), AgentSpec(id="other", agent=MISBEHAVING)
    )
    assert (await axon.send_message("m", "first", conversation_id="c")).output == "echo: first"
    return axon


async def assert_untouched_and_serving(
    axon: Axon, caplog: pytest.LogCaptureFixture, pids: list[int | None], routed_before: int
) -> None:
    """No rejected request reached a worker, the history is as it was, the agent serves."""
    assert len(events(caplog, "run.routed", agent="m")) == routed_before
    assert axon.agent("m").in_flight == 0
    assert worker_pids(axon, "m") == pids
    assert user_prompts(await axon.history("c")) == ["first"]
    assert (await axon.send_message("m", "second", conversation_id="c")).output == "echo: second"
    assert user_prompts(await axon.history("c")) == ["first", "second"]


# -- requests -----------------------------------------------------------------------------------


async def test_unknown_agent_is_agent_not_found(start_axon: StartAxon, log: Any) -> None:
    axon = await serving_with_history(start_axon)
    for agent_id in ("nobody", "", "M", "m ", "../m"):
        with pytest.raises(AgentNotFound) as info:
            await axon.send_message(agent_id, "hello", conversation_id="c")
        assert info.value.agent_id == agent_id
        with pytest.raises(AgentNotFound):
            async for _ in axon.stream_message(agent_id, "hello", conversation_id="c"):
                pass  # pragma: no cover
        with pytest.raises(AgentNotFound):
            axon.agent(agent_id)
    with pytest.raises(AgentNotFound):
        await axon.send_message(None, "hello")  # type: ignore[arg-type]
    assert user_prompts(await axon.history("c")) == ["first"]
    assert (await axon.send_message("other", "still fine")).output == "echo: still fine"


async def test_bad_prompts_are_invalid_request(start_axon: StartAxon, log: Any) -> None:
    axon = await serving_with_history(start_axon, max_prompt_chars=100)
    pids = worker_pids(axon, "m")
    routed = len(events(log, "run.routed", agent="m"))
    bad: list[object] = ["", " ", " \t\n\r ", "x" * 101, "é" * 101, None, 42, b"x", ["hi"], 1.5]
    for prompt in bad:
        with pytest.raises(InvalidRequest) as info:
            await axon.send_message("m", prompt, conversation_id="c")  # type: ignore[arg-type]
        assert info.value.field == "prompt", prompt
        with pytest.raises(InvalidRequest):
            async for _ in axon.stream_message("m", prompt, conversation_id="c"):  # type: ignore[arg-type]
                pass  # pragma: no cover
    with pytest.raises(InvalidRequest) as info:
        await axon.send_message("m", "x" * 101)
    assert "100" in info.value.message  # says what the limit is
    await assert_untouched_and_serving(axon, log, pids, routed)
    # exactly at the limit is fine
    assert (await axon.send_message("m", "y" * 100)).output == "echo: " + "y" * 100


async def test_bad_conversation_ids_are_invalid_request(start_axon: StartAxon, log: Any) -> None:
    axon = await serving_with_history(start_axon)
    pids = worker_pids(axon, "m")
    routed = len(events(log, "run.routed", agent="m"))
    bad: list[object] = ["", "a b", "x" * 200, "x" * 129, "../etc", "/etc", "-c", "c\n", 42, b"c"]
    for cid in bad:
        with pytest.raises(InvalidRequest) as info:
            await axon.send_message("m", "hello", conversation_id=cid)  # type: ignore[arg-type]
        assert info.value.field == "conversation_id", cid
        with pytest.raises(InvalidRequest) as info:
            await axon.history(cid)  # type: ignore[arg-type]
        assert info.value.field == "conversation_id", cid
        with pytest.raises(InvalidRequest):
            await axon.delete_conversation(cid)  # type: ignore[arg-type]
    await assert_untouched_and_serving(axon, log, pids, routed)
    # the longest valid id and every allowed character work
    for cid in ("x" * 128, "A9_.:-z"):
        await axon.send_message("m", "hello", conversation_id=cid)
        assert user_prompts(await axon.history(cid)) == ["hello"]


async def test_bad_timeouts_are_invalid_request(start_axon: StartAxon, log: Any) -> None:
    axon = await serving_with_history(start_axon, max_timeout=100)
    pids = worker_pids(axon, "m")
    routed = len(events(log, "run.routed", agent="m"))
    bad: list[object] = [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, 100.5, "5", True, False]
    for timeout in bad:
        with pytest.raises(InvalidRequest) as info:
            await axon.send_message("m", "hello", conversation_id="c", timeout=timeout)  # type: ignore[arg-type]
        assert info.value.field == "timeout", timeout
    await assert_untouched_and_serving(axon, log, pids, routed)
    assert (await axon.send_message("m", "int ok", timeout=100)).output == "echo: int ok"


# -- malformed frames to a worker ------------------------------------------------------------------


def first_worker(axon: Axon, agent_id: str) -> WorkerProcess:
    worker = axon.hosted(agent_id).workers()[0]
    assert isinstance(worker, WorkerProcess)
    return worker


def framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


GARBAGE = {
    "not-msgpack": framed(b"\xc1\xc1\xc1 definitely not msgpack"),
    "empty-payload": framed(b""),
    "unknown-kind": framed(msgspec.msgpack.encode({"kind": "bogus", "id": 1})),
    "wrong-field-types": framed(msgspec.msgpack.encode({"kind": "run", "id": "1", "prompt": 5})),
    "missing-fields": framed(msgspec.msgpack.encode({"kind": "cancel"})),
    "not-a-map": framed(msgspec.msgpack.encode(["run", 1, "hi"])),
    "nested-too-deep": framed(
        b"\x83\xa4kind\xa6result\xa2id\x01\xa6output" + b"\x91" * 200_000 + b"\x01"
    ),
    "frame-for-the-other-side": framed(
        msgspec.msgpack.encode({"kind": "result", "id": 1, "output": "x", "messages": b"[]"})
    ),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_worker_rejects_a_malformed_frame_and_keeps_serving(
    start_axon: StartAxon, log: Any, garbage: bytes
) -> None:
    axon = await serving_with_history(start_axon)
    worker = first_worker(axon, "m")
    pid = worker.pid
    assert worker._channel is not None  # pyright: ignore[reportPrivateUsage]
    assert not events(log, "protocol.error")

    worker._channel.write_raw(garbage)  # pyright: ignore[reportPrivateUsage]
    # Frames are answered in order, so by the time the next run's result is in, the worker's
    # error frame for the garbage has been received and reported.
    assert (await axon.send_message("m", "second", conversation_id="c")).output == "echo: second"
    reported = events(log, "protocol.error", agent="m", pid=pid)
    assert len(reported) == 1, reported
    assert "worker reported" in reported[0]["message"]

    assert worker_pids(axon, "m") == [pid]
    assert axon.agent("m").restarts == 0
    assert pid is not None
    assert pid_alive(pid)
    assert user_prompts(await axon.history("c")) == ["first", "second"]
    assert (await axon.send_message("other", "unaffected")).output == "echo: unaffected"


async def test_several_malformed_frames_in_a_row_leave_the_stream_in_sync(
    start_axon: StartAxon, log: Any
) -> None:
    axon = await serving_with_history(start_axon)
    worker = first_worker(axon, "m")
    assert worker._channel is not None  # pyright: ignore[reportPrivateUsage]
    worker._channel.write_raw(b"".join(GARBAGE.values()))  # pyright: ignore[reportPrivateUsage]
    assert (await axon.send_message("m", "second", conversation_id="c")).output == "echo: second"
    assert len(events(log, "protocol.error", agent="m", pid=worker.pid)) == len(GARBAGE)
    assert worker_pids(axon, "m") == [worker.pid]
    assert user_prompts(await axon.history("c")) == ["first", "second"]


async def test_gigantic_frame_header_makes_the_worker_exit_and_it_is_restarted(
    start_axon: StartAxon, log: Any
) -> None:
    axon = await serving_with_history(start_axon)
    worker = first_worker(axon, "m")
    pid = worker.pid
    assert pid is not None
    (other_pid,) = worker_pids(axon, "other")
    assert worker._channel is not None  # pyright: ignore[reportPrivateUsage]

    worker._channel.write_raw(b"\xff\xff\xff\xff" + b"junk that can never be framed")  # pyright: ignore[reportPrivateUsage]

    status = await wait_until_serving(axon, "m", replaced=[pid], timeout=30)
    last_exit = status.workers[0].last_exit
    assert last_exit is not None
    assert (last_exit.pid, last_exit.exit_code, last_exit.signal) == (pid, EXIT_PROTOCOL, None)
    assert events(log, "protocol.error", agent="m", pid=pid)  # it said why before exiting
    assert not pid_alive(pid)

    # Nothing lost, the agent serves again, the other agent never noticed.
    assert user_prompts(await axon.history("c")) == ["first"]
    assert (await axon.send_message("m", "second", conversation_id="c")).output == "echo: second"
    assert user_prompts(await axon.history("c")) == ["first", "second"]
    assert worker_pids(axon, "other") == [other_pid]
    assert axon.agent("other").restarts == 0
    assert (await axon.send_message("other", "unaffected")).output == "echo: unaffected"
