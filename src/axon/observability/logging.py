"""Rendering of Axon's log records: readable text (default) or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Literal, TextIO

from axon.observability.events import LOGGER_NAME

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "event", "logger", ...fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.getMessage(),
            "logger": record.name,
            **_fields(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL event key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None) or record.getMessage()
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        stamp = self.formatTime(record, "%H:%M:%S")
        line = f"{stamp} {record.levelname:<7} {event} {pairs}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _drop_duplicate_cut(record: logging.LogRecord) -> bool:
    """uvicorn logs an ERROR when the shutdown grace ends with requests still running; each of
    them is already an ``http.cut`` WARNING with its method and path, so drop uvicorn's line."""
    return not (
        record.name == "uvicorn.error"
        and "timeout graceful shutdown exceeded" in record.getMessage()
    )


def configure_logging(
    fmt: Literal["text", "json"] = "text",
    level: int = logging.INFO,
    *,
    stream: TextIO | None = None,
) -> None:
    """Send the ``axon`` logger's records to ``stream`` (default: stderr) in the given format
    (idempotent), and the HTTP server's (uvicorn's) warnings and errors the same way."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(_drop_duplicate_cut)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._axon = True  # type: ignore[attr-defined]
    for name, logger_level in ((LOGGER_NAME, level), ("uvicorn.error", logging.WARNING)):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if getattr(old, "_axon", False):
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(max(level, logger_level))
        logger.propagate = False
    # asyncpg logs a traceback on every background reconnect attempt while Postgres is down;
    # Axon already reports the outage as StoreUnavailable, so keep only its real errors.
    logging.getLogger("asyncpg").setLevel(logging.CRITICAL)
