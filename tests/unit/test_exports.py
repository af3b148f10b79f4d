"""The public surface of the ``axon`` package: exactly the names we intend, all importable."""

from __future__ import annotations

import axon
import axon.errors

# The public API of ``import axon``. Adding or removing a name is a deliberate decision:
# update this list in the same change.
PUBLIC = {
    # runtime and configuration
    "Axon",
    "AxonConfig",
    "AgentSpec",
    "RuntimeSpec",
    "SupervisorSpec",
    "load_config",
    "RestartType",
    "Strategy",
    # replies and streaming
    "Reply",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "FinalResult",
    # status
    "AgentState",
    "AgentStatus",
    "ExitRecord",
    "WorkerState",
    "WorkerStatus",
    # errors
    "AxonError",
    "AgentCrashed",
    "AgentNotFound",
    "AgentRunFailed",
    "AgentTimeout",
    "AgentUnavailable",
    "ConfigError",
    "ConversationBusy",
    "ConversationNotFound",
    "HistoryTooLarge",
    "InvalidRequest",
    "Overloaded",
    "ProtocolError",
    "ResultTooLarge",
    "RunInterrupted",
    "StoreUnavailable",
    "Unauthorized",
    "__version__",
}


def test_all_is_exactly_the_intended_public_names() -> None:
    assert len(axon.__all__) == len(set(axon.__all__)), "duplicates in axon.__all__"
    assert set(axon.__all__) == PUBLIC


def test_every_name_in_all_exists() -> None:
    missing = [name for name in axon.__all__ if not hasattr(axon, name)]
    assert not missing


def test_star_import_gives_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from axon import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC


NOT_AT_THE_TOP_LEVEL = {
    # raised and handled inside Axon (a store's conflict, a worker's reports, the wire)
    "StoreConflict",
    "Cancelled",
    "StartupFailed",
    "FrameTooLarge",
    # the HTTP edge's own (about a connection or a browser; never raised by the Python API)
    "ShuttingDown",
    "ForbiddenHost",
    "ForbiddenOrigin",
    "TooManyConnections",
    "RequestTimeout",
    # the HTTP client's (axon.client)
    "ServerUnreachable",
    "ConnectionLost",
    "RemoteError",
}
"""Errors of ``axon.errors`` that a caller of the Python API never sees: importable from
``axon.errors``, not from ``axon``."""


def test_every_error_the_python_api_raises_is_exported_from_the_top_level() -> None:
    for name in set(axon.errors.__all__) - NOT_AT_THE_TOP_LEVEL:
        assert name in axon.__all__, name
        assert getattr(axon, name) is getattr(axon.errors, name)
    assert set(axon.errors.__all__) >= NOT_AT_THE_TOP_LEVEL
    assert not NOT_AT_THE_TOP_LEVEL & set(axon.__all__)


def test_version_is_a_string() -> None:
    assert isinstance(axon.__version__, str)
    assert axon.__version__.count(".") >= 1
