"""The usage ledger: one row per request that reaches a model, written off the hot path.

A request's row is queued when it starts (`pending`) and completed when it ends; a background
task writes what is queued every `ledger.flush_seconds` (or at `ledger.flush_rows` rows) in one
transaction, and once more at shutdown. A request that starts and ends between two writes is
inserted once, complete. Each instance heartbeats in `instances`; the reaper marks the
`pending` rows of instances whose heartbeat is older than `ledger.stale_seconds` as
`interrupted`, so that no row stays `pending` after its instance died.

Every request pays for its row, so the queue and the writer are lean: a row is queued as a
list of column values (no dict per row), and written with the driver's own statements, its
values prepared by the column types' own SQLAlchemy bind processors (so the stored form is the
one SQLAlchemy reads back). On SQLite, many rows go in one `INSERT ... VALUES (...), (...)`:
the driver releases the GIL for each statement it steps, and a statement per row made the
writer's thread and the event loop hand the GIL back and forth for every row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sqlite3
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidegate.settings import LedgerConfig
from tidegate.store.keys import utcnow
from tidegate.store.tables import instances, usage

log = logging.getLogger("tidegate.ledger")

STATUSES = ("pending", "ok", "error", "client_closed", "cancelled", "interrupted")
#: What a row can be grouped by in a usage summary.
GROUPS = ("day", "key", "model")
#: Completion fields (every `finish` sets all of them).
COMPLETION = (
    "status",
    "http_status",
    "error",
    "deployment",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "estimated",
    "cost",
    "ttfb_ms",
    "duration_ms",
    "attempts",
    "stream_id",
    "ended_at",
)
#: Rows kept in memory while the database cannot be written, at most.
MAX_QUEUED = 100_000
#: What the caller of `Ledger.begin` gives (anything missing is NULL).
BEGUN = ("request_id", "key_id", "key_name", "user", "endpoint", "model")
#: A queued row: its columns, in this order (every column of `usage`).
COLUMNS = ("id", *BEGUN, "day", "started_at", "instance_id", *COMPLETION)
_FIRST_COMPLETION = COLUMNS.index(COMPLETION[0])
#: The completion of a row still pending.
_PENDING: tuple[Any, ...] = (
    "pending",
    None,
    None,
    None,
    0,
    0,
    0,
    0,
    0,
    False,
    0.0,
    None,
    None,
    0,
    None,
    None,
)
assert len(_PENDING) == len(COMPLETION)
assert set(COLUMNS) == {c.name for c in usage.c}, "COLUMNS must name every column of usage"
#: Bound values per SQLite statement (SQLITE_MAX_VARIABLE_NUMBER's default since 3.32).
_SQLITE_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def new_instance_id() -> str:
    """This process's id in the ledger: host, pid and a random part (unique per start)."""
    host = socket.gethostname()[:30]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Ledger:
    """The ledger of one instance: a queue of rows, its writer, heartbeat and reaper."""

    def __init__(self, engine: AsyncEngine, settings: LedgerConfig, instance_id: str):
        self._engine = engine
        self.settings = settings
        self.instance_id = instance_id
        # Rows to insert (every column, in `COLUMNS` order) and completions of rows already
        # written (`COMPLETION` order), by row id.
        self._new: dict[str, list[Any]] = {}
        self._done: dict[str, tuple[Any, ...]] = {}
        self._writer = _Writer(engine.dialect)
        self._counter = 0
        self._prefix = secrets.token_hex(4)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._flushing = asyncio.Lock()

    # -- the hot path: queue only ---------------------------------------------------------

    def begin(self, fields: dict[str, Any]) -> str:
        """Queue the `pending` row of a request that starts (`fields`: names of `BEGUN`);
        returns the row's id."""
        self._counter += 1
        row_id = f"{self._prefix}{self._counter:012x}"
        now = utcnow()
        if len(self._new) + len(self._done) < MAX_QUEUED:
            get = fields.get
            self._new[row_id] = [
                row_id,
                get("request_id", ""),
                get("key_id"),
                get("key_name"),
                get("user"),
                get("endpoint", ""),
                get("model"),
                now.date().isoformat(),
                now,
                self.instance_id,
                *_PENDING,
            ]
            self._kick()
        return row_id

    def finish(self, row_id: str, fields: dict[str, Any]) -> None:
        """Queue the completion of a row (`fields`: every name of `COMPLETION` but
        `ended_at`)."""
        done = (*map(fields.__getitem__, COMPLETION[:-1]), utcnow())
        pending = self._new.get(row_id)
        if pending is not None:
            pending[_FIRST_COMPLETION:] = done
        elif len(self._new) + len(self._done) < MAX_QUEUED:
            self._done[row_id] = done
        self._kick()

    def _kick(self) -> None:
        if len(self._new) + len(self._done) >= self.settings.flush_rows:
            self._wake.set()

    # -- background -----------------------------------------------------------------------

    async def start(self) -> None:
        """Heartbeat, reap once, and start the writer, heartbeat and reaper tasks."""
        await self.heartbeat()
        await self.reap()
        self._tasks = [
            asyncio.create_task(self._every(self.settings.flush_seconds, self.flush, True)),
            asyncio.create_task(self._every(self.settings.heartbeat_seconds, self.heartbeat)),
            asyncio.create_task(self._every(self.settings.reap_seconds, self.reap)),
        ]

    async def close(self) -> None:
        """Stop the tasks, write what is queued, and mark this instance's rows still pending
        as `interrupted` (the process is going away)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        try:
            await self.flush()
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(usage)
                    .where(usage.c.status == "pending", usage.c.instance_id == self.instance_id)
                    .values(status="interrupted", ended_at=utcnow())
                )
        except Exception as exc:
            log.warning("the usage ledger could not be written at shutdown: %s", exc)

    async def _every(self, seconds: float, job: Any, wakeable: bool = False) -> None:
        while True:
            if wakeable:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await self._wake.wait()
                self._wake.clear()
            else:
                await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:
                log.warning("usage ledger: %s failed: %s", job.__name__, exc)

    async def flush(self) -> None:
        """Write the queued rows in one transaction (put back if the write fails)."""
        async with self._flushing:
            new, done = self._new, self._done
            if not new and not done:
                return
            self._new, self._done = {}, {}
            try:
                async with self._engine.begin() as conn:
                    if new:
                        await self._writer.insert(conn, new.values())
                    if done:
                        await self._writer.complete(conn, done.items())
            except BaseException:
                # Nothing is lost: keep the rows for the next write (newer ones win).
                for row_id, row in new.items():
                    row = self._new.setdefault(row_id, row)
                    later = self._done.pop(row_id, None)
                    if later is not None:
                        row[_FIRST_COMPLETION:] = later
                for row_id, completion in done.items():
                    self._done.setdefault(row_id, completion)
                raise

    async def heartbeat(self) -> None:
        """Say this instance is alive (one row per instance)."""
        now = utcnow()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(instances).where(instances.c.id == self.instance_id).values(heartbeat_at=now)
            )
            if result.rowcount == 0:
                await conn.execute(
                    insert(instances).values(id=self.instance_id, started_at=now, heartbeat_at=now)
                )

    async def reap(self) -> int:
        """Mark `pending` rows of instances not heard from in `ledger.stale_seconds` (or
        unknown) as `interrupted`; returns how many."""
        now = utcnow()
        cutoff = now - timedelta(seconds=self.settings.stale_seconds)
        alive = select(instances.c.id).where(instances.c.heartbeat_at >= cutoff)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(usage)
                .where(
                    usage.c.status == "pending",
                    usage.c.instance_id != self.instance_id,
                    usage.c.instance_id.not_in(alive),
                )
                .values(status="interrupted", ended_at=now)
            )
            count = int(result.rowcount or 0)
            # Instances gone for a day, with nothing pending any more, are forgotten.
            await conn.execute(
                delete(instances).where(instances.c.heartbeat_at < now - timedelta(days=1))
            )
        if count:
            log.warning("usage ledger: %d requests of stopped instances marked interrupted", count)
        return count


class _Writer:
    """The ledger's statements for one dialect, on the driver's own placeholders."""

    def __init__(self, dialect: Dialect):
        self._sqlite = dialect.name == "sqlite"
        self._numbered = dialect.paramstyle in ("numeric", "numeric_dollar")
        self._mark = "$" if dialect.paramstyle == "numeric_dollar" else ":"
        # The columns whose values need preparing for this driver (datetimes and booleans
        # for SQLite), by position, with the column type's own processor.
        self._prepare: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(COLUMNS):
            column_type = usage.c[name].type
            processor = column_type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._prepare.append((index, processor))
        self._update = (
            "UPDATE usage SET "
            + ", ".join(f"{_quoted(name)} = {self._at(i + 1)}" for i, name in enumerate(COMPLETION))
            + f" WHERE id = {self._at(len(COMPLETION) + 1)}"
        )
        self._statements: dict[int, str] = {}

    def _at(self, position: int) -> str:
        return f"{self._mark}{position}" if self._numbered else "?"

    def _values(self, rows: int) -> str:
        """The `INSERT` of `rows` rows (cached by size)."""
        statement = self._statements.get(rows)
        if statement is None:
            width = len(COLUMNS)
            groups = (
                "(" + ", ".join(self._at(r * width + c + 1) for c in range(width)) + ")"
                for r in range(rows)
            )
            columns = ", ".join(map(_quoted, COLUMNS))
            statement = f"INSERT INTO usage ({columns}) VALUES {', '.join(groups)}"
            if len(self._statements) < 8:
                self._statements[rows] = statement
        return statement

    def _prepared(self, values: list[Any] | tuple[Any, ...], offset: int = 0) -> list[Any]:
        out = list(values)
        for index, processor in self._prepare:
            if index >= offset:
                out[index - offset] = processor(out[index - offset])
        return out

    async def insert(self, conn: AsyncConnection, rows: Iterable[list[Any]]) -> None:
        """Insert queued rows: on SQLite in as few statements as its bound-value limit
        allows, elsewhere one statement run for every row (asyncpg pipelines them)."""
        prepared = [self._prepared(row) for row in rows]
        if not self._sqlite:
            await conn.exec_driver_sql(self._values(1), [tuple(row) for row in prepared])
            return
        per = _SQLITE_VARIABLES // len(COLUMNS)
        for start in range(0, len(prepared), per):
            batch = prepared[start : start + per]
            flat: list[Any] = []
            for row in batch:
                flat += row
            await conn.exec_driver_sql(self._values(len(batch)), tuple(flat))

    async def complete(
        self, conn: AsyncConnection, done: Iterable[tuple[str, tuple[Any, ...]]]
    ) -> None:
        """Write the completions of rows inserted earlier."""
        params = [
            (*self._prepared(completion, _FIRST_COMPLETION), row_id) for row_id, completion in done
        ]
        await conn.exec_driver_sql(self._update, params)


def _quoted(name: str) -> str:
    return f'"{name}"'


# -- reading ------------------------------------------------------------------------------------


def parse_groups(by: str | None) -> list[str]:
    """`day,key` as `["day", "key"]`; ValueError naming what is wrong."""
    groups = [g.strip() for g in (by or "key").split(",") if g.strip()]
    if not groups or any(g not in GROUPS for g in groups) or len(set(groups)) != len(groups):
        raise ValueError(f"by: one or more of {', '.join(GROUPS)}, comma-separated")
    return groups


async def summary(
    engine: AsyncEngine, groups: Iterable[str], since: date | None = None
) -> list[dict[str, Any]]:
    """Requests, errors (every status but ok), tokens and cost, grouped by `groups`."""
    columns = {
        "day": usage.c.day,
        "key": func.coalesce(usage.c.key_name, usage.c.key_id, "anonymous"),
        "model": func.coalesce(usage.c.model, ""),
    }
    chosen = [(g, columns[g].label(g)) for g in groups]
    query = select(
        *(c for _, c in chosen),
        func.count().label("requests"),
        func.sum(case((usage.c.status == "ok", 0), else_=1)).label("errors"),
        func.coalesce(func.sum(usage.c.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(usage.c.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(usage.c.cost), 0.0).label("cost"),
    )
    if since is not None:
        query = query.where(usage.c.day >= since.isoformat())
    keys = [c for _, c in chosen]
    query = query.group_by(*keys).order_by(*keys)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        item: dict[str, Any] = {g: row[g] for g, _ in chosen}
        item["requests"] = int(row["requests"])
        item["errors"] = int(row["errors"] or 0)
        item["input_tokens"] = int(row["input_tokens"])
        item["output_tokens"] = int(row["output_tokens"])
        item["cost"] = round(float(row["cost"]), 10)
        out.append(item)
    return out


def _json_time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") + "Z" if value is not None else None


async def recent(engine: AsyncEngine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` ledger rows, newest first, as JSON-ready dicts."""
    query = select(usage).order_by(usage.c.started_at.desc(), usage.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        item = {str(column.name): row[column] for column in usage.c}
        item["started_at"] = _json_time(item["started_at"])
        item["ended_at"] = _json_time(item["ended_at"])
        item["estimated"] = bool(item["estimated"])
        out.append(item)
    return out
