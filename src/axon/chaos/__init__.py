"""Chaos testing: faults injected under load, then invariants checked and recovery timed.

:mod:`axon.chaos.invariants` checks what a run recorded (pure); :mod:`axon.chaos.timeline`
turns faults and state changes into recovery times (pure). docs/chaos.md explains both.
"""

from __future__ import annotations

from axon.chaos.invariants import (
    OK,
    STORE,
    TYPED_ERRORS,
    UNKNOWN,
    AgentObservation,
    ChaosRecord,
    ConversationHistory,
    Exchange,
    Fault,
    RequestRecord,
    Verdict,
    check_invariants,
    exchanges_from_messages,
    exit_code,
    observe_agent,
    verdict_table,
    verdicts_to_dict,
)
from axon.chaos.timeline import (
    Interval,
    Recovery,
    RecoverySummary,
    StateChange,
    recovery_times,
    serving_intervals,
    summarize_recoveries,
    timeline_table,
    timeline_to_dict,
)

__all__ = [
    "OK",
    "STORE",
    "TYPED_ERRORS",
    "UNKNOWN",
    "AgentObservation",
    "ChaosRecord",
    "ConversationHistory",
    "Exchange",
    "Fault",
    "Interval",
    "Recovery",
    "RecoverySummary",
    "RequestRecord",
    "StateChange",
    "Verdict",
    "check_invariants",
    "exchanges_from_messages",
    "exit_code",
    "observe_agent",
    "recovery_times",
    "serving_intervals",
    "summarize_recoveries",
    "timeline_table",
    "timeline_to_dict",
    "verdict_table",
    "verdicts_to_dict",
]
