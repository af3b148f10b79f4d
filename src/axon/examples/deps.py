"""An agent that needs deps, built by a factory inside the worker (``deps = "...:make_deps"``).

Its tool reads the deps, so a reply proves which process built them::

    [[agents]]
    id = "greeter"
    agent = "axon.examples.deps:deps_agent"
    deps = "axon.examples.deps:make_deps"
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic_ai import Agent, RunContext
from pydantic_ai.models.test import TestModel

__all__ = ["GREETING_ENV_VAR", "Greeting", "deps_agent", "make_deps"]

GREETING_ENV_VAR = "AXON_EXAMPLE_GREETING"


@dataclass(frozen=True)
class Greeting:
    text: str
    pid: int


def make_deps() -> Greeting:
    """Called once per worker process, after it imported the agent."""
    return Greeting(text=os.environ.get(GREETING_ENV_VAR, "hello"), pid=os.getpid())


deps_agent = Agent(TestModel(), deps_type=Greeting, name="greeter")


@deps_agent.tool
def greet(ctx: RunContext[Greeting]) -> str:
    """Greet from the process that built the deps."""
    return f"{ctx.deps.text} from pid {ctx.deps.pid}"
