"""Axon: supervised worker processes, routing and durable conversations for pydantic-ai agents.

```python
from axon import Axon
async with Axon.from_config("axon.toml") as axon:
    reply = await axon.send_message("python_agent_1", "What is the weather in Paris?")
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from axon.config import AgentSpec, AxonConfig, RuntimeSpec, SupervisorSpec, load_config
    from axon.errors import (
        AgentCrashed,
        AgentNotFound,
        AgentRunFailed,
        AgentTimeout,
        AgentUnavailable,
        AxonError,
        ConfigError,
        ConversationBusy,
        ConversationNotFound,
        HistoryTooLarge,
        InvalidRequest,
        Overloaded,
        ProtocolError,
        ResultTooLarge,
        RunInterrupted,
        StoreUnavailable,
        Unauthorized,
    )
    from axon.runtime import Axon
    from axon.status import AgentStatus, ExitRecord, WorkerStatus
    from axon.stream import FinalResult, Reply, StreamEvent, TextDelta, ToolCall, ToolResult
    from axon.supervisor.policy import RestartType, Strategy
    from axon.supervisor.states import AgentState, WorkerState

from axon._version import __version__

__all__ = [
    "AgentCrashed",
    "AgentNotFound",
    "AgentRunFailed",
    "AgentSpec",
    "AgentState",
    "AgentStatus",
    "AgentTimeout",
    "AgentUnavailable",
    "Axon",
    "AxonConfig",
    "AxonError",
    "ConfigError",
    "ConversationBusy",
    "ConversationNotFound",
    "ExitRecord",
    "FinalResult",
    "HistoryTooLarge",
    "InvalidRequest",
    "Overloaded",
    "ProtocolError",
    "Reply",
    "RestartType",
    "ResultTooLarge",
    "RunInterrupted",
    "RuntimeSpec",
    "StoreUnavailable",
    "Strategy",
    "StreamEvent",
    "SupervisorSpec",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "Unauthorized",
    "WorkerState",
    "WorkerStatus",
    "__version__",
    "load_config",
]

_LAZY: dict[str, str] = {
    "AgentCrashed": "axon.errors",
    "AgentNotFound": "axon.errors",
    "AgentRunFailed": "axon.errors",
    "AgentSpec": "axon.config",
    "AgentState": "axon.supervisor.states",
    "AgentStatus": "axon.status",
    "AgentTimeout": "axon.errors",
    "AgentUnavailable": "axon.errors",
    "Axon": "axon.runtime",
    "AxonConfig": "axon.config",
    "AxonError": "axon.errors",
    "ConfigError": "axon.errors",
    "ConversationBusy": "axon.errors",
    "ConversationNotFound": "axon.errors",
    "ExitRecord": "axon.status",
    "FinalResult": "axon.stream",
    "HistoryTooLarge": "axon.errors",
    "InvalidRequest": "axon.errors",
    "Overloaded": "axon.errors",
    "ProtocolError": "axon.errors",
    "Reply": "axon.stream",
    "RestartType": "axon.supervisor.policy",
    "ResultTooLarge": "axon.errors",
    "RunInterrupted": "axon.errors",
    "RuntimeSpec": "axon.config",
    "StoreUnavailable": "axon.errors",
    "Strategy": "axon.supervisor.policy",
    "StreamEvent": "axon.stream",
    "SupervisorSpec": "axon.config",
    "TextDelta": "axon.stream",
    "ToolCall": "axon.stream",
    "ToolResult": "axon.stream",
    "Unauthorized": "axon.errors",
    "WorkerState": "axon.supervisor.states",
    "WorkerStatus": "axon.status",
    "load_config": "axon.config",
}
"""Where each public name lives. They are imported when first used (PEP 562), so importing a
module of the package (``axon.worker.host`` in a worker process, say) does not import the
orchestrator, its HTTP edge or its metrics."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'axon' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
