"""Alembic's environment for tidegate's store: always run on a connection handed over by
`tidegate.store.migrate` (no alembic.ini, no URL here)."""

from __future__ import annotations

from alembic import context

from tidegate.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
