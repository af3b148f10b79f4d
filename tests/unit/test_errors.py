"""The error family: every error survives pickling and the dict (wire / HTTP) round trip."""

from __future__ import annotations

import asyncio
import pickle
import signal
from typing import Any

import pytest

import axon.errors
from axon.errors import (
    AgentCrashed,
    AgentNotFound,
    AgentRunFailed,
    AgentTimeout,
    AgentUnavailable,
    AxonError,
    Cancelled,
    ConfigError,
    ConnectionLost,
    ConversationBusy,
    ConversationNotFound,
    ForbiddenHost,
    ForbiddenOrigin,
    FrameTooLarge,
    HistoryTooLarge,
    InvalidRequest,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    ResultTooLarge,
    RunInterrupted,
    ServerUnreachable,
    ShuttingDown,
    StartupFailed,
    StoreConflict,
    StoreUnavailable,
    TooManyConnections,
    Unauthorized,
)

# One or more instances per class exported by axon.errors: a new error class must be added here.
SAMPLES: dict[str, list[AxonError]] = {
    "AxonError": [AxonError("plain"), AxonError("with facts", agent_id="a", n=3)],
    "ConfigError": [ConfigError("agents[0].wrokers", "unknown key")],
    "InvalidRequest": [
        InvalidRequest("prompt must not be empty", field="prompt"),
        InvalidRequest("no field"),
    ],
    "AgentNotFound": [AgentNotFound("nobody")],
    "AgentUnavailable": [AgentUnavailable("a", state="failed", retry_after=1.25)],
    "AgentCrashed": [
        AgentCrashed("a", pid=123, signal=int(signal.SIGKILL)),
        AgentCrashed("a", pid=123, exit_code=13),
        AgentCrashed("a", reason="worker connection lost"),
        AgentCrashed("a"),
    ],
    "AgentTimeout": [AgentTimeout("a", timeout=0.5)],
    "AgentRunFailed": [AgentRunFailed("a", remote_type="RuntimeError", remote_message="boom")],
    "Overloaded": [Overloaded("a", queue_size=1024, retry_after=1.0)],
    "ConversationBusy": [ConversationBusy("c-42")],
    "ConversationNotFound": [ConversationNotFound("c-404")],
    "Unauthorized": [Unauthorized(), Unauthorized("wrong token")],
    "ProtocolError": [ProtocolError("invalid frame: bad kind")],
    "RunInterrupted": [RunInterrupted("c-1")],
    "HistoryTooLarge": [HistoryTooLarge("c-big", size=20_000_000, limit=16_777_216)],
    "ResultTooLarge": [ResultTooLarge("a", size=70_000_123, limit=16_777_216)],
    "StoreUnavailable": [StoreUnavailable("sqlite", "database is locked", retry_after=0.5)],
    "StoreConflict": [StoreConflict("c-1", expected=2, actual=3)],
    "Cancelled": [Cancelled()],
    "StartupFailed": [StartupFailed("ImportError: no module named nope")],
    "FrameTooLarge": [FrameTooLarge("frame of 99 bytes exceeds 10", size=99, limit=10)],
    "ShuttingDown": [ShuttingDown("shutting down", retry_after=2.0)],
    "ForbiddenHost": [ForbiddenHost("attacker.example:8000")],
    "ForbiddenOrigin": [ForbiddenOrigin("http://evil.example")],
    "TooManyConnections": [TooManyConnections(1024)],
    "RequestTimeout": [RequestTimeout(10.0)],
    "ServerUnreachable": [ServerUnreachable("http://127.0.0.1:1", "connection refused")],
    "ConnectionLost": [ConnectionLost("http://127.0.0.1:8000", "reset")],
    "RemoteError": [RemoteError("gone", error_type="not_found", status=404)],
}

ALL = [(name, e) for name in sorted(SAMPLES) for e in SAMPLES[name]]
IDS = [f"{name}-{i}" for name in sorted(SAMPLES) for i in range(len(SAMPLES[name]))]


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_exported_error_has_samples() -> None:
    assert set(axon.errors.__all__) == set(SAMPLES)
    for name in axon.errors.__all__:
        cls = getattr(axon.errors, name)
        assert issubclass(cls, AxonError), name
        assert all(type(e) is cls for e in SAMPLES[name]), name


def assert_same(copy: AxonError, original: AxonError) -> None:
    assert type(copy) is type(original)
    assert copy.message == original.message
    assert str(copy) == str(original)
    assert copy.args == original.args
    assert copy.facts == original.facts
    assert copy.to_dict() == original.to_dict()
    for key, value in original.facts.items():
        assert getattr(copy, key) == value, key
    assert repr(copy) == repr(original)


@pytest.mark.parametrize(("name", "error"), ALL, ids=IDS)
def test_error_survives_pickle(name: str, error: AxonError) -> None:
    assert_same(pickle.loads(pickle.dumps(error)), error)


@pytest.mark.parametrize(("name", "error"), ALL, ids=IDS)
def test_error_survives_dict_round_trip(name: str, error: AxonError) -> None:
    data = error.to_dict()
    assert data["type"] == type(error).type
    assert data["message"] == error.message
    assert_same(AxonError.from_dict(data), error)


@pytest.mark.parametrize(("name", "error"), ALL, ids=IDS)
def test_error_dict_survives_json(name: str, error: AxonError) -> None:
    import json

    assert_same(AxonError.from_dict(json.loads(json.dumps(error.to_dict()))), error)


def _import_every_module() -> None:
    import importlib
    import pkgutil

    for module in pkgutil.walk_packages(axon.__path__, "axon."):
        if module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)


def test_every_error_class_lives_in_axon_errors() -> None:
    """One error family in one module: ``AxonError.from_dict`` knows every type whatever was
    imported (trio's ``_core/_exceptions.py``)."""
    _import_every_module()
    elsewhere = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _subclasses(AxonError)
        if cls.__module__ != "axon.errors" and cls.__module__.startswith("axon.")
    )
    assert elsewhere == []


def test_every_error_class_anywhere_has_its_own_type_name() -> None:
    _import_every_module()

    classes = _subclasses(AxonError) | {AxonError}
    names = [cls.type for cls in classes]
    assert len(names) == len(set(names)), sorted(names)
    registry: dict[str, type[AxonError]] = AxonError._registry  # pyright: ignore[reportPrivateUsage]
    for cls in classes:
        assert registry[cls.type] is cls
    assert registry["startup_failed"] is axon.pool.process.StartupFailed
    # subclasses defined outside axon.errors round-trip too
    too_large = axon.protocol.codec.FrameTooLarge("frame header announces 9 bytes")
    assert_same(AxonError.from_dict(too_large.to_dict()), too_large)
    assert_same(pickle.loads(pickle.dumps(too_large)), too_large)


def test_crash_by_signal_names_the_signal() -> None:
    crash = AgentCrashed("a", pid=7, signal=9)
    assert crash.signal == 9
    assert crash.signal_name == "SIGKILL"
    assert crash.exit_code is None
    assert "SIGKILL" in crash.message
    assert pickle.loads(pickle.dumps(crash)).signal_name == "SIGKILL"
    assert AxonError.from_dict(crash.to_dict()).signal_name == "SIGKILL"  # type: ignore[attr-defined]


def test_crash_by_exit_code_has_no_signal_name() -> None:
    crash = AgentCrashed("a", pid=7, exit_code=13)
    assert crash.signal is None
    assert crash.signal_name is None
    assert "code 13" in crash.message


def test_errors_carry_what_a_caller_needs() -> None:
    assert AgentNotFound("x").agent_id == "x"
    unavailable = AgentUnavailable("a", state="restarting", retry_after=0.5)
    assert (unavailable.agent_id, unavailable.state, unavailable.retry_after) == (
        "a",
        "restarting",
        0.5,
    )
    assert AgentTimeout("a", timeout=2.0).timeout == 2.0
    assert Overloaded("a", queue_size=3, retry_after=1.0).retry_after == 1.0
    assert InvalidRequest("bad", field="timeout").field == "timeout"
    config = ConfigError("agents[0].workers", "must be >= 1")
    assert (config.key, config.reason) == ("agents[0].workers", "must be >= 1")
    assert ConversationBusy("c").conversation_id == "c"
    failed = AgentRunFailed("a", remote_type="ValueError", remote_message="m")
    assert (failed.remote_type, failed.remote_message) == ("ValueError", "m")
    big = HistoryTooLarge("c", size=10, limit=5)
    assert (big.conversation_id, big.size, big.limit) == ("c", 10, 5)
    result = ResultTooLarge("a", size=10, limit=5)
    assert (result.agent_id, result.size, result.limit) == ("a", 10, 5)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "no_such_error", "message": "from the future", "agent_id": "a"},
        {"message": "no type at all"},
        {"type": "no_such_error"},
    ],
)
def test_unknown_type_in_from_dict_gives_a_plain_axon_error(data: dict[str, Any]) -> None:
    error = AxonError.from_dict(data)
    assert type(error) is AxonError
    assert error.message == data.get("message", "")
    if "agent_id" in data:
        assert error.agent_id == "a"  # type: ignore[attr-defined]


def test_cancellation_is_never_an_axon_error() -> None:
    assert not issubclass(asyncio.CancelledError, AxonError)
    assert not issubclass(AxonError, asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        _cancel_inside_except_axon_error()


def _cancel_inside_except_axon_error() -> None:
    try:
        raise asyncio.CancelledError
    except AxonError:  # pragma: no cover - must not catch it
        pytest.fail("an 'except AxonError' caught a cancellation")


def test_every_error_is_an_exception_not_a_base_exception_only() -> None:
    for name in axon.errors.__all__:
        assert issubclass(getattr(axon.errors, name), Exception)
