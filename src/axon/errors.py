"""The whole Axon error family.

Every error a caller can see is a subclass of :class:`AxonError`, and every error that crosses a
process or HTTP boundary is defined here, so ``AxonError.from_dict`` knows them all whatever was
imported. Each class says when it is raised and carries what the caller needs to react (agent
id, exit code or signal, retry-after) as attributes; each survives a pickle round trip and a
``to_dict()`` / ``AxonError.from_dict()`` round trip.

The first part is what the Python API raises; then the errors raised and handled inside Axon
(a store's conflict, a worker's report); then the HTTP edge's own, then the HTTP client's.

Cancellation is never an ``AxonError``: ``asyncio.CancelledError`` always propagates unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

from axon.exits import signal_name as _signal_name

__all__ = [
    "AgentCrashed",
    "AgentNotFound",
    "AgentRunFailed",
    "AgentTimeout",
    "AgentUnavailable",
    "AxonError",
    "Cancelled",
    "ConfigError",
    "ConnectionLost",
    "ConversationBusy",
    "ConversationNotFound",
    "ForbiddenHost",
    "ForbiddenOrigin",
    "FrameTooLarge",
    "HistoryTooLarge",
    "InvalidRequest",
    "Overloaded",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "ResultTooLarge",
    "RunInterrupted",
    "ServerUnreachable",
    "ShuttingDown",
    "StartupFailed",
    "StoreConflict",
    "StoreUnavailable",
    "TooManyConnections",
    "Unauthorized",
]


class AxonError(Exception):
    """Base class of every error Axon raises on purpose.

    ``type`` is the stable snake_case name used in HTTP error bodies and on the wire.
    """

    type: ClassVar[str] = "axon_error"
    internal: ClassVar[bool] = False
    """True for an error raised and handled inside Axon that never ends a caller's request
    (a store's revision conflict, a worker's report that a run was cancelled or could not
    start)."""
    _registry: ClassVar[dict[str, type[AxonError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        AxonError._registry[cls.type] = cls

    def __init__(self, message: str, **facts: Any) -> None:
        super().__init__(message)
        self.message = message
        self.facts: dict[str, Any] = facts
        for key, value in facts.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.type, self.message, self.facts))

    def __repr__(self) -> str:
        facts = ", ".join(f"{k}={v!r}" for k, v in self.facts.items())
        return f"{type(self).__name__}({self.message!r}{', ' if facts else ''}{facts})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"type", "message", **facts}``."""
        return {"type": self.type, "message": self.message, **self.facts}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> AxonError:
        """Rebuild an error from :meth:`to_dict` output (unknown types become ``AxonError``)."""
        facts = {k: v for k, v in data.items() if k not in ("type", "message")}
        return _rebuild(str(data.get("type", "axon_error")), str(data.get("message", "")), facts)


def _rebuild(type_name: str, message: str, facts: dict[str, Any]) -> AxonError:
    cls = _REGISTRY.get(type_name, AxonError)
    err = cls.__new__(cls)
    AxonError.__init__(err, message, **facts)
    return err


_REGISTRY = AxonError._registry  # pyright: ignore[reportPrivateUsage]
_REGISTRY["axon_error"] = AxonError


class ConfigError(AxonError):
    """The configuration is invalid; raised before anything starts.

    ``key`` names the offending key (dotted path, e.g. ``agents[0].workers``) and ``reason``
    says what is wrong with it.
    """

    type = "config_error"
    key: str
    reason: str

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}", key=key, reason=reason)


class InvalidRequest(AxonError):
    """The request itself is malformed (empty or oversized prompt, bad conversation id, ...).

    Retrying the same request will fail the same way. ``field`` names what is wrong.
    """

    type = "invalid_request"
    field: str | None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)


class HistoryTooLarge(AxonError):
    """The conversation's stored history (``size`` bytes of pydantic-ai JSON) is larger than the
    agent's ``max_history_bytes`` (``limit``): no worker is asked to run it.

    Start a new conversation, or keep the history short in the agent itself (a pydantic-ai
    ``history_processors`` function that trims or summarises older messages); the conversation
    can still be read and deleted.
    """

    type = "history_too_large"
    conversation_id: str
    size: int
    limit: int

    def __init__(self, conversation_id: str, *, size: int, limit: int) -> None:
        super().__init__(
            f"the history of conversation {conversation_id!r} is {size} bytes; this agent "
            f"accepts at most {limit} (start a new conversation, or trim the history in the "
            "agent with a history processor)",
            conversation_id=conversation_id,
            size=size,
            limit=limit,
        )


class AgentNotFound(AxonError):
    """No agent with this id is configured. Agents are only ever loaded from the config."""

    type = "agent_not_found"
    agent_id: str

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"no agent named {agent_id!r} is configured", agent_id=agent_id)


class ConversationNotFound(AxonError):
    """No run was ever committed to this conversation (or it was deleted)."""

    type = "conversation_not_found"
    conversation_id: str

    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"no conversation {conversation_id!r} exists", conversation_id=conversation_id
        )


class Unauthorized(AxonError):
    """The HTTP API requires a bearer token (``Authorization: Bearer ...``) and the request had
    none, or a wrong one."""

    type = "unauthorized"

    def __init__(self, message: str = "a valid bearer token is required") -> None:
        super().__init__(message)


class AgentUnavailable(AxonError):
    """The agent has no worker that can serve right now (starting, restarting, failed or stopped).

    Retry after ``retry_after`` seconds. ``state`` is the agent's supervisor state.
    """

    type = "agent_unavailable"
    agent_id: str
    state: str
    retry_after: float

    def __init__(self, agent_id: str, *, state: str, retry_after: float) -> None:
        super().__init__(
            f"agent {agent_id!r} is {state}; retry in {retry_after:.2f}s",
            agent_id=agent_id,
            state=state,
            retry_after=retry_after,
        )


class AgentCrashed(AxonError):
    """The worker process running this request died before answering.

    ``exit_code`` is the process exit status, or ``signal`` the signal number that killed it
    (and ``signal_name``, e.g. ``SIGKILL``). Nothing of this run was committed to the history.
    """

    type = "agent_crashed"
    agent_id: str
    pid: int | None
    exit_code: int | None
    signal: int | None
    signal_name: str | None
    reason: str | None

    def __init__(
        self,
        agent_id: str,
        *,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        reason: str | None = None,
    ) -> None:
        signal_name = None if signal is None else _signal_name(signal)
        how = (
            f"killed by {signal_name}"
            if signal is not None
            else f"exited with code {exit_code}"
            if exit_code is not None
            else (reason or "lost")
        )
        super().__init__(
            f"worker {pid} of agent {agent_id!r} {how} during the run",
            agent_id=agent_id,
            pid=pid,
            exit_code=exit_code,
            signal=signal,
            signal_name=signal_name,
            reason=reason,
        )


class AgentTimeout(AxonError):
    """The request did not finish within its deadline (``timeout`` seconds).

    The run was cancelled in the worker; nothing of it was committed.
    """

    type = "agent_timeout"
    agent_id: str
    timeout: float

    def __init__(self, agent_id: str, *, timeout: float) -> None:
        super().__init__(
            f"agent {agent_id!r} did not answer within {timeout:g}s",
            agent_id=agent_id,
            timeout=timeout,
        )


class AgentRunFailed(AxonError):
    """The agent itself raised while running (a tool, the model, the agent's own code).

    ``remote_type`` and ``remote_message`` describe the exception raised in the worker.
    """

    type = "agent_run_failed"
    agent_id: str
    remote_type: str
    remote_message: str

    def __init__(self, agent_id: str, *, remote_type: str, remote_message: str) -> None:
        super().__init__(
            f"agent {agent_id!r} raised {remote_type}: {remote_message}",
            agent_id=agent_id,
            remote_type=remote_type,
            remote_message=remote_message,
        )


class ResultTooLarge(AxonError):
    """What the run produced (its result, or one event of its stream) is ``size`` bytes on the
    wire, more than the agent's ``max_result_bytes`` (``limit``). The run failed alone, in its
    worker; nothing of it was committed, and the worker keeps serving."""

    type = "result_too_large"
    agent_id: str
    size: int
    limit: int

    def __init__(self, agent_id: str, *, size: int, limit: int) -> None:
        super().__init__(
            f"agent {agent_id!r} produced {size} bytes in one frame; the limit is {limit} "
            "(max_result_bytes)",
            agent_id=agent_id,
            size=size,
            limit=limit,
        )


class Overloaded(AxonError):
    """The agent's queue is full: back off and retry after ``retry_after`` seconds."""

    type = "overloaded"
    agent_id: str
    queue_size: int
    retry_after: float

    def __init__(self, agent_id: str, *, queue_size: int, retry_after: float) -> None:
        super().__init__(
            f"agent {agent_id!r} is overloaded ({queue_size} requests queued)",
            agent_id=agent_id,
            queue_size=queue_size,
            retry_after=retry_after,
        )


class ConversationBusy(AxonError):
    """Another run of this conversation is in progress and the policy is ``reject``
    (``reason="in_progress"``), or another orchestrator sharing the store committed to the
    conversation while this run was in progress (``reason="conflict"``: nothing of this run was
    committed; send it again)."""

    type = "conversation_busy"
    conversation_id: str
    reason: str

    def __init__(self, conversation_id: str, *, reason: str = "in_progress") -> None:
        what = (
            "was changed by another writer while this run was in progress"
            if reason == "conflict"
            else "already has a run in progress"
        )
        super().__init__(
            f"conversation {conversation_id!r} {what}",
            conversation_id=conversation_id,
            reason=reason,
        )


class RunInterrupted(AxonError):
    """A newer message to the same conversation interrupted this run (policy ``interrupt``).

    Nothing of this run was committed; the conversation keeps what it had.
    """

    type = "run_interrupted"
    conversation_id: str

    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"the run in conversation {conversation_id!r} was interrupted by a newer message",
            conversation_id=conversation_id,
        )


class StoreUnavailable(AxonError):
    """The conversation store cannot be reached or is locked; nothing was committed, unless
    ``maybe_committed``.

    Retry after ``retry_after`` seconds. ``store`` names the backend (``sqlite``, ``postgresql``).
    ``maybe_committed`` is true only when the connection broke after the store was asked to
    commit and before it confirmed: the run may be in the history or not (no store can know which
    without asking again). Read the conversation before sending the message again.
    """

    type = "store_unavailable"
    store: str
    reason: str
    retry_after: float
    maybe_committed: bool

    def __init__(
        self,
        store: str,
        reason: str,
        *,
        retry_after: float = 1.0,
        maybe_committed: bool = False,
    ) -> None:
        super().__init__(
            f"the {store} store is unavailable: {reason}"
            + (
                " (the commit was sent but not confirmed: it may have been applied)"
                if maybe_committed
                else ""
            ),
            store=store,
            reason=reason,
            retry_after=retry_after,
            maybe_committed=maybe_committed,
        )


class ProtocolError(AxonError):
    """A frame between orchestrator and worker was malformed, unknown or out of place."""

    type = "protocol_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)


# -- raised and handled inside Axon: a store, a worker, the wire -----------------------------------


class StoreConflict(AxonError):
    """The conversation moved past the revision a run started from; nothing was written."""

    type = "store_conflict"
    internal = True

    def __init__(self, conversation_id: str, *, expected: int, actual: int) -> None:
        super().__init__(
            f"conversation {conversation_id!r} is at revision {actual}, not {expected}",
            conversation_id=conversation_id,
            expected=expected,
            actual=actual,
        )


class Cancelled(AxonError):
    """A run was cancelled in its worker by a ``cancel`` frame (its caller left, its deadline
    passed, or a newer message interrupted it); nothing of it was committed. The worker reports
    it; callers never see it: the request that led to the cancel already ended its own way."""

    type = "cancelled"
    internal = True

    def __init__(self, message: str = "run cancelled") -> None:
        super().__init__(message)


class StartupFailed(AxonError):
    """The worker exited, or was killed, before it said ``ready``."""

    type = "startup_failed"
    internal = True


class FrameTooLarge(ProtocolError):
    """A frame is larger than its receiver accepts: a header announced more than the limit (the
    stream is unusable), or a frame to send encodes to more (nothing was sent). ``size`` and
    ``limit`` are in bytes."""

    type = "frame_too_large"

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.facts.update(size=size, limit=limit)
        self.size = size
        self.limit = limit


# -- the HTTP edge's own: about a connection or a browser, never raised by the Python API ----------


class ShuttingDown(AxonError):
    """The server is shutting down and this request did not finish within the grace period;
    nothing of its run was committed. Only the HTTP edge raises it."""

    type = "shutting_down"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)


class ForbiddenHost(AxonError):
    """The request's ``Host`` names no address this server answers to (a guard against DNS
    rebinding: a web page whose name resolves to this machine). Use the server's own address,
    or, if the name is the server's, add it to ``runtime.allowed_hosts``."""

    type = "forbidden_host"
    host: str

    def __init__(self, host: str) -> None:
        super().__init__(
            f"this server does not answer to Host {host!r}; if that name is the server's, add "
            "it to runtime.allowed_hosts",
            host=host,
        )


class ForbiddenOrigin(AxonError):
    """A browser sent a state-changing request (or a CORS preflight) from a web page of another
    origin (a guard against cross-site request forgery). Serve the page from the server's own
    origin, or list its origin in ``runtime.cors_origins``."""

    type = "forbidden_origin"
    origin: str

    def __init__(self, origin: str, *, reason: str | None = None) -> None:
        super().__init__(
            reason
            or f"a web page of the origin {origin!r} may not change anything here; list it in "
            "runtime.cors_origins if it is yours",
            origin=origin,
        )


class TooManyConnections(AxonError):
    """The server already serves ``runtime.max_connections`` connections; this one is answered
    and closed. Retry after ``retry_after`` seconds."""

    type = "too_many_connections"
    max_connections: int
    retry_after: float

    def __init__(self, max_connections: int, *, retry_after: float = 1.0) -> None:
        super().__init__(
            f"the server already serves its {max_connections} connections; retry in "
            f"{retry_after:g}s",
            max_connections=max_connections,
            retry_after=retry_after,
        )


class RequestTimeout(AxonError):
    """The connection did not send a whole request line and headers within
    ``runtime.header_timeout`` seconds; the server closes it. Send the request at once."""

    type = "request_timeout"
    header_timeout: float

    def __init__(self, header_timeout: float) -> None:
        super().__init__(
            f"the request's headers did not arrive within {header_timeout:g}s",
            header_timeout=header_timeout,
        )


# -- the HTTP client's (axon.client) ---------------------------------------------------------------


class ServerUnreachable(AxonError):
    """No Axon server answers at ``url`` (connection refused, unknown host, connect timeout)."""

    type = "server_unreachable"
    url: str
    reason: str

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach an axon server at {url}: {reason}", url=url, reason=reason)


class ConnectionLost(AxonError):
    """The connection to the server at ``url`` broke (or timed out) before the answer was
    complete. A run may or may not have been committed: check the conversation's history."""

    type = "connection_lost"
    url: str
    reason: str

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"lost the connection to the axon server at {url}: {reason}", url=url, reason=reason
        )


class RemoteError(AxonError):
    """An error answer whose type this client does not know (``error_type``, e.g.
    ``payload_too_large`` or ``not_found`` for an unknown route), with its HTTP ``status``."""

    type = "remote_error"
    error_type: str
    status: int | None

    def __init__(self, message: str, *, error_type: str, status: int | None) -> None:
        super().__init__(message, error_type=error_type, status=status)
