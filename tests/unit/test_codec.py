"""The orchestrator <-> worker wire format: pure codec and the frame channel over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import typing
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axon.errors import AxonError, FrameTooLarge, ProtocolError
from axon.protocol import codec
from axon.protocol.channel import ChannelClosed, FrameChannel
from axon.protocol.codec import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    FrameDecoder,
    decode_header,
    decode_payload,
    encode_frame,
    from_orchestrator,
    from_worker,
)
from axon.protocol.frames import (
    MAX_ERROR_BYTES,
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
    ToOrchestrator,
    ToWorker,
)
from axon.stream import TextDelta, ToolCall, ToolResult

FRAME_TYPES: tuple[type, ...] = typing.get_args(Frame)
ANY_FRAME = FrameDecoder(Frame)

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
error_facts = st.dictionaries(
    texts, st.none() | st.booleans() | ints | floats | texts, max_size=4
)  # what an error carries over the wire: plain values only
json_bytes = any_values.map(
    lambda v: msgspec.json.encode(v, enc_hook=lambda b: b.hex())
)  # what the agent produced travels as JSON
span_records = st.lists(
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
)
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
    Event: st.builds(
        Event,
        id=run_ids,
        event=st.builds(TextDelta, texts)
        | st.builds(ToolCall, texts, json_bytes, texts)
        | st.builds(ToolResult, texts, json_bytes, texts),
    ),
    Result: st.builds(
        Result,
        id=run_ids,
        output=json_bytes,
        messages=st.binary(),
        run_id=st.none() | texts,
        usage=json_bytes,
    ),
    Spans: st.builds(Spans.of, run_ids, span_records),
    Error: st.builds(Error.of, st.none() | run_ids, error_facts),
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
        (pack({"kind": "event", "id": 1, "event": {"type": "text_delta", "text": [1]}}), "text"),
        (
            pack(
                {
                    "kind": "event",
                    "id": 1,
                    "event": {"type": "tool_call", "tool_name": "t", "args": {}},
                }
            ),
            "args not bytes",
        ),
        (pack({"kind": "event", "id": 1, "event": {"type": "gossip"}}), "unknown event type"),
        (pack({"kind": "event", "id": 1, "event": "not a map"}), "event not a map"),
        (pack({"kind": "result", "id": 1, "output": "x", "messages": b"[]"}), "str output"),
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
    ["id", "seq", "pid", "protocol", "prompt", "history", "error", "event", "output",
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


def test_encode_refuses_a_frame_above_the_limit() -> None:
    assert encode_frame(Run(id=1, prompt="x" * 900), limit=1000)
    with pytest.raises(FrameTooLarge) as info:
        encode_frame(Run(id=1, prompt="x" * 1001), limit=1000)
    assert info.value.limit == 1000
    assert info.value.size > 1001
    assert codec.MAX_FRAME_SIZE == 64 * 2**20


def test_a_limit_below_the_default_applies_to_headers_too() -> None:
    assert decode_header(struct.pack(">I", 4096), 4096) == 4096
    with pytest.raises(FrameTooLarge) as info:
        decode_header(struct.pack(">I", 4097), 4096)
    assert (info.value.size, info.value.limit) == (4097, 4096)


# -- each side accepts only what the other side sends ------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [Run(id=1, prompt="p"), Cancel(id=1), Ping(seq=1), Shutdown(grace=1.0)],
    ids=lambda f: type(f).__name__,
)
def test_a_worker_may_not_send_what_only_the_orchestrator_sends(frame: Frame) -> None:
    with pytest.raises(ProtocolError):
        from_worker.decode(encode_frame(frame)[HEADER_SIZE:])
    assert from_orchestrator.decode(encode_frame(frame)[HEADER_SIZE:]) == frame


@pytest.mark.parametrize(
    "frame",
    [
        Hello(protocol=2, pid=1),
        Ready(protocol=2, pid=1),
        Event(id=1, event=TextDelta("t")),
        Result(id=1, output=b'"x"', messages=b"[]"),
        Pong(seq=1),
    ],
    ids=lambda f: type(f).__name__,
)
def test_the_orchestrator_may_not_send_what_only_a_worker_sends(frame: Frame) -> None:
    with pytest.raises(ProtocolError):
        from_orchestrator.decode(encode_frame(frame)[HEADER_SIZE:])
    assert from_worker.decode(encode_frame(frame)[HEADER_SIZE:]) == frame


def test_the_two_directions_cover_every_frame_type() -> None:
    assert set(typing.get_args(ToWorker)) | set(typing.get_args(ToOrchestrator)) == set(FRAME_TYPES)
    assert set(typing.get_args(ToWorker)) & set(typing.get_args(ToOrchestrator)) == {Error}


# -- what a worker's frame costs to decode ----------------------------------------------------

BOMB = 4_000_000  # empty msgpack arrays: 4 MB on the wire, ~250 MB as Python lists


def _with_extra(frame: Frame, name: str, value: bytes) -> bytes:
    """``frame``'s payload with one more field ``name`` whose msgpack encoding is ``value``."""
    payload = encode_frame(frame)[HEADER_SIZE:]
    assert 0x80 <= payload[0] <= 0x8E  # a fixmap: add one entry
    return bytes([payload[0] + 1]) + payload[1:] + pack(name) + value


def _array_of_empty_arrays(count: int) -> bytes:
    return b"\xdd" + struct.pack(">I", count) + b"\x90" * count


def _peak_bytes_of(decode: Any) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        with contextlib.suppress(ProtocolError, ValueError):
            decode()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        (Event(id=1, event=TextDelta("t")), "data"),  # an unknown field: skipped, never built
        (Pong(seq=1), "padding"),
        (Hello(protocol=2, pid=1), "extra"),
    ],
)
def test_an_unknown_field_costs_nothing_to_decode(frame: Frame, field: str) -> None:
    payload = _with_extra(frame, field, _array_of_empty_arrays(BOMB))
    assert _peak_bytes_of(lambda: from_worker.decode(payload)) < 2**20


def _bomb_in(fields: dict[str, Any], field: str) -> bytes:
    """A msgpack map of ``fields`` and one more, ``field``, holding a bomb."""
    payload = pack(fields)
    return bytes([payload[0] + 1]) + payload[1:] + pack(field) + _array_of_empty_arrays(BOMB)


def _event_with_bomb(fields: dict[str, Any], field: str) -> bytes:
    head = pack({"kind": "event", "id": 1})
    return bytes([head[0] + 1]) + head[1:] + pack("event") + _bomb_in(fields, field)


@pytest.mark.parametrize(
    "payload",
    [
        _event_with_bomb({"type": "text_delta"}, "text"),  # a string, not an array
        _event_with_bomb({"type": "tool_call", "tool_name": "t", "tool_call_id": "c"}, "args"),
        _bomb_in({"kind": "result", "id": 1, "messages": b"[]"}, "output"),  # bytes
    ],
    ids=["text", "args", "output"],
)
def test_a_typed_field_holding_a_bomb_is_refused_without_building_it(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        from_worker.decode(payload)
    assert _peak_bytes_of(lambda: from_worker.decode(payload)) < 2**20


def test_an_error_payload_is_decoded_only_below_its_bound() -> None:
    small = Error.of(3, {"type": "agent_timeout", "message": "m", "timeout": 1.5})
    decoded = from_worker.decode(encode_frame(small)[HEADER_SIZE:])
    assert isinstance(decoded, Error)
    assert decoded.payload() == {"type": "agent_timeout", "message": "m", "timeout": 1.5}
    huge = Error.of(3, {"type": "x", "message": "m" * (MAX_ERROR_BYTES + 1)})
    decoded = from_worker.decode(encode_frame(huge)[HEADER_SIZE:])
    assert isinstance(decoded, Error)
    with pytest.raises(ValueError, match="limit"):
        decoded.payload()
    bomb = pack({"kind": "error", "id": 3, "error": [[]] * 1000})
    decoded = from_worker.decode(bomb)
    assert isinstance(decoded, Error)
    with pytest.raises(ValueError, match="malformed"):
        decoded.payload()  # facts are plain values, never nested containers


# -- FrameChannel over a real socket pair -----------------------------------------------------


@pytest.fixture
async def channels() -> AsyncIterator[tuple[FrameChannel, FrameChannel]]:
    left_sock, right_sock = socket.socketpair()
    left = FrameChannel(*await asyncio.open_connection(sock=left_sock), ANY_FRAME)
    right = FrameChannel(*await asyncio.open_connection(sock=right_sock), ANY_FRAME)
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
        Error.of(None, {"type": "protocol_error", "message": "m"}),
    ]
    sender = asyncio.create_task(_send_all(left, sent))
    received = [await right.recv() for _ in sent]
    await sender
    assert received == sent
    # and the other way
    await right.send(Result(id=1, output=b'{"a": [1, 2.5, null]}', messages=b"[]", usage=b"{}"))
    assert await left.recv() == Result(id=1, output=b'{"a": [1, 2.5, null]}', messages=b"[]")


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


async def test_a_channel_refuses_to_send_or_receive_over_its_limits() -> None:
    left_sock, right_sock = socket.socketpair()
    left = FrameChannel(*await asyncio.open_connection(sock=left_sock), ANY_FRAME, max_send=1000)
    right = FrameChannel(*await asyncio.open_connection(sock=right_sock), ANY_FRAME, max_recv=500)
    try:
        with pytest.raises(FrameTooLarge):
            left.send_nowait(Run(id=1, prompt="x" * 1000))
        assert left.buffered == 0  # nothing of it was written
        await left.send(Run(id=2, prompt="x" * 600))  # within what left sends, not right reads
        with pytest.raises(FrameTooLarge) as info:
            await right.recv()
        assert info.value.limit == 500
    finally:
        await left.aclose()
        await right.aclose()


async def test_buffered_counts_what_a_peer_that_stops_reading_left_unread(
    channels: tuple[FrameChannel, FrameChannel],
) -> None:
    left, right = channels  # the right side never reads
    for _ in range(200):
        left.send_nowait(Run(id=1, prompt="x" * 10_000))
        await asyncio.sleep(0)  # let the transport write what the socket takes
    assert left.buffered > 200 * 10_000 - 2**21  # the socket buffers take at most a few MB
    left.abort()  # what is unread is dropped (a graceful close would wait for the reader)
    right.abort()
