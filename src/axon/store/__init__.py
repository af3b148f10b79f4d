"""Conversation stores: the orchestrator owns every conversation's history.

``PostgresStore`` lives in :mod:`axon.store.postgres` (it needs the ``postgres`` extra).
"""

from axon.errors import StoreConflict
from axon.store.base import ConversationInfo, ConversationStore, History
from axon.store.memory import InMemoryStore
from axon.store.sqlite import SqliteStore
from axon.store.urls import open_store

__all__ = [
    "ConversationInfo",
    "ConversationStore",
    "History",
    "InMemoryStore",
    "SqliteStore",
    "StoreConflict",
    "open_store",
]
