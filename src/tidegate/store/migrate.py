"""Schema migrations (Alembic, shipped in `tidegate/store/migrations`, run on a connection of
the store's own engine: no alembic.ini, no second URL)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic's own INFO lines ("Context impl SQLiteImpl.") are noise in the gateway's log.
logging.getLogger("alembic").setLevel(logging.WARNING)


# Alembic is imported only when used (start-up checks, `tidegate db`): it is not needed to
# import the gateway, whose workers must start quickly.


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this version of tidegate ships."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert revision is not None
    return revision


async def current(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: no schema yet)."""
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the newest by default), in one transaction."""
    from alembic import command

    def run(sync: Connection) -> None:
        command.upgrade(_alembic_config(sync), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Take the schema back to `revision` (`base`: no tables)."""
    from alembic import command

    def run(sync: Connection) -> None:
        command.downgrade(_alembic_config(sync), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)
