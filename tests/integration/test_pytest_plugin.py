"""The pytest fixtures users get (``axon.testing.pytest_plugin``), in a project of their own:
the README's example runs as written, in pytest-asyncio's strict mode. (Axon's own suite uses
the same fixtures through ``start_axon`` and ``serve_axon`` in tests/conftest.py, whose teardown
checks for leftover workers in every test.)"""

from __future__ import annotations

import pytest

README_TEST = """
import signal

import httpx
import pytest

from axon import AgentSpec, SupervisorSpec
from axon.testing import assert_history, kill_worker, wait_until_serving, worker_pids

FAST = SupervisorSpec(backoff_initial=0.01, heartbeat_timeout=4.0)


@pytest.mark.asyncio
async def test_history_survives_a_worker_crash(axon_runtime):
    axon = await axon_runtime(
        AgentSpec(id="weather", agent="axon.examples.weather:weather_agent"), supervisor=FAST
    )
    await axon.send_message("weather", "What is the weather in Paris?", conversation_id="c-1")
    pid = kill_worker(axon, "weather")
    await wait_until_serving(axon, "weather", replaced=[pid])
    await axon.send_message("weather", "What is the weather in Rome?", conversation_id="c-1")
    await assert_history(
        axon, "c-1", ["What is the weather in Paris?", "What is the weather in Rome?"]
    )


@pytest.mark.asyncio
async def test_a_hung_worker_is_replaced(axon_runtime):
    axon = await axon_runtime(
        AgentSpec(id="m", agent="axon.examples.misbehaving:misbehaving_agent"),
        supervisor=SupervisorSpec(heartbeat_interval=0.2, heartbeat_timeout=1.0),
    )
    (pid,) = worker_pids(axon, "m")
    kill_worker(axon, "m", sig=signal.SIGSTOP)
    await wait_until_serving(axon, "m", replaced=[pid])


@pytest.mark.asyncio
async def test_the_server_answers(axon_server):
    server = await axon_server()  # the built-in demo
    async with httpx.AsyncClient(base_url=server.url) as client:
        reply = await client.post(
            "/v1/agents/misbehaving/messages", json={"prompt": "hi", "conversation_id": "c"}
        )
    assert reply.json()["output"] == "echo: hi"


@pytest.mark.asyncio
async def test_assert_history_says_what_differs(axon_runtime):
    spec = AgentSpec(id="m", agent="axon.examples.misbehaving:misbehaving_agent")
    axon = await axon_runtime(spec)
    await axon.send_message("m", "one", conversation_id="c")
    with pytest.raises(AssertionError, match="committed prompts \\\\['one'\\\\], expected"):
        await assert_history(axon, "c", ["one", "two"])
"""


def test_the_readme_example_runs_in_a_project_of_its_own(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["axon.testing.pytest_plugin"]\n')
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    pytester.makepyfile(test_readme=README_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=240)
    result.assert_outcomes(passed=4)
