"""The built-in demo: what ``axon serve`` runs when given no config.

The example agents on offline models (no network, no API key): two weather agents with tools,
like the seed's ``python_agent_1`` / ``python_agent_2``, and the misbehaving agent whose prompts
trigger every fault on demand (see :mod:`axon.examples.misbehaving`). Conversations are kept in
``axon.db`` (SQLite) in the working directory.
"""

from __future__ import annotations

import tomllib

from axon.config import AxonConfig, parse_config

__all__ = ["DEMO_TOML", "demo_config"]

DEMO_TOML = """\
[runtime]
store = "sqlite:///axon.db"
listen = "127.0.0.1:8000"

[[agents]]
id = "python_agent_1"
agent = "axon.examples.weather:weather_agent"
workers = 2

[[agents]]
id = "python_agent_2"
agent = "axon.examples.weather:weather_agent"

[[agents]]
id = "misbehaving"
agent = "axon.examples.misbehaving:misbehaving_agent"
timeout = 10

[supervisor]
strategy = "one_for_one"
max_restarts = 5
max_seconds = 10
"""


def demo_config() -> AxonConfig:
    return parse_config(tomllib.loads(DEMO_TOML))
