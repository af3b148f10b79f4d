from axon import AgentSpec
from axon.testing import user_prompts

from ..conftest import WEATHER, StartAxon


async def test_two_turns_of_one_conversation_are_committed_in_order(start_axon: StartAxon) -> None:
    axon = await start_axon(AgentSpec(id="weather", agent=WEATHER))
    first = await axon.send_message("weather", "What is the weather in Paris?", conversation_id="c")
    second = await axon.send_message("weather", "What is the weather in Rome?", conversation_id="c")
    assert "Paris" in first.output
    assert "Rome" in second.output
    assert user_prompts(await axon.history("c")) == [
        "What is the weather in Paris?",
        "What is the weather in Rome?",
    ]
