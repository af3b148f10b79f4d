"""Axon: supervised worker processes, routing and durable conversations for pydantic-ai agents.

```python
from axon import Axon
async with Axon.from_config("axon.toml") as axon:
    reply = await axon.send_message("python_agent_1", "What is the weather in Paris?")
```
"""

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
from axon.replies import FinalResult, Reply, StreamEvent, TextDelta, ToolCall, ToolResult
from axon.runtime import Axon
from axon.status import AgentStatus, ExitRecord, WorkerStatus
from axon.supervisor.policy import RestartType, Strategy
from axon.supervisor.states import AgentState, WorkerState

__version__ = "0.1.0"

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
