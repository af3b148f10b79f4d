"""The fork server (docs/fork-server.md): workers forked from warm zygotes, the zygotes
supervised, code picked up on ``restart_agent``, cold starts whenever a zygote cannot fork, and
no process outliving the runtime or the orchestrator.

Real processes throughout: the process tree is read from ``/proc`` (psutil), zygotes and workers
are killed with real signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from axon import AgentSpec, RuntimeSpec
from axon.examples.misbehaving import IMPORT_DELAY_ENV_VAR, IMPORT_THREAD_ENV_VAR
from axon.testing import EventLog, kill_worker, wait_until_serving
from axon.testing.helpers import descendant_pids, pid_alive, worker_pids

from ..conftest import MISBEHAVING, StartAxon

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def parent_of(pid: int) -> int:
    return psutil.Process(pid).ppid()


async def test_workers_are_forked_from_their_agents_zygote(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(
        AgentSpec(id="a", agent=MISBEHAVING, workers=2), AgentSpec(id="b", agent=MISBEHAVING)
    )
    ready = {e.fields["pid"]: e.fields["start"] for e in events.find("worker.ready")}
    root = events.find("zygote.ready", agent=None)[0].fields["pid"]
    zygotes = {e.fields["agent"]: e.fields["pid"] for e in events.find("zygote.ready")}
    assert parent_of(root) == os.getpid()  # the root is our child ...
    for agent in ("a", "b"):
        assert parent_of(zygotes[agent]) == root  # ... each agent's zygote the root's ...
        for pid in worker_pids(axon, agent):
            assert ready[pid] == "fork"
            assert parent_of(pid) == zygotes[agent]  # ... and the workers the zygote's
            assert os.getpgid(pid) == pid  # each worker leads its own process group
    assert (await axon.send_message("a", "hello")).output == "echo: hello"
    # A crash restart is forked too.
    mark = events.mark()
    old = kill_worker(axon, "a", sig=signal.SIGKILL)
    await wait_until_serving(axon, "a", replaced=[old])
    replaced = await events.wait_for("worker.ready", since=mark, agent="a")
    assert replaced.fields["start"] == "fork"
    assert parent_of(replaced.fields["pid"]) == zygotes["a"]
    exit_event = await events.wait_for("worker.exit", since=mark, pid=old)
    assert exit_event.fields["signal"] == signal.SIGKILL  # the status the zygote reported


async def test_the_fork_server_can_be_turned_off(start_axon: StartAxon, events: EventLog) -> None:
    axon = await start_axon(
        AgentSpec(id="a", agent=MISBEHAVING), runtime=RuntimeSpec(fork_server=False)
    )
    (pid,) = worker_pids(axon, "a")
    assert parent_of(pid) == os.getpid()
    assert [e.fields["start"] for e in events.find("worker.ready")] == ["cold"]
    assert events.find("zygote.ready") == []


async def test_a_dead_root_zygote_is_restarted_workers_live_on_and_start_cold_meanwhile(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(AgentSpec(id="a", agent=MISBEHAVING, workers=2))
    root = events.find("zygote.ready", agent=None)[0].fields["pid"]
    zygote = events.find("zygote.ready", agent="a")[0].fields["pid"]
    workers = worker_pids(axon, "a")
    mark = events.mark()
    os.kill(root, signal.SIGKILL)
    down = await events.wait_for("zygote.exit", since=mark, pid=root)
    assert down.fields["signal"] == signal.SIGKILL
    assert down.levelno == logging.WARNING
    # Its agent zygote went with it; the workers did not, and still serve.
    await exited([zygote])
    assert all(pid_alive(pid) for pid in workers)
    assert worker_pids(axon, "a") == workers
    assert (await axon.send_message("a", "still here")).output == "echo: still here"
    # While the root is down, a worker that dies is replaced cold (nothing waits for it).
    killed = kill_worker(axon, "a", index=0, sig=signal.SIGKILL)
    cold = await events.wait_for("worker.ready", since=mark, agent="a")
    back = await events.wait_for("zygote.ready", since=mark, agent=None, timeout=30)
    if events.index(cold) < events.index(back):
        assert cold.fields["start"] == "cold"
    # Once it is back, the next worker is forked from a new agent zygote.
    await wait_until_serving(axon, "a", replaced=[killed])
    mark = events.mark()
    old = kill_worker(axon, "a", index=1, sig=signal.SIGKILL)
    new = await events.wait_for("worker.ready", since=mark, agent="a")
    assert new.fields["start"] == "fork"
    new_zygote = events.find("zygote.ready", agent="a")[-1]  # forked from the new root
    assert new_zygote.fields["pid"] != zygote
    assert parent_of(new.fields["pid"]) == new_zygote.fields["pid"]
    assert parent_of(new_zygote.fields["pid"]) == back.fields["pid"]
    await wait_until_serving(axon, "a", replaced=[old])


async def test_a_killed_agent_zygote_leaves_its_workers_and_is_forked_again(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(AgentSpec(id="a", agent=MISBEHAVING, workers=2))
    zygote = events.find("zygote.ready", agent="a")[0].fields["pid"]
    workers = worker_pids(axon, "a")
    mark = events.mark()
    os.kill(zygote, signal.SIGKILL)
    gone = await events.wait_for("zygote.exit", since=mark, pid=zygote)
    assert gone.fields["agent"] == "a"
    assert all(pid_alive(pid) for pid in workers)  # re-parented to the root, still serving
    assert (await axon.send_message("a", "orphaned")).output == "echo: orphaned"
    old = kill_worker(axon, "a", index=0, sig=signal.SIGKILL)
    new = await events.wait_for("worker.ready", since=mark, agent="a")
    again = await events.wait_for("zygote.ready", since=mark, agent="a")
    assert new.fields["start"] == "fork"
    assert parent_of(new.fields["pid"]) == again.fields["pid"] != zygote
    # The old worker's exit was still reaped and reported (by the root, its new parent).
    exit_event = await events.wait_for("worker.exit", since=mark, pid=old)
    assert exit_event.fields["signal"] == signal.SIGKILL
    await wait_until_serving(axon, "a", replaced=[old])


AGENT_V = """
from pydantic_ai import Agent
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart

VERSION = {version!r}

def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart(VERSION)])

agent = Agent(FunctionModel(reply))
"""


async def test_restart_agent_picks_up_changed_code_a_crash_restart_does_not(
    start_axon: StartAxon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "versioned_agent.py"
    module.write_text(AGENT_V.format(version="v1"))
    importable(tmp_path, monkeypatch)
    axon = await start_axon(AgentSpec(id="v", agent="versioned_agent:agent"))
    assert (await axon.send_message("v", "which?")).output == "v1"

    module.write_text(AGENT_V.format(version="v2"))
    old = kill_worker(axon, "v", sig=signal.SIGKILL)  # a crash restart: the code it started with
    await wait_until_serving(axon, "v", replaced=[old])
    assert (await axon.send_message("v", "which?")).output == "v1"

    await axon.restart_agent("v")  # a new zygote imports the module afresh
    assert (await axon.send_message("v", "which?")).output == "v2"


def importable(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Modules in ``directory`` importable here (the config check) and in every process the
    runtime starts."""
    monkeypatch.syspath_prepend(str(directory))
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{directory}{os.pathsep}{path}" if path else str(directory))


# It misbehaves only with its agent's env (the config check imports it here, without it).
BROKEN_AGENT = """
import os
from axon.examples.misbehaving import misbehaving_agent as agent

if os.environ.get("BREAK_AT_IMPORT"):
    raise RuntimeError("this module cannot be imported here")
"""


async def test_an_agent_module_that_starts_a_thread_is_not_forked_but_served_cold(
    start_axon: StartAxon, events: EventLog
) -> None:
    axon = await start_axon(
        AgentSpec(id="t", agent=MISBEHAVING, env={IMPORT_THREAD_ENV_VAR: "1"}),
        AgentSpec(id="m", agent=MISBEHAVING),
    )
    refused = events.find("zygote.refused", agent="t")
    assert len(refused) == 1
    assert "import-time-thread" in refused[0].fields["reason"]
    starts = {e.fields["agent"]: e.fields["start"] for e in events.find("worker.ready")}
    assert starts == {"t": "cold", "m": "fork"}
    assert (await axon.send_message("t", "hi")).output == "echo: hi"


async def test_an_agent_that_cannot_be_imported_fails_as_before(
    start_axon: StartAxon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: EventLog
) -> None:
    """The zygote refuses; the cold worker then reports the import error the usual way."""
    (tmp_path / "broken_agent.py").write_text(BROKEN_AGENT)
    importable(tmp_path, monkeypatch)
    axon = await start_axon(
        AgentSpec(id="bad", agent="broken_agent:agent", env={"BREAK_AT_IMPORT": "1"}),
        AgentSpec(id="ok", agent=MISBEHAVING),
    )
    assert axon.agent("bad").state == "failed"
    reason = events.find("zygote.refused", agent="bad")[0].fields["reason"]
    assert "cannot be imported here" in reason
    failed = events.find("worker.startup_failed", agent="bad")
    assert failed
    assert "cannot be imported here" in failed[0].fields["message"]
    assert (await axon.send_message("ok", "fine")).output == "echo: fine"


async def test_stop_leaves_no_zygote_or_worker(start_axon: StartAxon, events: EventLog) -> None:
    axon = await start_axon(AgentSpec(id="a", agent=MISBEHAVING, workers=2))
    before = set(descendant_pids(os.getpid()))
    zygotes = {e.fields["pid"] for e in events.find("zygote.ready")}
    assert zygotes <= before
    assert len(zygotes) == 2
    await axon.stop()
    assert not {pid for pid in before if pid_alive(pid)}


async def test_forked_workers_and_zygotes_die_with_a_killed_orchestrator(
    axon_server: object, tmp_path: Path
) -> None:
    """SIGKILL ``axon serve``: no handler runs. Its zygotes die by their parent-death signal;
    its forked workers (whose parent is a zygote) by their orchestrator watchdog."""
    server = await axon_server()  # type: ignore[operator]
    tree = descendant_pids(server.pid)
    names = [psutil.Process(p).name() for p in tree]
    assert names.count("axon-zygote") == 1
    assert sum(n.startswith("axon-z:") for n in names) >= 2  # the demo's agents' zygotes
    assert sum(n.startswith("axon-w:") for n in names) >= 2  # and their forked workers
    server.process.kill()
    await server.process.wait()
    await exited(tree)


async def exited(pids: list[int], timeout: float = 10.0) -> None:
    """Until every process of ``pids`` has exited (psutil waits on each)."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, procs, timeout)
    assert not [p for p in alive if pid_alive(p.pid)], f"still alive: {alive}"


async def test_a_stop_while_a_worker_is_being_forked_stops_that_worker_too(
    start_axon: StartAxon, events: EventLog
) -> None:
    """A stop that comes while a worker waits for its zygote (here: a new agent zygote whose
    import takes a second) finds no process yet; the worker must be stopped once it has one,
    or it would serve in a slot being stopped and the stop would never end."""
    axon = await start_axon(AgentSpec(id="s", agent=MISBEHAVING, env={IMPORT_DELAY_ENV_VAR: "1"}))
    zygote = events.find("zygote.ready", agent="s")[0].fields["pid"]
    os.kill(zygote, signal.SIGKILL)  # the next worker needs a new zygote: a slow import
    await events.wait_for("zygote.exit", pid=zygote)
    mark = events.mark()
    kill_worker(axon, "s", sig=signal.SIGKILL)
    await events.wait_for("worker.start", since=mark, agent="s")  # spawning, no process yet
    await asyncio.wait_for(axon.stop(), 30)
    killed = await events.wait_for("worker.kill", since=mark, agent="s")
    assert killed.fields["reason"] == "stopped while it was starting"
    exited = await events.wait_for("worker.exit", since=events.index(killed), agent="s")
    assert exited.fields["cause"] == "requested"
    assert not pid_alive(killed.fields["pid"])
