"""A ``runtime.store`` URL to its store: the one place that knows every backend (each backend
imports :mod:`axon.store.base`, never this)."""

from __future__ import annotations

from axon.errors import ConfigError
from axon.store.base import ConversationStore

__all__ = ["open_store"]


def open_store(url: str) -> ConversationStore:
    """The store a ``store = "..."`` URL names (not opened yet: call ``await store.open()``).

    ``memory://``; ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``;
    ``postgresql://user@host:port/db`` (``postgres://`` too; needs the ``postgres`` extra).
    """
    scheme = url.partition("://")[0]
    if url == "memory://":
        from axon.store.memory import InMemoryStore

        return InMemoryStore()
    if scheme == "sqlite":
        from axon.store.sqlite import SqliteStore

        return SqliteStore.from_url(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from axon.store.postgres import PostgresStore
        except ImportError as exc:  # asyncpg missing
            raise ConfigError(
                "runtime.store",
                f"{exc}; install the postgres extra: pip install 'axon-runtime[postgres]'",
            ) from None
        return PostgresStore.from_url(url)
    raise ConfigError(
        "runtime.store",
        f"unsupported store URL {url!r} (supported: memory://, sqlite:///PATH, postgresql://...)",
    )
