"""An in-memory store: for tests and for runs where history need not outlive the process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from axon.errors import StoreConflict
from axon.store.base import ConversationInfo, History, join_json_arrays

__all__ = ["InMemoryStore"]


@dataclass
class _Conversation:
    agent_id: str
    created_at: float
    updated_at: float
    runs: list[bytes] = field(default_factory=list)


class InMemoryStore:
    def __init__(self) -> None:
        self._conversations: dict[str, _Conversation] = {}

    async def open(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def load(self, conversation_id: str) -> History:
        conv = self._conversations.get(conversation_id)
        if conv is None:
            return History(b"[]", 0)
        return History(join_json_arrays(conv.runs), len(conv.runs))

    async def commit(
        self, conversation_id: str, *, agent_id: str, expected_revision: int, messages: bytes
    ) -> int:
        conv = self._conversations.get(conversation_id)
        actual = len(conv.runs) if conv else 0
        if actual != expected_revision:
            raise StoreConflict(conversation_id, expected=expected_revision, actual=actual)
        now = time.time()
        if conv is None:
            conv = self._conversations[conversation_id] = _Conversation(agent_id, now, now)
        conv.runs.append(messages)
        conv.updated_at = now
        return len(conv.runs)

    async def delete(self, conversation_id: str) -> bool:
        return self._conversations.pop(conversation_id, None) is not None

    async def list_conversations(
        self, agent_id: str | None = None, *, limit: int = 100, after: str | None = None
    ) -> list[ConversationInfo]:
        ids = sorted(
            cid
            for cid, conv in self._conversations.items()
            if (agent_id is None or conv.agent_id == agent_id) and (after is None or cid > after)
        )
        return [self._info(cid) for cid in ids[:limit]]

    def _info(self, cid: str) -> ConversationInfo:
        conv = self._conversations[cid]
        return ConversationInfo(
            cid, conv.agent_id, len(conv.runs), conv.created_at, conv.updated_at
        )

    async def close(self) -> None:
        self._conversations.clear()
