"""An orchestrator process to kill: a load of many conversations on a SQLite store, with a
durable client log of acknowledged replies. Used by ``test_restart_survival.py``.

    python tests/integration/orchestrator_child.py DB ACKS PIDS [--conversations 40]
        [--turns 20] [--concurrency 8]

It starts an ``Axon`` with two agents (``a1``, ``a2``: :data:`counting_agent`) on
``sqlite:///DB``, writes the pids of their workers to PIDS (a JSON list, atomically), prints
``ready``, then sends conversation ``c{i}`` (agent ``a1``/``a2`` alternately) the prompts
``c{i}-t0``, ``c{i}-t1``, ... one at a time, several conversations at once. After EACH reply it
appends ``{"conversation", "prompt", "reply"}`` as one JSON line to ACKS, flushes and fsyncs it,
and prints ``ack`` to stdout, BEFORE the next turn of that conversation is sent. So when this
process is killed, every acknowledged exchange is in ACKS, and at most one exchange per
conversation (the one whose reply had come back but whose ack was not yet written) may be
committed without an ack.

The module also defines :data:`counting_agent`, an offline agent whose reply proves which
history its worker was given: ``#N echo: PROMPT`` where ``N`` is the number of user prompts in
the history plus this one. The prompt ``crash`` makes its worker exit with code 13.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from axon import AgentSpec, Axon, RuntimeSpec, SupervisorSpec
from axon.testing import user_prompts

ROOT = Path(__file__).resolve().parents[2]
COUNTING_AGENT = "tests.integration.orchestrator_child:counting_agent"


def _count_and_echo(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompts = user_prompts(messages)
    if prompts[-1] == "crash":
        os._exit(13)
    return ModelResponse(parts=[TextPart(f"#{len(prompts)} echo: {prompts[-1]}")])


counting_agent: Agent[None, str] = Agent(
    FunctionModel(_count_and_echo, model_name="axon-counting"), name="counting", output_type=str
)


def counting_spec(agent_id: str, **kw: Any) -> AgentSpec:
    """An ``AgentSpec`` for :data:`counting_agent` whose workers can import this module."""
    return AgentSpec(id=agent_id, agent=COUNTING_AGENT, env={"PYTHONPATH": str(ROOT)}, **kw)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def _run(args: argparse.Namespace, db: Path, acks: TextIO) -> None:
    agents = ["a1", "a2"]
    axon = Axon(
        [counting_spec(agent_id) for agent_id in agents],
        runtime=RuntimeSpec(store=f"sqlite:///{db}"),
        supervisor=SupervisorSpec(heartbeat_interval=0.25, heartbeat_timeout=10.0),
    )
    async with axon:
        pids = [w.pid for a in axon.agents() for w in a.workers if w.pid is not None]
        _write_atomically(Path(args.pids), json.dumps(pids))
        print("ready", flush=True)

        semaphore = asyncio.Semaphore(args.concurrency)

        async def conversation(i: int) -> None:
            cid = f"c{i}"
            for turn in range(args.turns):
                prompt = f"{cid}-t{turn}"
                async with semaphore:
                    reply = await axon.send_message(
                        agents[i % 2], prompt, conversation_id=cid, timeout=60
                    )
                # Durable before the next turn is sent (blocking the loop for it on purpose).
                acks.write(
                    json.dumps({"conversation": cid, "prompt": prompt, "reply": reply.output})
                )
                acks.write("\n")
                acks.flush()
                os.fsync(acks.fileno())
                print("ack", flush=True)

        await asyncio.gather(*(conversation(i) for i in range(args.conversations)))
    print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("acks")
    parser.add_argument("pids")
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    with open(args.acks, "a", encoding="utf-8") as acks:
        asyncio.run(_run(args, Path(args.db).resolve(), acks))


if __name__ == "__main__":
    main()
