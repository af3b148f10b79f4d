"""An orchestrator that runs out of file descriptors while a worker restarts (issue 12).

    python tests/integration/fd_exhaustion_child.py [--cold]

It starts an ``Axon`` with one misbehaving agent, takes every file descriptor it may open,
SIGKILLs the worker, waits until a restart fails for want of descriptors (``worker.exit`` with
cause ``spawn_failed``), gives the descriptors back, waits until the agent serves again, and
stops. Each step prints one JSON line; the last is ``{"step": "stopped"}``. A step that cannot
happen makes it exit non-zero (the test bounds it with a timeout too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal

from axon import AgentSpec, Axon, RuntimeSpec, SupervisorSpec
from axon.testing import capture_events, wait_until_serving, worker_pids

SUPERVISOR = SupervisorSpec(
    backoff_initial=0.05, backoff_max=0.2, max_restarts=1000, max_seconds=10, shutdown_timeout=3
)


def say(step: str, **facts: object) -> None:
    print(json.dumps({"step": step, **facts}), flush=True)


def take_every_descriptor() -> list[int]:
    taken: list[int] = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return taken


async def main(cold: bool) -> None:
    spec = AgentSpec(id="a", agent="axon.examples.misbehaving:misbehaving_agent")
    runtime = RuntimeSpec(fork_server=not cold)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard))
    with capture_events() as events:
        async with Axon([spec], supervisor=SUPERVISOR, runtime=runtime) as axon:
            reply = await axon.send_message("a", "before")
            (pid,) = worker_pids(axon, "a")
            say("serving", pid=pid, output=reply.output)
            mark = events.mark()
            taken = take_every_descriptor()
            os.kill(pid, signal.SIGKILL)
            failed = await asyncio.wait_for(
                events.wait_for("worker.exit", since=mark, cause="spawn_failed"), 20
            )
            for fd in taken:
                os.close(fd)
            say("spawn_failed", reason=failed.fields["reason"], taken=len(taken))
            status = await asyncio.wait_for(wait_until_serving(axon, "a", replaced=[pid]), 20)
            reply = await axon.send_message("a", "after")
            say("recovered", pid=status.workers[0].pid, output=reply.output)
    say("stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true")
    asyncio.run(main(parser.parse_args().cold))
