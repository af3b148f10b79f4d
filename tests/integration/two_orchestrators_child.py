"""One of the two orchestrator processes of ``test_two_orchestrators.py``.

Usage: ``python two_orchestrators_child.py STORE_URL TAG N OUT_FILE``

Starts an ``Axon`` with the misbehaving agent on ``STORE_URL``, prints ``ready``, waits for a
line on stdin (the parent's go signal, so that both processes start sending together), then
sends ``N`` messages at once to the conversation ``shared`` (the runtime queues them in arrival
order). A run the store refuses because the other process moved the conversation on
(``ConversationBusy``, reason ``conflict``) is not acknowledged; the child records
``conflict PROMPT`` and sends the same prompt again, as a client would, so that every prompt is
acknowledged in the end whichever process wins the races. Each outcome is appended to
``OUT_FILE`` as soon as it is known, in the order the replies arrive: ``ok PROMPT`` for an
acknowledged reply, ``error PROMPT TYPE REASON`` for any other ``AxonError`` (``REASON`` is its
``reason`` fact, ``-`` if none).

The prompts are ``sleep:0.01TAGIII`` (``III`` the message index), so every prompt is unique and
every run takes about 10 ms, long enough for the two processes' runs to overlap.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from axon import AgentSpec, Axon, AxonError, ConversationBusy, RuntimeSpec, SupervisorSpec

AGENT = "misbehaving"
CONVERSATION = "shared"


def prompt_for(tag: str, index: int) -> str:
    return f"sleep:0.01{tag}{index:03d}"


async def send(axon: Axon, prompt: str, out: TextIO) -> None:
    while True:
        try:
            await axon.send_message(AGENT, prompt, conversation_id=CONVERSATION, timeout=120)
        except ConversationBusy as exc:
            if exc.facts.get("reason") != "conflict":
                raise
            out.write(f"conflict {prompt}\n")
            out.flush()
            continue  # refused, not acknowledged: send it again
        except AxonError as exc:
            out.write(f"error {prompt} {exc.type} {exc.facts.get('reason', '-')}\n")
        else:
            out.write(f"ok {prompt}\n")
        out.flush()
        return


async def main(store_url: str, tag: str, n: int, out: TextIO) -> None:
    axon = Axon(
        [AgentSpec(id=AGENT, agent="axon.examples.misbehaving:misbehaving_agent", workers=1)],
        runtime=RuntimeSpec(store=store_url),
        supervisor=SupervisorSpec(heartbeat_interval=0.25, heartbeat_timeout=10.0),
    )
    async with axon:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        # Created in order, so they reach the conversation's queue in order.
        tasks = [asyncio.create_task(send(axon, prompt_for(tag, i), out)) for i in range(n)]
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    url, tag_arg, n_arg, out_arg = sys.argv[1:]
    with open(out_arg, "w") as out_file:
        asyncio.run(main(url, tag_arg, int(n_arg), out_file))
