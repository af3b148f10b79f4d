"""Guarantee 3 on a real SQLite file: history survives orchestrator restarts (clean, and kill -9
in the middle of a load), a crashed or store-less run commits nothing, and the next run of the
conversation is given exactly the committed history.

The agent is :data:`orchestrator_child.counting_agent`: its reply ``#N echo: PROMPT`` counts the
user prompts in the history its worker was GIVEN, so a reply proves what the orchestrator loaded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic_ai import ModelMessagesTypeAdapter
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart

from axon import AgentCrashed, AgentSpec, RuntimeSpec, StoreUnavailable
from axon.store.sqlite import SqliteStore
from axon.testing import user_prompts, wait_until_serving, worker_pids

from ..conftest import WEATHER, StartAxon, pid_alive, sqlite_write_lock
from ..store.test_sqlite import rows
from .orchestrator_child import ROOT, counting_spec

CHILD = Path(__file__).with_name("orchestrator_child.py")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "axon.db"


def sqlite_runtime(db: Path, **options: str) -> RuntimeSpec:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return RuntimeSpec(store=f"sqlite:///{db}" + (f"?{query}" if query else ""))


@pytest.fixture
async def reader(db: Path) -> AsyncIterator[SqliteStore]:
    """A second, independent store on the same file: what another process would see."""
    store = SqliteStore(db)
    yield store
    await store.close()


# ------------------------------------------------------------------- in-process restarts


async def test_history_survives_an_orchestrator_restart(start_axon: StartAxon, db: Path) -> None:
    agents = (counting_spec("counter"), AgentSpec(id="weather", agent=WEATHER))
    first = await start_axon(*agents, runtime=sqlite_runtime(db))
    for prompt in ("one", "two", "three"):
        await first.send_message("counter", prompt, conversation_id="c1")
    await first.send_message("weather", "What is the weather in Paris?", conversation_id="w1")
    before = {cid: await first.history(cid) for cid in ("c1", "w1")}
    assert len(before["w1"]) == 6  # prompt, two tool round trips, answer
    await first.stop()

    second = await start_axon(*agents, runtime=sqlite_runtime(db))
    for cid, history in before.items():
        assert await second.history(cid) == history
    reply = await second.send_message("counter", "four", conversation_id="c1")
    assert reply.output == "#4 echo: four"  # the new worker was given the three old exchanges
    assert user_prompts(await second.history("c1")) == ["one", "two", "three", "four"]


async def test_a_worker_crash_mid_run_commits_nothing(
    start_axon: StartAxon, db: Path, reader: SqliteStore
) -> None:
    axon = await start_axon(counting_spec("counter"), runtime=sqlite_runtime(db))
    for prompt in ("one", "two"):
        await axon.send_message("counter", prompt, conversation_id="c1")
    await reader.open()
    committed = await reader.load("c1")
    pid = worker_pids(axon, "counter")[0]
    assert pid is not None

    with pytest.raises(AgentCrashed) as crashed:
        await axon.send_message("counter", "crash", conversation_id="c1")
    assert (crashed.value.pid, crashed.value.exit_code) == (pid, 13)
    assert await reader.load("c1") == committed  # not a byte more, same revision

    await wait_until_serving(axon, "counter", replaced=[pid])
    reply = await axon.send_message("counter", "three", conversation_id="c1")
    assert reply.output == "#3 echo: three"  # given the two committed exchanges, not the crash
    assert user_prompts(await axon.history("c1")) == ["one", "two", "three"]


async def test_a_locked_store_fails_the_run_cleanly_and_recovers(
    start_axon: StartAxon, db: Path
) -> None:
    axon = await start_axon(
        counting_spec("counter"), runtime=sqlite_runtime(db, busy_timeout="0.3")
    )
    await axon.send_message("counter", "one", conversation_id="c1")
    async with sqlite_write_lock(db):
        with pytest.raises(StoreUnavailable, match="locked"):
            await axon.send_message("counter", "two", conversation_id="c1")
        assert user_prompts(await axon.history("c1")) == ["one"]  # reads still work (WAL)

    reply = await axon.send_message("counter", "three", conversation_id="c1")
    assert reply.output == "#2 echo: three"
    assert user_prompts(await axon.history("c1")) == ["one", "three"]


# ------------------------------------------------------------- kill -9 of the orchestrator

CONVERSATIONS = 40
TURNS = 20
CONCURRENCY = 8
KILL_AFTER_ACKS = 120


async def wait_gone(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` has exited (its pidfd becomes readable): no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def read_acks(path: Path) -> dict[str, list[str]]:
    """The client's log: acknowledged prompts per conversation, in order. A last line cut
    short by the kill is not an acknowledgement."""
    acked: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        ack = json.loads(line)
        prompts = acked[ack["conversation"]]
        prompts.append(ack["prompt"])
        assert ack["reply"] == f"#{len(prompts)} echo: {ack['prompt']}", ack
    return acked


def check_exchange(run: list[ModelMessage], prompt: str, number: int) -> None:
    """One whole exchange: the user's prompt, then the final text answer to it."""
    request, response = run  # exactly two messages: nothing missing, nothing extra
    assert isinstance(request, ModelRequest)
    assert [type(p) for p in request.parts] == [UserPromptPart]
    assert request.parts[0].content == prompt
    assert isinstance(response, ModelResponse)
    assert response.parts == [TextPart(f"#{number} echo: {prompt}")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers use PR_SET_PDEATHSIG")
async def test_kill_9_of_the_orchestrator_mid_load_loses_nothing(
    start_axon: StartAxon, tmp_path: Path, db: Path, reader: SqliteStore
) -> None:
    acks_path, pids_path = tmp_path / "acks.jsonl", tmp_path / "pids.json"
    log_path = tmp_path / "child.log"
    with log_path.open("wb") as log:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            str(db),
            str(acks_path),
            str(pids_path),
            f"--conversations={CONVERSATIONS}",
            f"--turns={TURNS}",
            f"--concurrency={CONCURRENCY}",
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert child.stdout is not None
    try:
        async with asyncio.timeout(90):
            lines = [await child.stdout.readline()]
            while len(lines) <= KILL_AFTER_ACKS and lines[-1]:
                lines.append(await child.stdout.readline())
        assert lines == [b"ready\n"] + [b"ack\n"] * KILL_AFTER_ACKS, log_path.read_text()
        workers = json.loads(pids_path.read_text())
        assert len(workers) == 2
        assert all(pid_alive(pid) for pid in workers)
        child.send_signal(signal.SIGKILL)  # mid-load: acks keep coming until this instant
        assert await child.wait() == -signal.SIGKILL
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    for pid in workers:  # the workers die with their orchestrator
        await wait_gone(pid, timeout=15)
        assert not pid_alive(pid)

    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    acked = read_acks(acks_path)
    total_acked = sum(len(prompts) for prompts in acked.values())
    assert KILL_AFTER_ACKS <= total_acked < CONVERSATIONS * TURNS  # killed mid-load

    await reader.open()
    committed_unacked = 0
    for i in range(CONVERSATIONS):
        cid = f"c{i}"
        history = await reader.load(cid)
        messages = list(ModelMessagesTypeAdapter.validate_json(history.messages))
        prompts = user_prompts(messages)
        acks = acked.get(cid, [])
        # Every acknowledged exchange, once, in order; plus at most the ONE next exchange,
        # committed but killed before its ack was written.
        assert prompts in (acks, [*acks, f"{cid}-t{len(acks)}"]), (cid, prompts, acks)
        committed_unacked += len(prompts) - len(acks)
        assert history.revision == len(prompts)
        assert len(messages) == 2 * len(prompts)
        for k, prompt in enumerate(prompts):
            check_exchange(messages[2 * k : 2 * k + 2], prompt, k + 1)
    assert committed_unacked <= CONCURRENCY  # only runs in flight at the kill

    # Each stored run, on its own, is one whole exchange (nothing half-written).
    for cid, seq, raw in rows(db, "SELECT conversation_id, seq, messages FROM runs"):
        run = list(ModelMessagesTypeAdapter.validate_json(raw))
        check_exchange(run, f"{cid}-t{seq - 1}", seq)
    listed = await reader.list_conversations(limit=1000)
    assert {c.conversation_id for c in listed} == {
        f"c{i}" for i in range(CONVERSATIONS) if (await reader.load(f"c{i}")).revision
    }

    # A new orchestrator on the same file carries on where the history stands.
    before = user_prompts(
        list(ModelMessagesTypeAdapter.validate_json((await reader.load("c0")).messages))
    )
    axon = await start_axon(counting_spec("a1"), counting_spec("a2"), runtime=sqlite_runtime(db))
    reply = await axon.send_message("a1", "after the restart", conversation_id="c0")
    assert reply.output == f"#{len(before) + 1} echo: after the restart"
    assert user_prompts(await axon.history("c0")) == [*before, "after the restart"]
