"""Pure encoding and decoding of frames: no I/O.

Wire format: each frame is a 4-byte big-endian unsigned payload length followed by that many
bytes of msgpack (a map tagged by ``kind``, see :mod:`axon.protocol.frames`). A length above the
receiver's limit means the stream cannot be trusted to stay in sync (or the peer is hostile), so
the connection must be dropped; a payload that does not decode to a frame the receiver accepts
is rejected but the stream stays usable, because its length was sound.

Each direction has its own limit: ``MAX_FRAME_SIZE`` for what the orchestrator sends (a run
frame carries a whole conversation history), and each agent's ``max_result_bytes`` for what its
workers send (docs/protocol.md).
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from axon.errors import FrameTooLarge, ProtocolError
from axon.protocol.frames import Frame, ToOrchestrator, ToWorker

__all__ = [
    "HEADER_SIZE",
    "MAX_FRAME_SIZE",
    "FrameDecoder",
    "decode_header",
    "decode_payload",
    "encode_frame",
    "from_orchestrator",
    "from_worker",
]

HEADER_SIZE = 4
MAX_FRAME_SIZE = 64 * 1024 * 1024
"""The largest frame either side may send (the orchestrator's run frames can be this large)."""
_HEADER = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()


def encode_frame(frame: Frame, limit: int = MAX_FRAME_SIZE) -> bytes:
    """The bytes of ``frame`` on the wire, length prefix included; ``FrameTooLarge`` (with the
    size) if its payload is over ``limit``."""
    payload = _encoder.encode(frame)
    if len(payload) > limit:
        raise FrameTooLarge(
            f"frame of {len(payload)} bytes exceeds {limit}", size=len(payload), limit=limit
        )
    return _HEADER.pack(len(payload)) + payload


def decode_header(header: bytes, limit: int = MAX_FRAME_SIZE) -> int:
    """The payload length announced by a 4-byte header; ``FrameTooLarge`` if it is over
    ``limit``."""
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise FrameTooLarge(
            f"frame header announces {size} bytes (limit {limit})", size=size, limit=limit
        )
    return size


class FrameDecoder:
    """Decodes the payloads one side accepts: ``from_worker`` (what an orchestrator reads) or
    ``from_orchestrator`` (what a worker reads); any other kind is a ``ProtocolError``."""

    def __init__(self, accepts: Any) -> None:
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(accepts)

    def decode(self, payload: bytes) -> Frame:
        """The frame in ``payload``; ``ProtocolError`` naming the reason if it is not valid."""
        try:
            return self._decoder.decode(payload)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"invalid frame: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"undecodable frame: {exc}") from None
        except RecursionError:
            # msgspec raises this for absurdly nested data; the length was sound, so the stream
            # stays in sync and this is just one more invalid frame.
            raise ProtocolError("undecodable frame: nested too deeply") from None


from_worker = FrameDecoder(ToOrchestrator)
"""Decodes what a worker sends."""
from_orchestrator = FrameDecoder(ToWorker)
"""Decodes what the orchestrator sends."""
_any_frame = FrameDecoder(Frame)


def decode_payload(payload: bytes) -> Frame:
    """Any frame of either direction in ``payload``; ``ProtocolError`` if it is not valid."""
    return _any_frame.decode(payload)
