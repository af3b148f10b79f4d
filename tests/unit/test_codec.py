"""The orchestrator <-> worker wire format: pure codec and the frame channel over a real socket."""

from __future__ import annotations

import asyncio
import socket
import struct
import typing
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axon.errors import AxonError, ProtocolError
from axon.protocol import codec
from axon.protocol.channel import ChannelClosed, FrameChannel
from axon.protocol.codec import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    FrameTooLarge,
    decode_header,
    decode_payload,
    encode_frame,
)
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
    Shutdown,
    SpanEventRecord,
    SpanRecord,
    Spans,
)

FRAME_TYPES: tuple[type, ...] = typing.get_args(Frame)

# -- strategies -----------------------------------------------------------------------------

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # everything msgpack can carry
run_ids = st.integers(min_value=0, max_value=2**63 - 1)
texts = st.text()  # full unicode, incl. surrogate-free astral characters and NUL
floats = st.floats(allow_nan=False)  # NaN != NaN would defeat the equality check
json_scalars = st.none() | st.booleans() | ints | floats | texts | st.binary(max_size=64)
any_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
str_dicts = st.dictionaries(texts, any_values, max_size=4)

FRAME_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    Hello: st.builds(Hello, protocol=ints, pid=ints),
    Ready: st.builds(
        Ready,
        protocol=ints,
        pid=ints,
        agent_name=st.none() | texts,
        max_concurrency=ints,
    ),
    Run: st.builds(
        Run,
        id=run_ids,
        prompt=texts,
        history=st.binary(),
        conversation_id=st.none() | texts,
        timeout=st.none() | floats,
        stream=st.booleans(),
        trace=st.none() | st.dictionaries(texts, texts, max_size=3),
    ),
    Cancel: st.builds(Cancel, id=run_ids),
    Event: st.builds(Event, id=run_ids, type=texts, data=str_dicts),
    Result: st.builds(
        Result,
        id=run_ids,
        output=any_values,
        messages=st.binary(),
        run_id=st.none() | texts,
        usage=str_dicts,
    ),
    Spans: st.builds(
        Spans,
        id=run_ids,
        spans=st.lists(
            st.builds(
                SpanRecord,
                name=texts,
                span_id=ints,
                start_ns=ints,
                end_ns=ints,
                parent_id=st.none() | ints,
                kind=texts,
                attributes=str_dicts,
                events=st.lists(
                    st.builds(SpanEventRecord, name=texts, time_ns=ints, attributes=str_dicts),
                    max_size=2,
                ),
                status=texts,
                status_message=st.none() | texts,
                scope=texts,
                scope_version=st.none() | texts,
            ),
            max_size=3,
        ),
    ),
    Error: st.builds(Error, error=str_dicts, id=st.none() | run_ids),
    Ping: st.builds(Ping, seq=ints),
    Pong: st.builds(Pong, seq=ints),
    Shutdown: st.builds(Shutdown, grace=floats),
}
frames = st.one_of(*FRAME_STRATEGIES.values())


def test_every_frame_type_has_a_strategy() -> None:
    assert set(FRAME_STRATEGIES) == set(FRAME_TYPES)
    assert len(FRAME_TYPES) == 11


# -- encode / decode --------------------------------------------------------------------------


@given(frames)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_every_frame_survives_an_encode_decode_round_trip(frame: Any) -> None:
    wire = encode_frame(frame)
    size = decode_header(wire[:HEADER_SIZE])
    assert size == len(wire) - HEADER_SIZE
    decoded = decode_payload(wire[HEADER_SIZE:])
    assert type(decoded) is type(frame)
    assert decoded == frame


def test_frames_are_msgpack_maps_tagged_by_kind() -> None:
    wire = encode_frame(Run(id=7, prompt="héllo 🌍", conversation_id="c-1"))
    payload = msgspec.msgpack.decode(wire[HEADER_SIZE:])
    assert payload["kind"] == "run"
    assert payload["id"] == 7
    assert payload["prompt"] == "héllo 🌍"
    assert struct.unpack(">I", wire[:HEADER_SIZE]) == (len(wire) - HEADER_SIZE,)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    payload = msgspec.msgpack.encode({"kind": "ping", "seq": 3, "added_in_v2": [1, 2]})
    assert decode_payload(payload) == Ping(seq=3)


def pack(obj: object) -> bytes:
    return msgspec.msgpack.encode(obj)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "empty payload"),
        (b"\xc1\xc1\xc1\xc1", "0xc1 is never valid msgpack"),
        (b"\x81\xa4kind", "truncated map"),
        (b"not msgpack at all, just text", "text"),
        (pack({"kind": "bogus"}), "unknown kind"),
        (pack({"seq": 1}), "no kind"),
        (pack({"kind": 5, "seq": 1}), "kind is not a string"),
        (pack({"kind": "ping"}), "missing field"),
        (pack({"kind": "ping", "seq": "one"}), "wrong field type"),
        (pack({"kind": "run", "id": "x", "prompt": 5}), "wrong field types"),
        (pack({"kind": "run", "id": 1, "prompt": "p", "history": "not bytes"}), "str for bytes"),
        (pack({"kind": "run", "id": 1.5, "prompt": "p"}), "float id"),
        (pack({"kind": "error", "error": "not a dict"}), "error is not a map"),
        (pack({"kind": "event", "id": 1, "type": "t", "data": {1: 2}}), "non-str key"),
        (pack([1, 2, 3]), "an array"),
        (pack("ping"), "a string"),
        (pack(None), "nil"),
        (pack({"kind": "ping", "seq": 1}) + b"\x00", "trailing bytes"),
    ],
)
def test_invalid_payloads_raise_protocol_error(payload: bytes, why: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_payload(payload)
    assert type(info.value) is ProtocolError, why
    assert info.value.message


@given(st.binary(max_size=256))
@settings(max_examples=500)
def test_arbitrary_bytes_decode_to_a_frame_or_raise_protocol_error_only(payload: bytes) -> None:
    try:
        frame = decode_payload(payload)
    except ProtocolError:
        return
    assert isinstance(frame, FRAME_TYPES)


field_names = st.sampled_from(
    ["id", "seq", "pid", "protocol", "prompt", "history", "error", "data", "type", "output",
     "messages", "grace", "timeout", "stream", "conversation_id", "usage", "run_id", "trace",
     "spans"]
)  # fmt: skip
kinds = st.sampled_from(
    [
        "hello",
        "ready",
        "run",
        "cancel",
        "event",
        "spans",
        "result",
        "error",
        "ping",
        "pong",
        "shutdown",
    ]
) | st.text(max_size=8)


small_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=4,
)


@given(kinds, st.dictionaries(field_names | st.text(max_size=4), small_values, max_size=5))
@settings(max_examples=200)
def test_maps_that_look_like_frames_decode_or_raise_protocol_error_only(
    kind: str, fields: dict[str, Any]
) -> None:
    payload = pack({**fields, "kind": kind})
    try:
        frame = decode_payload(payload)
    except ProtocolError:
        return
    assert isinstance(frame, FRAME_TYPES)
    assert frame == decode_payload(encode_frame(frame)[HEADER_SIZE:])


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_payload_decodes_or_raises_protocol_error(depth: int) -> None:
    head = pack({"kind": "result", "id": 1, "messages": b"[]"})
    assert head[0] == 0x83  # a fixmap of 3 entries: make it 4 and append "output"
    payload = b"\x84" + head[1:] + pack("output") + b"\x91" * depth + b"\x01"
    try:
        frame = decode_payload(payload)
    except ProtocolError:
        return
    assert isinstance(frame, Result)


def test_decode_header_accepts_up_to_the_limit_and_rejects_beyond() -> None:
    assert decode_header(struct.pack(">I", 0)) == 0
    assert decode_header(struct.pack(">I", MAX_FRAME_SIZE)) == MAX_FRAME_SIZE
    for size in (MAX_FRAME_SIZE + 1, 2**32 - 1):
        with pytest.raises(FrameTooLarge) as info:
            decode_header(struct.pack(">I", size))
        assert str(size) in info.value.message
    assert issubclass(FrameTooLarge, ProtocolError)
    assert issubclass(FrameTooLarge, AxonError)


def test_encode_refuses_a_frame_above_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_FRAME_SIZE", 1000)
    assert encode_frame(Run(id=1, prompt="x" * 900))
    with pytest.raises(FrameTooLarge):
        encode_frame(Run(id=1, prompt="x" * 1001))


# -- FrameChannel over a real socket pair -----------------------------------------------------


@pytest.fixture
async def channels() -> AsyncIterator[tuple[FrameChannel, FrameChannel]]:
    left_sock, right_sock = socket.socketpair()
    left = FrameChannel(*await asyncio.open_connection(sock=left_sock))
    right = FrameChannel(*await asyncio.open_connection(sock=right_sock))
    yield left, right
    await left.aclose()
    await right.aclose()


async def test_channel_round_trips_frames_in_order(
    channels: tuple[FrameChannel, FrameChannel],
) -> None:
    left, right = channels
    sent: list[Any] = [
        Hello(protocol=PROTOCOL_VERSION, pid=123),
        Run(id=1, prompt="héllo 🌍", history=b"[]", conversation_id="c", timeout=1.5),
        Run(id=2, prompt="x" * 200_000, stream=True),  # larger than one socket buffer
        Cancel(id=1),
        Error(id=None, error={"type": "protocol_error", "message": "m"}),
    ]
    sender = asyncio.create_task(_send_all(left, sent))
    received = [await right.recv() for _ in sent]
    await sender
    assert received == sent
    # and the other way
    await right.send(Result(id=1, output={"a": [1, 2.5, None]}, messages=b"[]", usage={}))
    assert await left.recv() == Result(id=1, output={"a": [1, 2.5, None]}, messages=b"[]")


async def _send_all(channel: FrameChannel, frames: list[Any]) -> None:
    for frame in frames:
        await channel.send(frame)


async def test_recv_after_peer_close_raises_channel_closed(
    channels: tuple[FrameChannel, FrameChannel],
) -> None:
    left, right = channels
    await left.send(Ping(seq=1))
    await left.aclose()
    assert left.closed
    assert await right.recv() == Ping(seq=1)  # what was sent before the close still arrives
    with pytest.raises(ChannelClosed):
        await right.recv()
    with pytest.raises(ChannelClosed):
        await left.send(Ping(seq=2))


async def test_peer_closing_mid_frame_raises_channel_closed(
    channels: tuple[FrameChannel, FrameChannel],
) -> None:
    left, right = channels
    whole = encode_frame(Run(id=1, prompt="cut short"))
    left.write_raw(whole[: len(whole) - 3])
    await left.drain()
    await left.aclose()
    with pytest.raises(ChannelClosed):
        await right.recv()


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1\xc1",
        b"",
        pack({"kind": "bogus", "id": 1}),
        pack({"kind": "run", "id": "one", "prompt": 2}),
    ],
    ids=["not-msgpack", "empty", "unknown-kind", "wrong-types"],
)
async def test_bad_payload_raises_protocol_error_and_the_stream_stays_in_sync(
    channels: tuple[FrameChannel, FrameChannel], payload: bytes
) -> None:
    left, right = channels
    left.write_raw(struct.pack(">I", len(payload)) + payload)
    await left.send(Ping(seq=42))
    with pytest.raises(ProtocolError) as info:
        await right.recv()
    assert not isinstance(info.value, FrameTooLarge)
    assert await right.recv() == Ping(seq=42)


async def test_absurd_header_raises_frame_too_large(
    channels: tuple[FrameChannel, FrameChannel],
) -> None:
    left, right = channels
    left.write_raw(b"\xff\xff\xff\xff" + b"garbage")
    await left.drain()
    with pytest.raises(FrameTooLarge):
        await right.recv()
