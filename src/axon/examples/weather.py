"""An offline, deterministic weather agent that behaves like a tool-using LLM.

The agent has two tools, ``get_lat_lng`` and ``get_weather``, both returning fake but stable
data derived from a hash of their input. Its model is a
:class:`~pydantic_ai.models.function.FunctionModel` (with both a plain and a streaming function)
that, for the last user prompt of the run:

1. calls ``get_lat_lng`` with the location extracted from the prompt (the text after
   ``"weather in "`` up to ``" on "``, ``"?"`` or the end; the whole prompt if there is no match),
2. on that tool's result, calls ``get_weather`` with the returned coordinates,
3. on that result, answers with text quoting the exact user prompt, e.g.
   ``The weather in Paris is 21°C and sunny (you asked: "What is the weather in Paris?")``.

Quoting the exact prompt lets tests detect cross-talk between conversations. Streamed runs yield
the same tool calls (as ``DeltaToolCalls``) and the final answer word by word.

Every model call first awaits ``asyncio.sleep(latency)``, where ``latency`` is read (in seconds)
from the ``AXON_EXAMPLE_LATENCY`` environment variable at call time (default ``0``: no sleep).

Exports: ``weather_agent`` (module-level ``Agent[None, str]`` named ``"weather"``) and
``make_weather_agent()`` (builds a fresh one). No network model is ever used.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCalls, FunctionModel

from axon.examples._scripting import current_turn, step_response, tool_call, tool_call_delta

__all__ = [
    "LATENCY_ENV_VAR",
    "get_lat_lng",
    "get_weather",
    "make_weather_agent",
    "weather_agent",
]

LATENCY_ENV_VAR = "AXON_EXAMPLE_LATENCY"
"""Environment variable holding the simulated per-model-call latency, in seconds."""

_DESCRIPTIONS = ("sunny", "cloudy", "rainy", "windy", "foggy", "snowy", "stormy", "drizzly")
_LOCATION_RE = re.compile(r"weather in (.+?)(?: on |\?|$)", re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------------------- tools


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def get_lat_lng(location_description: str) -> dict[str, float]:
    """Get the latitude and longitude of a location.

    Args:
        location_description: A description of a location.
    """
    digest = _digest(location_description.strip().lower())
    lat = int.from_bytes(digest[:4], "big") / 0xFFFFFFFF * 180.0 - 90.0
    lng = int.from_bytes(digest[4:8], "big") / 0xFFFFFFFF * 360.0 - 180.0
    return {"lat": round(lat, 4), "lng": round(lng, 4)}


def get_weather(lat: float, lng: float) -> dict[str, Any]:
    """Get the weather at a location.

    Args:
        lat: Latitude of the location.
        lng: Longitude of the location.
    """
    digest = _digest(f"{lat:.4f},{lng:.4f}")
    temperature = digest[0] % 46 - 10  # -10..35 °C
    description = _DESCRIPTIONS[digest[1] % len(_DESCRIPTIONS)]
    return {"temperature": temperature, "description": description}


# ------------------------------------------------------------------------------- model logic


def _latency() -> float:
    raw = os.environ.get(LATENCY_ENV_VAR, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{LATENCY_ENV_VAR} must be a number of seconds, got {raw!r}") from exc
    return max(value, 0.0)


async def _simulate_latency() -> None:
    latency = _latency()
    if latency > 0:
        await asyncio.sleep(latency)


def _extract_location(prompt: str) -> str:
    match = _LOCATION_RE.search(prompt)
    if match is not None:
        location = match.group(1).strip()
        if location:
            return location
    return prompt.strip() or prompt


def _next_step(messages: Sequence[ModelMessage]) -> ToolCallPart | str:
    """Decide the next step: a tool call, or the final answer text."""
    prompt, returns = current_turn(messages)
    location = _extract_location(prompt)
    weather = next((r for r in reversed(returns) if r.tool_name == "get_weather"), None)
    if weather is not None:
        data = weather.model_response_object()
        return (
            f"The weather in {location} is {data.get('temperature')}°C and "
            f'{data.get("description")} (you asked: "{prompt}")'
        )
    coords = next((r for r in reversed(returns) if r.tool_name == "get_lat_lng"), None)
    if coords is not None:
        data = coords.model_response_object()
        return tool_call("get_weather", {"lat": data.get("lat", 0.0), "lng": data.get("lng", 0.0)})
    return tool_call("get_lat_lng", {"location_description": location})


async def _model_function(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await _simulate_latency()
    return step_response(_next_step(messages))


async def _stream_function(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    await _simulate_latency()
    step = _next_step(messages)
    if isinstance(step, ToolCallPart):
        yield tool_call_delta(step)
        return
    for word in re.findall(r"\S+\s*", step):
        yield word


# ------------------------------------------------------------------------------------- agent


def make_weather_agent() -> Agent[None, str]:
    """Build a fresh, fully offline weather agent."""
    return Agent(
        FunctionModel(_model_function, stream_function=_stream_function, model_name="axon-weather"),
        name="weather",
        output_type=str,
        deps_type=type(None),
        instructions="Be concise, reply with one sentence.",
        tools=[get_lat_lng, get_weather],
    )


weather_agent: Agent[None, str] = make_weather_agent()
