"""Structured log events: one named event per thing that happens, with its facts as fields.

Every event goes through :func:`emit` to the ``axon`` logger as a record whose ``event``
attribute names it and whose ``fields`` attribute holds the facts (agent, worker pid, run id,
conversation id, ...). :mod:`axon.observability.logging` renders records as text or JSON lines.

Event names (stable; operators and tests rely on them):

=====================  =======  ================================================
event                  level    fields
=====================  =======  ================================================
worker.start           INFO     agent, worker, generation
worker.ready           INFO     agent, worker, pid, startup_s
worker.startup_failed  ERROR    agent, worker, pid, message (agent import/build failed)
worker.exit            INFO     agent, worker, pid, exit_code, signal, reason, was_ready
                                 (WARNING when the exit was not requested)
worker.hung            ERROR    agent, worker, pid, silent_s
worker.output          INFO     agent, worker, pid, stream, line
worker.kill            WARNING  agent, worker, pid, reason
agent.restart          WARNING  agent, worker, attempt, delay_s, cause
agent.failed           ERROR    agent, restarts, window_s, cooldown_s
agent.state            INFO     agent, previous, state
run.routed             DEBUG    agent, worker, pid, run, conversation
run.finished           INFO     agent, conversation, latency_s, outcome ("ok", the error's
                                 type, or "cancelled": the caller left or cancelled)
run.timeout            WARNING  agent, conversation, timeout_s
protocol.error         ERROR    agent, worker, pid, message
task.failed            ERROR    owner, task, error (a bug: a background task raised)
http.listening         INFO     url, auth (whether a bearer token is required)
http.shutdown          INFO     grace_s (stopped accepting; in-flight requests finish)
http.disconnected      INFO     agent, conversation, on_disconnect (client left mid-run)
http.cut               WARNING  method, path (still running when the shutdown grace ended)
http.internal_error    ERROR    method, path, error (a bug: answered with a bare 500)
=====================  =======  ================================================
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LOGGER_NAME", "emit"]

LOGGER_NAME = "axon"
_logger = logging.getLogger(LOGGER_NAME)
# A library stays quiet until the application configures logging (``configure_logging`` or
# its own handlers); without this, Python's last-resort handler prints bare event names.
_logger.addHandler(logging.NullHandler())


def emit(event: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one structured event (cheap when the level is disabled)."""
    if _logger.isEnabledFor(level):
        _logger.log(level, event, extra={"event": event, "fields": fields})
