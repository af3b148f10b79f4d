"""Checks of what callers send, shared by the Python API and the HTTP edge."""

from __future__ import annotations

import math
import re
import uuid

from axon.config import AgentSpec
from axon.conversation_locks import ConversationPolicy
from axon.errors import InvalidRequest

__all__ = [
    "MIN_TIMEOUT",
    "check_conversation_id",
    "check_page",
    "check_policy",
    "check_prompt",
    "check_timeout",
    "new_conversation_id",
]

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MIN_TIMEOUT = 0.01
"""Seconds: the shortest ``timeout`` a request may ask for (a run cannot even start in less)."""


def check_prompt(prompt: object, spec: AgentSpec) -> str:
    if not isinstance(prompt, str):
        raise InvalidRequest(
            f"prompt must be a string, not {type(prompt).__name__}", field="prompt"
        )
    if not prompt.strip():
        raise InvalidRequest("prompt must not be empty", field="prompt")
    if len(prompt) > spec.max_prompt_chars:
        raise InvalidRequest(
            f"prompt has {len(prompt)} characters; the limit is {spec.max_prompt_chars}",
            field="prompt",
        )
    return prompt


def check_conversation_id(conversation_id: object) -> str:
    if not isinstance(conversation_id, str) or not CONVERSATION_ID.fullmatch(conversation_id):
        raise InvalidRequest(
            "conversation_id must be 1-128 characters of letters, digits, '_', '-', '.', ':' "
            "starting with a letter or digit",
            field="conversation_id",
        )
    return conversation_id


def check_timeout(timeout: object, spec: AgentSpec) -> float:
    if timeout is None:
        return spec.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidRequest("timeout must be a number of seconds", field="timeout")
    if not math.isfinite(timeout) or not MIN_TIMEOUT <= timeout <= spec.max_timeout:
        raise InvalidRequest(
            f"timeout must be >= {MIN_TIMEOUT:g} and <= {spec.max_timeout:g} seconds",
            field="timeout",
        )
    return float(timeout)


def check_policy(policy: object) -> ConversationPolicy:
    try:
        return ConversationPolicy(policy)
    except ValueError:
        choices = ", ".join(p.value for p in ConversationPolicy)
        raise InvalidRequest(f"policy must be one of {choices}", field="policy") from None


def check_page(offset: object, limit: object) -> tuple[int, int | None]:
    """``(start, stop)`` slice bounds of a page of messages."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidRequest("offset must be an integer >= 0", field="offset")
    if limit is None:
        return offset, None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidRequest("limit must be an integer >= 1", field="limit")
    return offset, offset + limit


def new_conversation_id() -> str:
    return uuid.uuid4().hex
