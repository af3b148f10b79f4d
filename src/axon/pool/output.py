"""Drain what a child process prints (a worker's or a zygote's stdout and stderr) into log events.

A child is untrusted: whatever it prints, the pipe is read to its end, because a pipe nobody
reads fills up and blocks the child's next ``print`` (a worker would then stop answering
heartbeats and be killed for it). So output is read in chunks, never with ``readline`` (which
gives up on a line longer than the stream's limit); a line longer than :data:`MAX_LINE` bytes is
logged cut, with its full length; and lines are logged at most :data:`RATE` per second after a
burst of :data:`BURST`, the rest only counted and reported as one "dropped" event when logging
resumes, the stream goes quiet for :data:`REPORT_AFTER` seconds, or it ends, so a child printing
in a loop costs the orchestrator little and every dropped line is accounted for.

Cancellation contract: :meth:`OutputPump.run` may be cancelled at any time; lines dropped so far
are reported first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["BURST", "MAX_LINE", "RATE", "OutputPump"]

MAX_LINE = 8192
"""Bytes of one line that are logged; the rest is cut (its length is logged)."""
RATE = 200.0
"""Lines per second logged once the burst is spent."""
BURST = 1000
"""Lines logged at once before the rate applies."""
REPORT_AFTER = 1.0
"""Seconds of quiet after which lines dropped so far are reported."""
_CHUNK = 65536


class OutputPump:
    """Reads one stream to its end; ``emit(line)`` for each line logged, ``dropped(count)`` for
    lines not logged (see the module docstring)."""

    def __init__(
        self,
        emit: Callable[[str], None],
        dropped: Callable[[int], None],
        *,
        max_line: int = MAX_LINE,
        rate: float = RATE,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._report_dropped = dropped
        self._max_line = max_line
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._refilled = clock()
        self._line = bytearray()
        self._line_bytes = 0
        self.dropped = 0
        """Lines counted but not logged since the last report."""
        self.lines = 0
        """Lines seen in all."""

    async def run(self, stream: asyncio.StreamReader) -> None:
        try:
            while True:
                if self.dropped:
                    try:
                        # Cancelling a read loses nothing: what arrives stays in the stream.
                        chunk = await asyncio.wait_for(stream.read(_CHUNK), REPORT_AFTER)
                    except TimeoutError:
                        self._flush_dropped()
                        continue
                else:
                    chunk = await stream.read(_CHUNK)
                if not chunk:
                    break
                self.feed(chunk)
            if self._line_bytes:
                self._end_line()
        finally:
            self._flush_dropped()

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream."""
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end == -1:
                self._add(chunk[start:])
                return
            self._add(chunk[start:end])
            self._end_line()
            start = end + 1
            if not self._take_token(peek=True):
                # Out of tokens: count the whole lines left in this chunk without looking at them.
                whole = chunk.count(b"\n", start)
                if whole:
                    self.lines += whole
                    self.dropped += whole
                    start = chunk.rindex(b"\n") + 1
                    self._line.clear()
                    self._line_bytes = 0
                self._add(chunk[start:])
                return

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        self._line_bytes += len(piece)
        room = self._max_line - len(self._line)
        if room > 0:
            self._line += piece[:room]

    def _end_line(self) -> None:
        self.lines += 1
        size = self._line_bytes
        text = self._line.decode(errors="replace").rstrip("\r")
        self._line.clear()
        self._line_bytes = 0
        if not self._take_token():
            self.dropped += 1
            return
        self._flush_dropped()
        if size > self._max_line:
            text = f"{text} [... cut: the line was {size} bytes]"
        self._emit(text)

    def _take_token(self, *, peek: bool = False) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        if not peek:
            self._tokens -= 1.0
        return True

    def _flush_dropped(self) -> None:
        if self.dropped:
            count, self.dropped = self.dropped, 0
            self._report_dropped(count)
