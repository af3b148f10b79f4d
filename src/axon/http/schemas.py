"""The HTTP API's request and response bodies: the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from axon.status import Readiness
from axon.validation import CONVERSATION_ID, MIN_TIMEOUT

__all__ = [
    "AgentBody",
    "AgentsBody",
    "ConversationBody",
    "ConversationInfoBody",
    "ConversationsBody",
    "ErrorBody",
    "ErrorEnvelope",
    "ExitBody",
    "HealthBody",
    "MessageRequest",
    "ReadinessBody",
    "ReplyBody",
    "WorkerBody",
]

CONVERSATION_ID_PATTERN = CONVERSATION_ID.pattern


class _View(BaseModel):
    """A body read from the runtime's own object (a dataclass of :mod:`axon.status`,
    :mod:`axon.stream` or :mod:`axon.store.base`) by attribute: ``Body.model_validate(obj)``."""

    model_config = ConfigDict(from_attributes=True)


class MessageRequest(BaseModel):
    """``POST /v1/agents/{agent_id}/messages``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="The user's message.")
    conversation_id: str | None = Field(
        default=None,
        pattern=CONVERSATION_ID_PATTERN,
        description="Conversation to continue; omitted: a new one (its id is in the reply).",
    )
    timeout: float | None = Field(
        default=None,
        ge=MIN_TIMEOUT,
        allow_inf_nan=False,
        description=f"Seconds for the whole run, at least {MIN_TIMEOUT:g} (default: the agent's "
        "`timeout`; at most its `max_timeout`).",
    )
    stream: bool = Field(
        default=False,
        description="Answer with Server-Sent Events (as `Accept: text/event-stream` does).",
    )
    policy: Literal["enqueue", "reject", "interrupt"] | None = Field(
        default=None,
        description="If the conversation has a run in progress: wait for it (`enqueue`), fail "
        "with 409 (`reject`) or cancel it (`interrupt`). Default: the agent's policy.",
    )
    on_disconnect: Literal["cancel", "finish"] = Field(
        default="cancel",
        description="If the client disconnects before the reply: cancel the run (nothing is "
        "committed) or let it finish and commit.",
    )


class ReplyBody(_View):
    """A run's reply, already committed to the conversation's history."""

    output: Any = Field(description="The agent's output (a string for text agents).")
    conversation_id: str
    run_id: str | None
    agent_id: str
    usage: dict[str, Any] = Field(description="Token and request counts of the run.")


class ExitBody(_View):
    at: float = Field(description="Unix time of the exit.")
    worker: int
    pid: int | None
    exit_code: int | None
    signal: int | None
    reason: str | None
    during_startup: bool
    cause: str = Field(
        description="requested, crashed, exited, startup_failed, spawn_failed, or why Axon "
        "killed it: hung, ignored_cancel, startup_timeout, protocol, unresponsive, "
        "connection_lost."
    )


class WorkerBody(_View):
    index: int
    pid: int | None
    state: str
    generation: int
    restarts: int
    in_flight: int
    last_exit: ExitBody | None


class AgentBody(_View):
    """One agent: its supervisor's state, its workers, its recent exits."""

    id: str
    state: str = Field(description="starting, running, restarting, failed, stopping or stopped.")
    restarts: int
    in_flight: int
    queued: int = Field(description="Requests waiting for a free worker slot.")
    workers: list[WorkerBody]
    recent_exits: list[ExitBody]


class AgentsBody(BaseModel):
    agents: list[AgentBody]


class ConversationBody(BaseModel):
    conversation_id: str
    revision: int = Field(description="Runs committed to the conversation so far.")
    messages: list[dict[str, Any]] = Field(
        description="The history as pydantic-ai JSON (`ModelMessagesTypeAdapter`)."
    )


class ConversationInfoBody(_View):
    conversation_id: str
    agent_id: str
    revision: int
    created_at: float
    updated_at: float


class ConversationsBody(BaseModel):
    conversations: list[ConversationInfoBody]
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class HealthBody(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessBody(BaseModel):
    ready: bool
    store: str = Field(description='"ok", or why the store did not answer.')
    agents: dict[str, str] = Field(description="Every agent's state.")
    not_serving: list[str] = Field(
        description="Agents that are not FAILED but have no running worker yet."
    )

    @classmethod
    def of(cls, readiness: Readiness) -> ReadinessBody:
        return cls(
            ready=readiness.ready,
            store=readiness.store_error or "ok",
            agents=readiness.agents,
            not_serving=readiness.not_serving,
        )


class ErrorBody(BaseModel):
    """``type`` is the stable snake_case name of the error (``agent_unavailable``, ...); the
    other keys are its facts (``agent_id``, ``retry_after``, ``exit_code``, ``field``, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    message: str


class ErrorEnvelope(BaseModel):
    error: ErrorBody
