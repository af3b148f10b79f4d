"""Versioned schema migrations, backend-neutral.

A store lists its schema as numbered :class:`Migration` s (versions ``1, 2, 3, ...``, never
edited once released: a change is a new migration). On ``open()`` it hands them to
:func:`migrate` (or :func:`migrate_async`) with two callbacks of its own:

``current_version()``
    the highest version applied to the database, ``0`` for an empty one.
``apply(migration)``
    run the migration's statements and record its version, in ONE transaction. Several
    processes may open the same database at once, so ``apply`` takes the backend's write lock
    first (SQLite ``BEGIN IMMEDIATE``, a Postgres advisory transaction lock), re-reads the
    version inside the transaction and does nothing if it is already ``>= migration.version``.

The runner applies the pending migrations in order, so a crash between two of them leaves a
database at a consistent older version that the next ``open()`` carries on from. A database
whose version is NEWER than the newest migration this Axon knows (written by a later release)
is refused with :class:`~axon.errors.ConfigError` naming both versions: nothing is touched.

Both stores record the applied versions in a table ``axon_schema(version, applied_at,
description)``, one row per migration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from axon.errors import ConfigError

__all__ = ["Migration", "migrate", "migrate_async", "pending_migrations"]


@dataclass(frozen=True)
class Migration:
    """One schema step: the statements that take the schema from ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


def pending_migrations(
    migrations: Sequence[Migration], current: int, *, store: str
) -> list[Migration]:
    """The migrations to apply, in order, to a database at version ``current``.

    Raises ``ValueError`` if ``migrations`` are not numbered 1, 2, 3, ... (a bug in the store)
    and ``ConfigError`` if ``current`` is newer than the last migration.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError(f"{store} migrations must be numbered 1, 2, 3, ...; got {versions}")
    latest = len(migrations)
    if current > latest:
        raise ConfigError(
            "runtime.store",
            f"the {store} database has schema version {current}, but this version of Axon only "
            f"knows versions up to {latest}: it was written by a newer Axon. Upgrade Axon, or "
            "point runtime.store at another database",
        )
    return [m for m in migrations if m.version > current]


def migrate(
    migrations: Sequence[Migration],
    *,
    store: str,
    current_version: Callable[[], int],
    apply: Callable[[Migration], None],
) -> int:
    """Bring a database up to date (blocking callbacks); the schema version it is at now."""
    for migration in pending_migrations(migrations, current_version(), store=store):
        apply(migration)
    return len(migrations)


async def migrate_async(
    migrations: Sequence[Migration],
    *,
    store: str,
    current_version: Callable[[], Awaitable[int]],
    apply: Callable[[Migration], Awaitable[None]],
) -> int:
    """:func:`migrate` with async callbacks (for asyncio drivers such as asyncpg)."""
    for migration in pending_migrations(migrations, await current_version(), store=store):
        await apply(migration)
    return len(migrations)
