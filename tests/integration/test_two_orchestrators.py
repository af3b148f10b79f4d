"""Two orchestrator PROCESSES sharing one PostgreSQL store, both writing to the SAME conversation
at once (Guarantee 3): the history is exactly the union of the replies each process
acknowledged, each once, each process's in the order it got them, with no run interleaved
into another or cut in half.

Within one process the runtime orders a conversation's runs; across processes only the store's
optimistic concurrency does: a run that started from a revision the other process has since
moved past is refused (``StoreConflict``, or ``ConversationBusy`` once the runtime maps it) and
never acknowledged. The children send a refused prompt again, so every prompt ends up
acknowledged exactly once whichever process wins the races, and the refusals seen prove that
the two processes did race.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from pydantic_ai import ModelMessagesTypeAdapter
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

from axon.store.postgres import PostgresStore
from axon.testing import user_prompts

CHILD = Path(__file__).with_name("two_orchestrators_child.py")
N = 30


class Outcomes(NamedTuple):
    acked: list[str]  # prompts, in the order acknowledged
    refused: list[str]  # prompts refused with a conflict (then sent again)
    errors: list[str]  # any other outcome: "PROMPT TYPE REASON"


def read_outcomes(path: Path) -> Outcomes:
    outcomes = Outcomes([], [], [])
    for line in path.read_text().splitlines():
        kind, rest = line.split(" ", 1)
        {"ok": outcomes.acked, "conflict": outcomes.refused, "error": outcomes.errors}[kind].append(
            rest
        )
    return outcomes


async def test_two_orchestrator_processes_never_interleave_or_lose_acknowledged_runs(
    postgres_url: str, tmp_path: Path
) -> None:
    outs = {tag: tmp_path / f"child{tag}.out" for tag in ("1", "2")}
    logs = {tag: tmp_path / f"child{tag}.err" for tag in outs}
    children: dict[str, asyncio.subprocess.Process] = {}
    try:
        for tag, out in outs.items():
            with logs[tag].open("wb") as err:
                children[tag] = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(CHILD),
                    postgres_url,
                    tag,
                    str(N),
                    str(out),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                )
        async with asyncio.timeout(60):  # both runtimes started (workers spawned, store opened)
            for tag, child in children.items():
                assert child.stdout is not None
                line = await child.stdout.readline()
                assert line == b"ready\n", f"child {tag}: {line!r}\n{logs[tag].read_text()}"
        for child in children.values():  # go, together
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        async with asyncio.timeout(90):
            for tag, child in children.items():
                code = await child.wait()
                assert code == 0, f"child {tag} exited with {code}:\n{logs[tag].read_text()}"
    finally:
        for child in children.values():
            if child.returncode is None:
                child.kill()
                await child.wait()

    outcomes = {tag: read_outcomes(out) for tag, out in outs.items()}
    for tag, outcome in outcomes.items():
        assert outcome.errors == [], f"child {tag}: {outcome.errors}"
        assert sorted(outcome.acked) == [f"sleep:0.01{tag}{i:03d}" for i in range(N)], (
            f"child {tag} lost track of a request or had one acknowledged twice"
        )
    assert any(outcome.refused for outcome in outcomes.values()), (
        "no run was ever refused: the two processes never raced, the test proved nothing"
    )

    store = PostgresStore.from_url(postgres_url)
    await store.open()
    try:
        stored = await store.load("shared")
    finally:
        await store.close()
    history = list(ModelMessagesTypeAdapter.validate_json(stored.messages))
    prompts = user_prompts(history)
    everything = [p for outcome in outcomes.values() for p in outcome.acked]

    assert sorted(prompts) == sorted(everything), "history != the acknowledged replies"
    assert len(set(prompts)) == len(prompts), "a run was committed twice"
    assert stored.revision == len(everything)
    for tag, outcome in outcomes.items():
        own = [p for p in prompts if p.startswith(f"sleep:0.01{tag}")]
        assert own == outcome.acked, f"child {tag}'s runs are out of the order it acknowledged them"
    # Whole exchanges only: each run is its request and its answer, next to each other.
    assert len(history) == 2 * len(prompts)
    previous_answer: datetime | None = None
    for request, response in zip(history[::2], history[1::2], strict=True):
        assert isinstance(request, ModelRequest)
        assert isinstance(response, ModelResponse)
        (part,) = [p for p in request.parts if isinstance(p, UserPromptPart)]
        assert isinstance(part.content, str)
        assert [p.content for p in response.parts if isinstance(p, TextPart)] == [
            f"slept {part.content.removeprefix('sleep:')}"
        ]
        # Each run was computed on the history it was appended to: it loaded that history
        # after the previous run committed, so it started after the previous run answered
        # (the worker stamps both; one machine, one clock). Two runs that raced from the
        # same revision and were both appended would overlap here.
        if previous_answer is not None:
            assert part.timestamp > previous_answer, f"{part.content} overlaps the run before"
        previous_answer = response.timestamp
