"""What a child prints becomes log lines: read to the end whatever it is, long lines cut, floods
rate-limited and counted (``axon.pool.output``)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axon.pool.output import OutputPump


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pump(**kw: object) -> tuple[OutputPump, list[str], list[int]]:
    lines: list[str] = []
    dropped: list[int] = []
    return OutputPump(lines.append, dropped.append, **kw), lines, dropped  # type: ignore[arg-type]


async def run_over(output: OutputPump, chunks: list[bytes]) -> None:
    stream = asyncio.StreamReader()
    for chunk in chunks:
        stream.feed_data(chunk)
    stream.feed_eof()
    await output.run(stream)


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
            max_size=40,
        ),
        max_size=30,
    ),
    st.lists(st.integers(1, 50), min_size=1, max_size=10),
)
@settings(max_examples=200)
async def test_lines_survive_any_chunking(lines: list[str], cuts: list[int]) -> None:
    data = "".join(f"{line}\n" for line in lines).encode()
    chunks, at = [], 0
    for size in cuts * (len(data) // max(sum(cuts), 1) + 1):
        chunks.append(data[at : at + size])
        at += size
    chunks.append(data[at:])
    output, logged, dropped = pump()
    await run_over(output, chunks)
    assert logged == lines
    assert dropped == []
    assert output.lines == len(lines)


async def test_a_last_line_without_newline_is_logged_at_the_end() -> None:
    output, logged, _ = pump()
    await run_over(output, [b"first\nsec", b"ond"])
    assert logged == ["first", "second"]


async def test_a_long_line_is_cut_with_its_length_and_the_next_line_is_intact() -> None:
    output, logged, _ = pump(max_line=100)
    await run_over(output, [b"x" * 70_000, b"x" * 130_000 + b"\nnext\n"])
    assert logged[0] == "x" * 100 + " [... cut: the line was 200000 bytes]"
    assert logged[1] == "next"


async def test_a_line_longer_than_a_readline_limit_does_not_stop_the_pump() -> None:
    # StreamReader.readline gives up past 64 KiB; the pump must read on regardless.
    output, logged, _ = pump()
    stream = asyncio.StreamReader(limit=2**16)
    stream.feed_data(b"y" * 300_000 + b"\n" + b"after\n")
    stream.feed_eof()
    await output.run(stream)
    assert logged[-1] == "after"
    assert "300000 bytes" in logged[0]


async def test_a_flood_is_logged_at_the_rate_and_the_rest_counted() -> None:
    clock = Clock()
    output, logged, dropped = pump(rate=10.0, burst=5, clock=clock)
    output.feed(b"".join(b"line %d\n" % i for i in range(1000)))
    assert logged == [f"line {i}" for i in range(5)]  # the burst
    assert output.dropped == 995
    clock.now = 1.0  # a second later: 10 more tokens
    output.feed(b"later\n")
    assert dropped == [995]  # reported before logging resumes
    assert logged[-1] == "later"
    assert output.lines == 1001


async def test_dropped_lines_are_reported_when_the_stream_ends() -> None:
    clock = Clock()
    output, logged, dropped = pump(rate=1.0, burst=2, clock=clock)
    await run_over(output, [b"a\nb\nc\nd\n"])
    assert logged == ["a", "b"]
    assert dropped == [2]


@pytest.mark.parametrize("crlf", [False, True])
async def test_carriage_returns_and_invalid_utf8_are_tolerated(crlf: bool) -> None:
    output, logged, _ = pump()
    end = b"\r\n" if crlf else b"\n"
    await run_over(output, [b"caf\xc3\xa9" + end + b"\xff\xfe" + end])
    assert logged == ["café", "\ufffd\ufffd"]


async def test_dropped_lines_are_reported_once_the_stream_goes_quiet() -> None:
    logged: list[str] = []
    reported: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    output = OutputPump(logged.append, reported.set_result, rate=0.001, burst=1)
    stream = asyncio.StreamReader()
    stream.feed_data(b"a\nb\nc\n")
    running = asyncio.ensure_future(output.run(stream))
    assert await asyncio.wait_for(reported, 5) == 2  # before the stream ends
    assert logged == ["a"]
    stream.feed_eof()
    await running
