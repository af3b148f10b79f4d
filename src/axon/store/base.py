"""The store interface.

A conversation is a list of pydantic-ai messages with an integer revision: the number of runs
committed to it. A run loads the history at revision r and commits its new messages only if the
conversation is still at r, in one transaction (optimistic concurrency): a run that fails commits
nothing, so the history stays as it was, and two writers (two orchestrators sharing a Postgres
store) can never interleave or lose messages: the second gets ``StoreConflict``.

Messages travel as pydantic-ai JSON (``ModelMessagesTypeAdapter``) and the orchestrator never
parses them on the hot path: a run's new messages are stored as one JSON array, and a history is
the concatenation of its runs' arrays (:func:`join_json_arrays`).

Why not pydantic-ai's own ``ConversationStore``: it keeps one entry per message linked to its
parent and validates every message into Python objects on save and load. Axon's orchestrator
never needs the objects, only the bytes it relays to the worker, and commits a whole run at once;
storing a run as one JSON value keeps a commit to one row and a load to one ordered scan.

Store failures (unreachable, locked, timed out) raise ``StoreUnavailable``; nothing is written,
except by a ``commit`` whose confirmation was lost on the way back (a network store only): that
``StoreUnavailable`` has ``maybe_committed=True``, since the run may be in the history or not.

Cancellation contract: every method may be cancelled; a cancelled ``commit`` either committed
fully or not at all (the transaction is atomic), and the caller treats it as not acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgspec

__all__ = [
    "ConversationInfo",
    "ConversationStore",
    "History",
    "join_json_arrays",
    "slice_json_array",
]


@dataclass(frozen=True)
class History:
    """A conversation's messages (a JSON array) at ``revision`` (0: a new conversation)."""

    messages: bytes
    revision: int


@dataclass(frozen=True)
class ConversationInfo:
    """One conversation as listed by :meth:`ConversationStore.list_conversations`."""

    conversation_id: str
    agent_id: str
    revision: int
    """Runs committed so far."""
    created_at: float
    """Unix time of the first commit."""
    updated_at: float
    """Unix time of the last commit."""


class ConversationStore(Protocol):
    """What the runtime needs of a store; every backend passes the same conformance suite."""

    async def open(self) -> None:
        """Connect and bring the schema up to date (versioned migrations); idempotent."""
        ...

    async def ping(self) -> None:
        """Check the store answers now (``/readyz``); raise ``StoreUnavailable`` if not."""
        ...

    async def load(self, conversation_id: str) -> History:
        """The conversation's history (an empty one at revision 0 if it does not exist)."""
        ...

    async def commit(
        self, conversation_id: str, *, agent_id: str, expected_revision: int, messages: bytes
    ) -> int:
        """Append one run's messages (a JSON array) atomically; the new revision.

        Raises ``StoreConflict`` if the conversation is no longer at ``expected_revision``.
        """
        ...

    async def delete(self, conversation_id: str) -> bool:
        """Forget a conversation; whether it existed."""
        ...

    async def list_conversations(
        self, agent_id: str | None = None, *, limit: int = 100, after: str | None = None
    ) -> list[ConversationInfo]:
        """Conversations (of ``agent_id``, or all) ordered by id, at most ``limit``, starting
        after the id ``after`` (keyset paging)."""
        ...

    async def close(self) -> None: ...


def slice_json_array(array: bytes, start: int, stop: int | None) -> bytes:
    """``array[start:stop]`` of a JSON array, without parsing its items (each is kept as the
    JSON it was)."""
    items = _raw_items.decode(array)
    return _raw_encoder.encode(items[start:stop])


_raw_items = msgspec.json.Decoder(list[msgspec.Raw])
_raw_encoder = msgspec.json.Encoder()


def join_json_arrays(arrays: list[bytes]) -> bytes:
    """Concatenate JSON arrays without parsing them: ``[a,b] + [c] -> [a,b,c]``."""
    items = [inner for a in arrays if (inner := a.strip()[1:-1].strip())]
    return b"[" + b",".join(items) + b"]"
