"""Finding, killing and waiting for workers of a running ``Axon``."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from axon.pool.groups import pid_alive
from axon.pool.process import WorkerProcess
from axon.runtime import Axon
from axon.status import AgentStatus

__all__ = [
    "all_worker_pids",
    "assert_history",
    "cut_connection",
    "descendant_pids",
    "kill_worker",
    "pid_alive",
    "user_prompts",
    "wait_until",
    "wait_until_serving",
    "worker_pids",
]


def all_worker_pids(axon: Axon) -> set[int]:
    """The pid of every worker process ``axon`` has now, of every agent."""
    return {w.pid for a in axon.agents() for w in a.workers if w.pid is not None}


def descendant_pids(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (e.g. the worker processes of an ``axon serve``)."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def worker_pids(axon: Axon, agent_id: str) -> list[int | None]:
    """The pid of each worker slot of ``agent_id`` (None where no process runs)."""
    return [
        w.pid if w.state in ("starting", "running") else None for w in axon.agent(agent_id).workers
    ]


def kill_worker(axon: Axon, agent_id: str, index: int = 0, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to worker ``index`` of ``agent_id``; its pid."""
    pid = worker_pids(axon, agent_id)[index]
    if pid is None:
        raise LookupError(f"worker {index} of {agent_id!r} is not running")
    os.kill(pid, sig)
    return pid


def cut_connection(axon: Axon, agent_id: str, index: int = 0) -> int:
    """Drop the orchestrator's socket to worker ``index`` abruptly (a communication failure);
    the worker's pid. The worker notices EOF, exits with code 5 and is restarted."""
    worker = axon.hosted(agent_id).worker_at(index)
    if not isinstance(worker, WorkerProcess) or worker.pid is None:
        raise LookupError(f"worker {index} of {agent_id!r} is not running")
    worker.cut_connection()
    return worker.pid


async def wait_until(
    axon: Axon,
    agent_id: str,
    predicate: Callable[[AgentStatus], bool],
    timeout: float = 30.0,
) -> AgentStatus:
    """Wait until ``predicate(axon.agent(agent_id))`` holds, re-checked at every state change
    of the agent or its workers; ``TimeoutError`` after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await axon.hosted(agent_id).wait_for(predicate)


async def wait_until_serving(
    axon: Axon,
    agent_id: str,
    *,
    replaced: Iterable[int] = (),
    timeout: float = 30.0,
) -> AgentStatus:
    """Wait until every worker of ``agent_id`` is running and none has a pid in ``replaced``."""
    async with asyncio.timeout(timeout):
        return await axon.hosted(agent_id).wait_running(replaced=set(replaced))


def user_prompts(messages: Sequence[Any]) -> list[str]:
    """The user prompts of a pydantic-ai message history, in order."""
    from pydantic_ai.messages import ModelRequest, UserPromptPart

    return [
        part.content
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart) and isinstance(part.content, str)
    ]


async def assert_history(axon: Axon, conversation_id: str, prompts: Sequence[str]) -> None:
    """Assert that the conversation's committed history is exactly ``prompts``, in order, each
    answered (no exchange cut short): what the seed's tests check after every fault.
    ``AssertionError`` says what differs."""
    from axon.chaos.invariants import ConversationHistory

    history = ConversationHistory.from_json(
        conversation_id, await axon.export_conversation(conversation_id)
    )
    committed = [e.prompt for e in history.exchanges]
    if committed != list(prompts):
        raise AssertionError(
            f"conversation {conversation_id!r}: committed prompts {committed!r}, "
            f"expected {list(prompts)!r}"
        )
    partial = [e.prompt for e in history.exchanges if not e.answered]
    if partial:
        raise AssertionError(f"conversation {conversation_id!r}: unanswered {partial!r}")
