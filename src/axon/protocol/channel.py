"""A bidirectional frame channel over an asyncio stream (a Unix socket in practice).

Cancellation contract: ``recv`` may be cancelled at any point; a frame read partially is then
lost and the channel must be closed. ``send`` writes the whole frame before awaiting, so a
cancelled ``send`` never leaves half a frame on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib

from axon.protocol.codec import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    FrameDecoder,
    decode_header,
    encode_frame,
)
from axon.protocol.frames import Frame

__all__ = ["ChannelClosed", "FrameChannel"]


class ChannelClosed(ConnectionError):
    """The peer closed the connection (EOF or reset), or we did."""


class FrameChannel:
    """Sends and receives frames on one stream connection.

    ``decoder`` decodes what the peer may send; frames over ``max_recv`` bytes are refused
    (``FrameTooLarge``: close the channel), and frames over ``max_send`` are never sent
    (``FrameTooLarge`` from ``send_nowait``, nothing written).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: FrameDecoder,
        *,
        max_recv: int = MAX_FRAME_SIZE,
        max_send: int = MAX_FRAME_SIZE,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = decoder
        self._max_recv = max_recv
        self._max_send = max_send

    async def recv(self) -> Frame:
        """The next frame.

        Raises ``ChannelClosed`` at EOF; ``FrameTooLarge`` if the header is over the limit
        (close the channel then); ``ProtocolError`` if the payload is not a valid frame (the
        channel stays in sync and can go on).
        """
        try:
            header = await self._reader.readexactly(HEADER_SIZE)
            size = decode_header(header, self._max_recv)
            payload = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ChannelClosed("peer closed the connection") from exc
        return self._decoder.decode(payload)

    async def send(self, frame: Frame) -> None:
        """Write one frame; ``ChannelClosed`` if the connection is gone."""
        self.send_nowait(frame)
        await self.drain()

    async def drain(self) -> None:
        """Wait until the write buffer is flushed; ``ChannelClosed`` if the peer is gone."""
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise ChannelClosed("peer closed the connection") from exc

    def send_nowait(self, frame: Frame) -> None:
        """Queue one frame without waiting for the buffer to drain. ``FrameTooLarge`` (nothing
        queued) if it encodes to more than ``max_send`` bytes."""
        if self._writer.is_closing():
            raise ChannelClosed("channel is closed")
        self._writer.write(encode_frame(frame, self._max_send))

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the peer (what a peer that stops reading grows)."""
        return self._writer.transport.get_write_buffer_size()

    def write_raw(self, data: bytes) -> None:
        """Write raw bytes (used by tests and fault injection to send malformed traffic)."""
        self._writer.write(data)

    def abort(self) -> None:
        """Close the connection at once, dropping buffered data (a reset, from the peer's view)."""
        self._writer.transport.abort()

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        """Close now, without waiting (the transport finishes closing on the loop)."""
        if not self._writer.is_closing():
            self._writer.close()

    async def aclose(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
