"""Structured log events rendered as JSON lines and as text."""

from __future__ import annotations

import io
import json
import logging

import pytest

from axon.observability.events import LOGGER_NAME, EventBus
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


emit = EventBus().emit


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


def test_bus_hands_every_event_to_its_sinks_whatever_the_log_level() -> None:
    bus = EventBus()
    seen: list[tuple[str, int, dict[str, object]]] = []
    unsubscribe = bus.subscribe(lambda event, lvl, fields: seen.append((event, lvl, dict(fields))))
    logging.getLogger(LOGGER_NAME).setLevel(logging.CRITICAL)
    try:
        bus.emit("run.routed", logging.DEBUG, agent="a", run=7)
    finally:
        logging.getLogger(LOGGER_NAME).setLevel(logging.NOTSET)
    unsubscribe()
    bus.emit("run.routed", logging.DEBUG, agent="a", run=8)
    assert seen == [("run.routed", logging.DEBUG, {"agent": "a", "run": 7})]


def test_a_sink_that_raises_is_logged_and_the_others_still_run(captured) -> None:
    _, stream, _ = captured
    bus = EventBus()
    seen: list[str] = []

    def broken(event: str, level: int, fields: object) -> None:
        raise ValueError("boom")

    bus.subscribe(broken)
    bus.subscribe(lambda event, level, fields: seen.append(event))
    bus.emit("agent.state", logging.INFO, agent="a")
    assert seen == ["agent.state"]
    assert "event sink" in stream.getvalue()
    assert "boom" in stream.getvalue()


def test_docs_list_every_event_with_its_level_and_fields() -> None:
    from pathlib import Path

    from axon.observability.events import EVENTS

    doc = (Path(__file__).parents[2] / "docs" / "logging.md").read_text()
    table = doc.split("<!-- events:begin", 1)[1].split("<!-- events:end -->", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = {}
    for row in rows:
        name, levels, fields, _meaning = (cell.strip() for cell in row.strip("|").split(" | "))
        documented[name.strip("`")] = (levels, fields)
    assert documented == {
        name: (
            "/".join(logging.getLevelName(level) for level in kind.levels),
            ", ".join(kind.fields),
        )
        for name, kind in EVENTS.items()
    }
