"""Crash handling (Guarantees 1 and 2) with real worker processes.

Workers die during a run (exit code, SIGSEGV, an external SIGKILL), during a stream and during
start-up; the caller gets ``AgentCrashed`` with the exit facts, the supervisor restarts the
worker per restart type, strategy and intensity (capped exponential backoff with jitter), an
agent past its intensity is FAILED until a cool-down or a manual restart, and none of it touches
another agent or a conversation's committed history.

Every wait is on an event (a state change or a log event), never on a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from axon import (
    AgentCrashed,
    AgentSpec,
    AgentUnavailable,
    Axon,
    SupervisorSpec,
    TextDelta,
)
from axon.examples.misbehaving import STARTUP_FAILURES_ENV_VAR
from axon.testing import (
    EventLog,
    LoggedEvent,
    user_prompts,
    wait_until,
    wait_until_serving,
    worker_pids,
)
from axon.testing.helpers import kill_worker

from ..conftest import FAST, MISBEHAVING, StartAxon, pid_alive

FLAKY_STARTUP = "axon.examples.misbehaving:flaky_startup"
RAISE_AT_STARTUP = "axon.examples.misbehaving:raise_at_startup"

# ------------------------------------------------------------------------------------ helpers


def supervision(**overrides: Any) -> SupervisorSpec:
    """The fast test supervision with some settings changed (validated)."""
    return SupervisorSpec(**{**FAST.model_dump(), **overrides})


def misbehaving(agent_id: str = "m", **kw: Any) -> AgentSpec:
    return AgentSpec(id=agent_id, agent=MISBEHAVING, **kw)


def only(found: list[LoggedEvent]) -> LoggedEvent:
    assert len(found) == 1, [(e.name, e.fields) for e in found]
    return found[0]


async def collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
    """Append every event of ``stream`` to ``into`` (so they survive the stream's error)."""
    async for event in stream:
        into.append(event)


def pid_of(axon: Axon, agent_id: str, index: int = 0) -> int:
    pid = worker_pids(axon, agent_id)[index]
    assert pid is not None
    return pid


# ---------------------------------------------------------------------- crash during a run


@pytest.mark.parametrize(
    ("how", "crash_prompt", "exit_code", "sig"),
    [
        pytest.param("prompt", "crash", 13, None, id="exit-13"),
        pytest.param("prompt", "crash:segv", None, signal.SIGSEGV, id="sigsegv"),
        pytest.param("external-kill", "sleep:5", None, signal.SIGKILL, id="external-sigkill"),
    ],
)
async def test_crash_during_a_run_is_reported_restarted_and_leaves_history_intact(
    start_axon: StartAxon,
    events: EventLog,
    how: str,
    crash_prompt: str,
    exit_code: int | None,
    sig: int | None,
) -> None:
    axon = await start_axon(misbehaving())
    first = await axon.send_message("m", "first", conversation_id="c")
    assert first.output == "echo: first"
    pid = pid_of(axon, "m")

    mark = events.mark()
    run = asyncio.create_task(axon.send_message("m", crash_prompt, conversation_id="c"))
    if how == "external-kill":
        # The run is in the worker's hands once it has been routed; then kill the worker.
        await events.wait_for("run.routed", since=mark, agent="m", conversation="c")
        assert not run.done()
        assert kill_worker(axon, "m", 0) == pid
    with pytest.raises(AgentCrashed) as info:
        await run
    crashed = info.value
    assert crashed.agent_id == "m"
    assert crashed.pid == pid
    assert crashed.exit_code == exit_code
    assert crashed.signal == sig
    if sig is not None:
        assert crashed.signal_name == signal.Signals(sig).name

    status = await wait_until_serving(axon, "m", replaced=[pid])
    new_pid = status.workers[0].pid
    assert new_pid is not None
    assert new_pid != pid
    assert not pid_alive(pid)
    assert status.restarts == 1
    assert status.workers[0].restarts == 1
    last = status.recent_exits[-1]
    assert (last.pid, last.exit_code, last.signal, last.during_startup) == (
        pid,
        exit_code,
        sig,
        False,
    )

    third = await axon.send_message("m", "third", conversation_id="c")
    assert third.output == "echo: third"
    # The crashed run left nothing behind; the runs around it are both there, in order.
    assert user_prompts(await axon.history("c")) == ["first", "third"]

    # The crash and the restart are structured log events, in this order.
    exit_ = only(events.find("worker.exit", since=mark, agent="m"))
    assert exit_.levelno == logging.WARNING
    facts = exit_.fields
    assert (facts["pid"], facts["worker"], facts["exit_code"], facts["signal"]) == (
        pid,
        0,
        exit_code,
        sig,
    )
    restart = only(events.find("agent.restart", since=mark, agent="m"))
    assert restart.levelno == logging.WARNING
    assert restart.fields["attempt"] == 1
    initial = FAST.backoff_initial
    assert initial / 2 - 1e-4 <= restart.fields["delay_s"] <= initial + 1e-4
    start = only(events.find("worker.start", since=mark, agent="m"))
    assert start.fields["generation"] == 2
    ready = only(events.find("worker.ready", since=mark, agent="m"))
    assert ready.fields["pid"] == new_pid
    order = [events.index(r) for r in (exit_, restart, start, ready)]
    assert order == sorted(order)


# ------------------------------------------------------------------- crash during a stream


async def test_crash_during_a_stream_ends_the_stream_with_agent_crashed(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(misbehaving())
    await axon.send_message("m", "first", conversation_id="c")
    pid = pid_of(axon, "m")

    received: list[object] = []
    with pytest.raises(AgentCrashed) as info:
        await collect(axon.stream_message("m", "stream-crash:3", conversation_id="c"), received)
    assert received, "the stream yielded nothing before the crash"
    assert all(isinstance(event, TextDelta) for event in received), received
    text = "".join(event.text for event in received if isinstance(event, TextDelta))
    assert text == "chunk-0 chunk-1 chunk-2 "
    assert (info.value.pid, info.value.exit_code, info.value.signal) == (pid, 14, None)
    # Nothing of the streamed run was committed.
    assert user_prompts(await axon.history("c")) == ["first"]

    await wait_until_serving(axon, "m", replaced=[pid])
    reply = await axon.send_message("m", "after", conversation_id="c")
    assert reply.output == "echo: after"
    assert user_prompts(await axon.history("c")) == ["first", "after"]


# ------------------------------------------------------------------ crash during start-up


async def test_start_up_failures_are_restarted_until_the_worker_comes_up(
    start_axon: StartAxon, events: EventLog, tmp_path: Path
) -> None:
    counter = tmp_path / "n"
    counter.write_text("2")
    axon = await start_axon(
        AgentSpec(id="flaky", agent=FLAKY_STARTUP, env={STARTUP_FAILURES_ENV_VAR: str(counter)})
    )
    status = axon.agent("flaky")
    assert status.state == "running"
    assert status.restarts == 2
    assert [(e.during_startup, e.exit_code, e.signal) for e in status.recent_exits] == [
        (True, 3, None),
        (True, 3, None),
    ]
    assert counter.read_text().strip() == "0"
    assert (await axon.send_message("flaky", "hello")).output == "echo: hello"
    # Each failed start-up told why on stderr, captured as an event of the worker that died.
    for record in status.recent_exits:
        line = await events.wait_for(
            "worker.output",
            agent="flaky",
            pid=record.pid,
            where=lambda f: "simulated start-up failure" in f["line"],
        )
        assert line.fields["stream"] == "stderr"


async def test_an_agent_that_never_starts_ends_failed_while_others_serve(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(
        AgentSpec(
            id="broken",
            agent=RAISE_AT_STARTUP,
            supervisor=supervision(max_restarts=2, max_seconds=300),
        ),
        misbehaving("ok"),
    )
    broken = axon.agent("broken")
    assert broken.state == "failed"
    assert broken.restarts == 2
    assert [(e.during_startup, e.exit_code) for e in broken.recent_exits] == [(True, 3)] * 3
    assert [w.state for w in broken.workers] == ["stopped"]
    assert len(events.find("agent.failed", agent="broken")) == 1

    mark = events.mark()
    with pytest.raises(AgentUnavailable) as info:
        await axon.send_message("broken", "hello")
    assert info.value.agent_id == "broken"
    assert info.value.state == "failed"
    assert info.value.retry_after > 0
    assert events.find("run.routed", since=mark) == []  # refused at once, never routed

    assert axon.agent("ok").state == "running"
    assert (await axon.send_message("ok", "hello")).output == "echo: hello"


# ----------------------------------------------------------- intensity, backoff, FAILED


async def test_rapid_crashes_back_off_exponentially_then_fail_then_recover(
    start_axon: StartAxon, events: EventLog
) -> None:
    initial = 0.05
    flaky = supervision(
        max_restarts=3, max_seconds=120, backoff_initial=initial, backoff_max=2, failed_cooldown=1.0
    )
    axon = await start_axon(misbehaving("a", supervisor=flaky), misbehaving("b"))
    await axon.send_message("b", "warm-up")  # later replies of b are quick
    b_pid = pid_of(axon, "b")

    pids: list[int] = []
    for _ in range(4):
        status = await wait_until_serving(axon, "a", replaced=pids)
        pid = status.workers[0].pid
        assert pid is not None
        pids.append(pid)
        with pytest.raises(AgentCrashed) as info:
            await axon.send_message("a", "crash")
        assert (info.value.pid, info.value.exit_code) == (pid, 13)

    # The 4th crash is one restart too many inside the window: FAILED, refused at once.
    assert axon.agent("a").state == "failed"
    failed = only(events.find("agent.failed", agent="a"))
    assert failed.levelno == logging.ERROR
    assert failed.fields["cooldown_s"] == 1.0
    with pytest.raises(AgentUnavailable) as unavailable:
        await axon.send_message("a", "hello")
    assert unavailable.value.state == "failed"
    assert unavailable.value.retry_after > 0
    # The other agent is untouched and answers while "a" is FAILED (b is warm: its echo takes
    # milliseconds, well inside a's 1 s cool-down).
    reply = await axon.send_message("b", "still here")
    assert reply.output == "echo: still here"
    assert axon.agent("a").state == "failed"
    assert pid_of(axon, "b") == b_pid
    assert axon.agent("b").restarts == 0

    restarts = events.find("agent.restart", agent="a")
    assert [r.fields["attempt"] for r in restarts] == [1, 2, 3]
    delays: list[float] = [r.fields["delay_s"] for r in restarts]
    for attempt, delay in enumerate(delays, start=1):
        base = initial * 2 ** (attempt - 1)  # doubling per consecutive crash, jitter in [1/2, 1]
        assert base / 2 - 1e-4 <= delay <= base + 1e-4, (attempt, delays)
    assert delays[2] > delays[0]

    # After the cool-down the agent comes back by itself, with a fresh restart budget.
    status = await wait_until(
        axon,
        "a",
        lambda s: s.state == "running" and all(w.pid not in pids for w in s.workers),
    )
    assert (await axon.send_message("a", "back")).output == "echo: back"


async def test_restart_agent_revives_a_failed_agent_and_cycles_a_running_one(
    start_axon: StartAxon,
) -> None:
    # No restart allowed and a cool-down far away: only the manual restart can revive it.
    never = supervision(max_restarts=0, failed_cooldown=600)
    axon = await start_axon(misbehaving("a", workers=2, supervisor=never))
    await axon.send_message("a", "first", conversation_id="c")
    old = [pid_of(axon, "a", i) for i in range(2)]
    # Worker 0 takes the crash (least loaded, first); worker 1 is stopped because of FAILED.
    with pytest.raises(AgentCrashed):
        await axon.send_message("a", "crash")
    assert axon.agent("a").state == "failed"

    status = await axon.restart_agent("a")
    assert status.state == "running"
    assert [w.state for w in status.workers] == ["running", "running"]
    revived = [w.pid for w in status.workers]
    assert None not in revived
    assert not set(revived) & set(old)
    assert not any(pid_alive(pid) for pid in old)
    assert (await axon.send_message("a", "second", conversation_id="c")).output == "echo: second"

    # Restarting a RUNNING agent replaces every one of its workers.
    status = await axon.restart_agent("a")
    assert status.state == "running"
    assert [w.state for w in status.workers] == ["running", "running"]
    cycled = [w.pid for w in status.workers]
    assert None not in cycled
    assert not set(cycled) & set(revived)
    assert not any(pid_alive(pid) for pid in revived)
    assert (await axon.send_message("a", "third", conversation_id="c")).output == "echo: third"
    assert user_prompts(await axon.history("c")) == ["first", "second", "third"]


# ------------------------------------------------------------------------------ strategies


@pytest.mark.parametrize(
    ("strategy", "replaced"),
    [
        ("one_for_one", {1}),
        ("one_for_all", {0, 1, 2}),
        ("rest_for_one", {1, 2}),
    ],
)
async def test_strategy_decides_which_workers_are_replaced(
    start_axon: StartAxon, strategy: str, replaced: set[int]
) -> None:
    axon = await start_axon(misbehaving("a", workers=3, supervisor=supervision(strategy=strategy)))
    before = [pid_of(axon, "a", i) for i in range(3)]
    assert kill_worker(axon, "a", 1) == before[1]

    status = await wait_until_serving(axon, "a", replaced=[before[i] for i in replaced])
    after = [w.pid for w in status.workers]
    for i in range(3):
        if i in replaced:
            assert after[i] != before[i], (i, before, after)
            assert not pid_alive(before[i])
        else:
            assert after[i] == before[i], (i, before, after)
    assert [w.restarts for w in status.workers] == [int(i in replaced) for i in range(3)]
    assert status.restarts == 1
    assert (await axon.send_message("a", "hello")).output == "echo: hello"


# --------------------------------------------------------------------------- restart types


async def test_transient_workers_are_restarted_only_after_an_abnormal_exit(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(
        misbehaving("normal", restart="transient"), misbehaving("abnormal", restart="transient")
    )
    normal_pid = pid_of(axon, "normal")
    with pytest.raises(AgentCrashed) as info:
        await axon.send_message("normal", "crash:exit:0")
    assert (info.value.pid, info.value.exit_code, info.value.signal) == (normal_pid, 0, None)
    status = axon.agent("normal")
    assert [w.state for w in status.workers] == ["stopped"]
    assert status.state == "stopped"
    assert status.restarts == 0
    with pytest.raises(AgentUnavailable) as unavailable:
        await axon.send_message("normal", "hello")
    assert unavailable.value.state == "stopped"

    abnormal_pid = pid_of(axon, "abnormal")
    with pytest.raises(AgentCrashed) as info:
        await axon.send_message("abnormal", "crash")
    assert info.value.exit_code == 13
    status = await wait_until_serving(axon, "abnormal", replaced=[abnormal_pid])
    assert status.restarts == 1
    assert (await axon.send_message("abnormal", "hello")).output == "echo: hello"

    # Meanwhile the normally exited worker was never started again.
    normal = axon.agent("normal").workers[0]
    assert (normal.state, normal.generation) == ("stopped", 1)


async def test_temporary_workers_are_never_restarted(start_axon: StartAxon) -> None:
    axon = await start_axon(misbehaving("temp", restart="temporary"))
    pid = pid_of(axon, "temp")
    with pytest.raises(AgentCrashed) as info:
        await axon.send_message("temp", "crash")
    assert (info.value.pid, info.value.exit_code) == (pid, 13)
    status = axon.agent("temp")
    assert status.state == "stopped"
    assert [(w.state, w.generation) for w in status.workers] == [("stopped", 1)]
    assert status.restarts == 0
    assert not pid_alive(pid)
    with pytest.raises(AgentUnavailable) as unavailable:
        await axon.send_message("temp", "hello")
    assert unavailable.value.state == "stopped"


# ------------------------------------------------------------------------------- isolation


async def test_a_crash_looping_agent_does_not_disturb_another(
    start_axon: StartAxon, events: EventLog
) -> None:
    crashes = 3
    axon = await start_axon(
        misbehaving("a", supervisor=supervision(max_restarts=10, max_seconds=120)),
        misbehaving("b"),
    )
    b_pid = pid_of(axon, "b")
    mark = events.mark()

    async def crash_loop() -> None:
        seen: list[int] = []
        for _ in range(crashes):
            status = await wait_until_serving(axon, "a", replaced=seen)
            pid = status.workers[0].pid
            assert pid is not None
            seen.append(pid)
            with pytest.raises(AgentCrashed):
                await axon.send_message("a", "crash")
        await wait_until_serving(axon, "a", replaced=seen)

    looping = asyncio.create_task(crash_loop())
    rounds = 0
    try:
        # Keep 20 concurrent requests on b in flight for as long as a crash-loops.
        while not looping.done() or rounds == 0:
            prompts = [f"sleep:0.2{rounds:03d}{i:02d}" for i in range(20)]
            replies = await asyncio.gather(
                *(
                    axon.send_message("b", p, conversation_id=f"b-{rounds}-{i}")
                    for i, p in enumerate(prompts)
                )
            )
            assert [r.output for r in replies] == [f"slept {p[6:]}" for p in prompts]
            rounds += 1
        await looping
    finally:
        looping.cancel()

    assert axon.agent("a").restarts == crashes
    b = axon.agent("b")
    assert (b.state, b.restarts, pid_of(axon, "b")) == ("running", 0, b_pid)
    assert events.find("agent.state", since=mark, agent="b") == []
    assert len(events.find("worker.exit", since=mark, agent="a")) == crashes
    assert events.find("worker.exit", since=mark, agent="b") == []
