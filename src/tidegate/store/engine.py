"""The database: its URL (SQLite by default, PostgreSQL), the async engine, and the errors that
name the `database` field of the config."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: The database when the config sets none: a SQLite file in the working directory.
DEFAULT_DATABASE = "sqlite:///tidegate.db"


class StoreError(Exception):
    """The database cannot be used: unreachable, unknown, or its schema is behind."""


def async_url(database: str | None) -> str:
    """The SQLAlchemy async URL of a config's `database` (asyncpg for PostgreSQL, aiosqlite
    for SQLite; None is `./tidegate.db`)."""
    url = database or DEFAULT_DATABASE
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    for prefix in ("sqlite+aiosqlite://", "sqlite://"):
        if url.startswith(prefix):
            return "sqlite+aiosqlite://" + url[len(prefix) :]
    raise StoreError(f"database: {describe(url)} is neither sqlite:/// nor postgresql://")


def sqlite_path(database: str | None) -> str | None:
    """The file of a SQLite database (None for PostgreSQL or an in-memory SQLite)."""
    url = async_url(database)
    if not url.startswith("sqlite+aiosqlite:///"):
        return None
    path = url[len("sqlite+aiosqlite:///") :].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def describe(database: str | None) -> str:
    """The database for messages: the URL without its password."""
    url = database or DEFAULT_DATABASE
    parts = urlsplit(url)
    if parts.password:
        url = url.replace(":" + parts.password + "@", ":***@", 1)
    return url


def create_engine(database: str | None) -> AsyncEngine:
    """An async engine for a config's `database`. SQLite gets WAL and a busy timeout, so that
    the ledger's writer, the admin API and the CLI can share the file."""
    url = async_url(database)
    if url.startswith("sqlite"):
        path = sqlite_path(database)
        if path is not None:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise StoreError(f"database: the directory {parent} does not exist")
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


__all__ = ["DEFAULT_DATABASE", "StoreError", "async_url", "create_engine", "describe"]
