"""How a worker builds its agent: factories, model overrides and deps factories."""

from __future__ import annotations

from axon import AgentSpec

from ..conftest import StartAxon

WEATHER_FACTORY = "axon.examples.weather:make_weather_agent"


async def test_deps_factory_runs_inside_the_worker_with_the_agents_env(
    start_axon: StartAxon,
) -> None:
    axon = await start_axon(
        AgentSpec(
            id="greeter",
            agent="axon.examples.deps:deps_agent",
            deps="axon.examples.deps:make_deps",
            env={"AXON_EXAMPLE_GREETING": "bonjour"},
        )
    )
    (worker,) = axon.agent("greeter").workers
    reply = await axon.send_message("greeter", "say hi")
    assert reply.output == f'{{"greet":"bonjour from pid {worker.pid}"}}'


async def test_model_override_replaces_the_agents_own_model(start_axon: StartAxon) -> None:
    axon = await start_axon(
        AgentSpec(id="own", agent=WEATHER_FACTORY),
        AgentSpec(id="overridden", agent=WEATHER_FACTORY, model="test"),
    )
    prompt = "What is the weather in Paris?"
    own = await axon.send_message("own", prompt)
    overridden = await axon.send_message("overridden", prompt)
    # The agent's FunctionModel quotes the prompt; pydantic-ai's TestModel answers with the
    # JSON of every tool's result instead.
    assert prompt in own.output
    assert overridden.output.startswith('{"get_lat_lng":')
    assert prompt not in overridden.output


async def test_a_factory_that_returns_something_else_is_a_start_up_failure(
    start_axon: StartAxon,
) -> None:
    from axon import SupervisorSpec

    axon = await start_axon(
        AgentSpec(id="bad", agent="axon.examples.deps:make_deps"),
        supervisor=SupervisorSpec(max_restarts=0, failed_cooldown=600),
    )
    status = axon.agent("bad")
    assert status.state == "failed"
    assert status.recent_exits[-1].exit_code == 3
    assert status.recent_exits[-1].during_startup
