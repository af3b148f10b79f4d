"""What the orchestrator tells a worker when it starts it (its command line, or its fork
request): which agent to build and the limits it runs under, as JSON."""

from __future__ import annotations

import msgspec

from axon.protocol.codec import MAX_FRAME_SIZE

__all__ = ["WorkerSettings"]


class WorkerSettings(msgspec.Struct, frozen=True):
    """What a worker is told when it starts (JSON on its command line, or in its fork request)."""

    agent_id: str
    agent: str
    model: str | None = None
    deps: str | None = None
    max_concurrency: int = 32
    max_result_bytes: int = MAX_FRAME_SIZE
    """The largest frame this worker may send (the agent's ``max_result_bytes``)."""
