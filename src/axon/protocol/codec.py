"""Pure encoding and decoding of frames: no I/O.

Wire format: each frame is a 4-byte big-endian unsigned payload length followed by that many
bytes of msgpack (a map tagged by ``kind``, see :mod:`axon.protocol.frames`). A length above
``MAX_FRAME_SIZE`` means the stream cannot be trusted to stay in sync, so the connection must be
dropped; a payload that does not decode to a known frame is rejected but the stream stays usable,
because its length was sound.
"""

from __future__ import annotations

import struct

import msgspec

from axon.errors import ProtocolError
from axon.protocol.frames import Frame

__all__ = [
    "HEADER_SIZE",
    "MAX_FRAME_SIZE",
    "FrameTooLarge",
    "decode_header",
    "decode_payload",
    "encode_frame",
]

HEADER_SIZE = 4
MAX_FRAME_SIZE = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


class FrameTooLarge(ProtocolError):
    """A frame header announced more than ``MAX_FRAME_SIZE`` bytes: the stream is unusable."""

    type = "frame_too_large"


def encode_frame(frame: Frame) -> bytes:
    """The bytes of ``frame`` on the wire, length prefix included."""
    payload = _encoder.encode(frame)
    if len(payload) > MAX_FRAME_SIZE:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_SIZE}")
    return _HEADER.pack(len(payload)) + payload


def decode_header(header: bytes) -> int:
    """The payload length announced by a 4-byte header; ``FrameTooLarge`` if it is absurd."""
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_SIZE:
        raise FrameTooLarge(f"frame header announces {size} bytes (limit {MAX_FRAME_SIZE})")
    return size


def decode_payload(payload: bytes) -> Frame:
    """The frame in ``payload``; ``ProtocolError`` naming the reason if it is not a valid frame."""
    try:
        return _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid frame: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    except RecursionError:
        # msgspec raises this for absurdly nested data; the length was sound, so the stream
        # stays in sync and this is just one more invalid frame.
        raise ProtocolError("undecodable frame: nested too deeply") from None
