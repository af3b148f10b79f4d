"""Structured log events rendered as JSON lines and as text."""

from __future__ import annotations

import io
import json
import logging

import pytest

from axon.observability.events import LOGGER_NAME, emit
from axon.observability.logging import JsonFormatter, TextFormatter, configure_logging


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    logger = logging.getLogger(LOGGER_NAME)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    yield logger, stream, handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_json_line_carries_event_level_and_every_field(captured) -> None:
    _, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    emit("worker.exit", logging.WARNING, agent="a", worker=1, pid=42, exit_code=None, signal=9)
    record = json.loads(stream.getvalue())
    assert record["event"] == "worker.exit"
    assert record["level"] == "warning"
    assert record["agent"] == "a"
    assert record["pid"] == 42
    assert record["signal"] == 9
    assert record["exit_code"] is None
    assert isinstance(record["ts"], float)


def test_text_line_is_event_then_key_values(captured) -> None:
    _, stream, handler = captured
    handler.setFormatter(TextFormatter())
    emit("agent.restart", logging.WARNING, agent="a", attempt=2, delay_s=0.1)
    line = stream.getvalue().strip()
    assert line.endswith("WARNING agent.restart agent=a attempt=2 delay_s=0.1")


def test_emit_below_the_level_writes_nothing(captured) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    logger.setLevel(logging.INFO)
    emit("run.routed", logging.DEBUG, agent="a")
    assert stream.getvalue() == ""


def test_configure_logging_is_idempotent() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    before = list(logger.handlers)
    try:
        configure_logging("json")
        configure_logging("text")
        ours = [h for h in logger.handlers if getattr(h, "_axon", False)]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, TextFormatter)
    finally:
        for handler in list(logger.handlers):
            if handler not in before:
                logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
