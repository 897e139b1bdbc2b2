"""The store: managed client keys and the usage ledger, in SQLite (the default, `./tidegate.db`)
or PostgreSQL (`database: postgresql://...`), through SQLAlchemy's async engine.

- `engine.py`: the URL, the engine, `StoreError`
- `tables.py`: the tables; `migrations/` their Alembic revisions, run by `migrate.py`
- `keys.py`: managed keys (only their SHA-256 is stored)
- `ledger.py`: one row per request, written in batches; heartbeats and the reaper

`Store.open` connects and checks the schema: a database behind this version is a `StoreError`
that says to run `tidegate db upgrade`; a new SQLite file is created and upgraded on the spot.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy.ext.asyncio import AsyncEngine

from tidegate.settings import LedgerConfig
from tidegate.store import migrate
from tidegate.store.engine import StoreError, create_engine, describe, sqlite_path
from tidegate.store.keys import KeyRepository
from tidegate.store.ledger import Ledger, new_instance_id


class Store:
    """One database: its engine, the managed keys, and this instance's ledger."""

    def __init__(self, database: str | None, ledger: LedgerConfig | None = None):
        self.database = database
        self.engine: AsyncEngine = create_engine(database)
        self.keys = KeyRepository(self.engine)
        self.ledger = Ledger(self.engine, ledger or LedgerConfig(), new_instance_id())

    @property
    def label(self) -> str:
        """The database for messages (no password)."""
        return describe(self.database)

    async def open(self, *, create: bool = True) -> None:
        """Connect and check the schema. A SQLite file that does not exist yet is created and
        upgraded when `create`; a schema behind this version, or a database that cannot be
        reached, is a `StoreError` naming what to do."""
        path = sqlite_path(self.database)
        fresh = path is not None and not await asyncio.to_thread(os.path.exists, path)
        try:
            at = await migrate.current(self.engine)
        except Exception as exc:
            raise StoreError(f"database: cannot connect to {self.label}: {_reason(exc)}") from None
        head = await asyncio.to_thread(migrate.head)  # reads the migration files
        if at == head:
            return
        if fresh and create:
            await migrate.upgrade(self.engine)
            return
        if at is None:
            raise StoreError(
                f"database: {self.label} has no tidegate schema: run `tidegate db upgrade`"
            )
        raise StoreError(
            f"database: the schema of {self.label} is at revision {at}, this tidegate needs "
            f"{head}: run `tidegate db upgrade`"
        )

    async def upgrade(self) -> tuple[str | None, str]:
        """Bring the schema to the newest revision; returns (before, after)."""
        try:
            before = await migrate.current(self.engine)
        except Exception as exc:
            raise StoreError(f"database: cannot connect to {self.label}: {_reason(exc)}") from None
        await migrate.upgrade(self.engine)
        return before, migrate.head()

    async def aclose(self) -> None:
        """Release the engine's connections."""
        await self.engine.dispose()


def _reason(exc: BaseException) -> str:
    """The cause of a connection failure in one line (the driver's own error when wrapped)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


__all__ = ["Store", "StoreError"]
