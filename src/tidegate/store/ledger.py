"""The usage ledger: one row per request that reaches a model, written off the hot path.

A request's row is queued when it starts (`pending`) and completed when it ends; a background
task writes what is queued every `ledger.flush_seconds` (or at `ledger.flush_rows` rows) in one
transaction, and once more at shutdown. A request that starts and ends between two writes is
inserted once, complete. Each instance heartbeats in `instances`; the reaper marks the
`pending` rows of instances whose heartbeat is older than `ledger.stale_seconds` as
`interrupted`, so that no row stays `pending` after its instance died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

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
        self._new: dict[str, dict[str, Any]] = {}
        self._done: dict[str, dict[str, Any]] = {}
        self._counter = 0
        self._prefix = secrets.token_hex(4)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._flushing = asyncio.Lock()

    # -- the hot path: queue only ---------------------------------------------------------

    def begin(self, fields: dict[str, Any]) -> str:
        """Queue the `pending` row of a request that starts; returns the row's id."""
        self._counter += 1
        row_id = f"{self._prefix}{self._counter:012x}"
        now = utcnow()
        row = {
            "id": row_id,
            "request_id": "",
            "key_id": None,
            "key_name": None,
            "user": None,
            "endpoint": "",
            "model": None,
            "deployment": None,
            "status": "pending",
            "http_status": None,
            "error": None,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "estimated": False,
            "cost": 0.0,
            "ttfb_ms": None,
            "duration_ms": None,
            "attempts": 0,
            "stream_id": None,
            "day": now.date().isoformat(),
            "started_at": now,
            "ended_at": None,
            "instance_id": self.instance_id,
        }
        row.update(fields)
        if len(self._new) + len(self._done) < MAX_QUEUED:
            self._new[row_id] = row
            self._kick()
        return row_id

    def finish(self, row_id: str, fields: dict[str, Any]) -> None:
        """Queue the completion of a row (every name of `COMPLETION` but `ended_at`)."""
        done = {**fields, "ended_at": utcnow()}
        pending = self._new.get(row_id)
        if pending is not None:
            pending.update(done)
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
                        await conn.execute(insert(usage), list(new.values()))
                    if done:
                        values: dict[str, Any] = {
                            name: bindparam("v_" + name) for name in COMPLETION
                        }
                        statement = (
                            update(usage).where(usage.c.id == bindparam("row_id")).values(values)
                        )
                        params = [
                            {"row_id": row_id, **{"v_" + k: v for k, v in fields.items()}}
                            for row_id, fields in done.items()
                        ]
                        await conn.execute(statement, params)
            except BaseException:
                # Nothing is lost: keep the rows for the next write (newer ones win).
                for row_id, row in new.items():
                    self._new.setdefault(row_id, row).update(self._done.pop(row_id, {}))
                for row_id, fields in done.items():
                    self._done[row_id] = {**fields, **self._done.get(row_id, {})}
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
