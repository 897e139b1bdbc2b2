"""The cost of tenancy on the hot path: managed keys, limits and the usage ledger on, against
the same gateway with them off, measured in one run.

Targets (each its own gateway process, same upstream, same models):
- `off`: `database: off`, no client keys — no lookup, no limits, no ledger;
- `sqlite`: a managed key (cached lookups) with every limit set (rpm, tpm, max_streams, a
  budget: each request takes a slot, a window entry and spend updates), prices, the ledger on
  SQLite, state in memory — the embedded defaults with tenancy in use;
- `postgres+redis`: the same key and limits with the ledger on PostgreSQL and the counters in
  Redis (`TIDEGATE_BENCH_POSTGRES_URL`, default postgresql://postgres@127.0.0.1:5432/postgres,
  where a database of its own is created and dropped; `TIDEGATE_BENCH_REDIS_URL`, default
  redis://127.0.0.1:6379/9). Skipped, saying why, when either cannot be reached.

CPU is the gateway process's own; the database and Redis servers' CPU is not included.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from bench.harness import MESSAGES, Proc, Sample, load, start_gateway

SHAPES = [(1, 0), (50, 0)]
UNLIMITED = [
    "--rpm", "100000000", "--tpm", "1000000000", "--max-streams", "100000",
    "--budget", "1000000000", "--period", "month",
]  # fmt: skip
PRICE = {"input": 1.0, "output": 2.0}
POSTGRES = os.environ.get(
    "TIDEGATE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS = os.environ.get("TIDEGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


def _tidegate(config: dict[str, Any], *args: str) -> str:
    """Run a tidegate command on `config`; its stdout."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "tidegate", *args, "--config", handle.name],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    os.unlink(handle.name)
    if done.returncode != 0:
        raise RuntimeError(f"tidegate {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _managed_key(config: dict[str, Any]) -> str:
    """A managed key with every limit set (none reached), created with the CLI."""
    out = _tidegate(config, "keys", "create", "--name", f"bench-{secrets.token_hex(3)}", *UNLIMITED)
    return out.strip().splitlines()[0].strip()


def postgres_database(server: str, name: str, action: str) -> str:
    """Create (`action` "create") or drop (else) the database `name` on the PostgreSQL
    `server` (a URL); returns the URL of that database (the bench's and the scale-out test's)."""
    import asyncpg  # type: ignore[import-untyped]

    async def run() -> None:
        conn = await asyncio.wait_for(asyncpg.connect(server), 5)
        try:
            if action == "create":
                await conn.execute(f'CREATE DATABASE "{name}"')
            else:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


class Target:
    """One gateway of the comparison and the key it is called with."""

    def __init__(self, name: str, proc: Proc, key: str | None):
        self.name, self.proc = name, proc
        self.headers = {"Authorization": f"Bearer {key}"} if key else None

    def url(self) -> str:
        return f"http://127.0.0.1:{self.proc.port}/v1/chat/completions"


def _static(key: str) -> dict[str, Any]:
    """A static client key with the same limits as the managed one."""
    return {
        "key": key, "name": "bench", "rpm": 100_000_000, "tpm": 1_000_000_000,
        "max_streams": 100_000, "budget": 1e9, "period": "month",
    }  # fmt: skip


def _prices() -> dict[str, Any]:
    return {f"oa-c{c}-d{d}": PRICE for c, d in SHAPES}


def start_targets(upstream_port: int, tmp: Path) -> tuple[list[Target], list[str], list[str]]:
    """The targets that could be started, notes on those that could not, and the PostgreSQL
    databases to drop afterwards."""
    targets = [
        Target("off", start_gateway(upstream_port, SHAPES, extra_config={"database": "off"}), None)
    ]
    notes: list[str] = []
    sqlite = {"database": f"sqlite:///{tmp}/bench.db", "prices": _prices()}
    key = _managed_key({"models": [{"name": "x", "provider": "demo"}], **sqlite})
    targets.append(Target("sqlite", start_gateway(upstream_port, SHAPES, extra_config=sqlite), key))
    # The parts alone: the ledger without keys, and a static key's limits without a database.
    ledger_only = {"database": f"sqlite:///{tmp}/ledger-only.db", "prices": _prices()}
    proc = start_gateway(upstream_port, SHAPES, extra_config=ledger_only)
    targets.append(Target("ledger only (sqlite)", proc, None))
    static = secrets.token_urlsafe(16)
    limited = {"database": "off", "prices": _prices(), "auth": {"api_keys": [_static(static)]}}
    proc = start_gateway(upstream_port, SHAPES, extra_config=limited)
    targets.append(Target("limits only (memory)", proc, static))
    dropped: list[str] = []
    name = f"tidegate_bench_{secrets.token_hex(4)}"
    try:
        database = postgres_database(POSTGRES, name, "create")
    except Exception as exc:
        notes.append(f"postgres+redis skipped: PostgreSQL at {POSTGRES} ({type(exc).__name__})")
        return targets, notes, dropped
    dropped.append(name)
    scaled = {"database": database, "state": REDIS, "prices": _prices()}
    base = {"models": [{"name": "x", "provider": "demo"}], **scaled}
    try:
        _tidegate(base, "db", "upgrade")
        key = _managed_key(base)
        proc = start_gateway(upstream_port, SHAPES, extra_config=scaled)
    except Exception as exc:
        notes.append(f"postgres+redis skipped: {exc}")
        return targets, notes, dropped
    targets.append(Target("postgres+redis", proc, key))
    limited = {"database": "off", "state": REDIS, "prices": _prices()}
    limited["auth"] = {"api_keys": [_static(static)]}
    proc = start_gateway(upstream_port, SHAPES, extra_config=limited)
    targets.append(Target("limits only (redis)", proc, static))
    return targets, notes, dropped


def sqlite_row_floor(tmp: Path, rows: int = 20_000) -> float:
    """CPU seconds that SQLite itself spends on one ledger row: rows shaped like the ledger's
    inserted into the ledger's own table (its indexes included, created by `tidegate db
    upgrade`) with the driver's `executemany`, 500 rows per transaction as the ledger writes
    them — no SQLAlchemy, no event loop, no thread. What any gateway keeping a SQLite row per
    request pays at least."""
    from tidegate.store.tables import usage

    path = tmp / "floor.db"
    _tidegate({"models": [{"name": "x", "provider": "demo"}], "database": f"sqlite:///{path}"},
              "db", "upgrade")  # fmt: skip
    columns = [c.name for c in usage.c]
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    sample = {
        "request_id": "", "endpoint": "/v1/chat/completions", "model": "oa", "deployment": "oa",
        "status": "ok", "http_status": 200, "input_tokens": 12, "output_tokens": 50,
        "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0, "estimated": 0,
        "cost": 0.0, "ttfb_ms": 0.4, "duration_ms": 0.5, "attempts": 1, "day": now[:10],
        "started_at": now, "ended_at": now, "instance_id": "bench-floor",
    }  # fmt: skip
    prefix = secrets.token_hex(4)
    values = [
        tuple({**sample, "id": f"{prefix}{i:012x}", "request_id": f"r{i}"}.get(c) for c in columns)
        for i in range(rows)
    ]
    statement = (
        f"INSERT INTO usage ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        start = time.process_time()
        for i in range(0, rows, 500):
            with db:
                db.executemany(statement, values[i : i + 500])
        return (time.process_time() - start) / rows
    finally:
        db.close()


def drop(databases: list[str]) -> None:
    """Drop the bench's PostgreSQL databases."""
    for name in databases:
        postgres_database(POSTGRES, name, "drop")


def measure(
    targets: list[Target], stream: bool, chunks: int, concurrency: int, total: int, repeat: int
) -> dict[str, float]:
    """Median CPU seconds per successful request of each target, the targets taking turns
    within each repeat (after a warm-up each)."""
    body: dict[str, Any] = {"model": f"oa-c{chunks}-d0", "messages": MESSAGES}
    if stream:
        body["stream"] = True

    def go(target: Target, count: int) -> list[Sample]:
        return asyncio.run(
            load(target.url(), body, concurrency=concurrency, total=count, headers=target.headers)
        )

    for target in targets:
        samples = go(target, max(20, total // 10))
        if not all(s.ok for s in samples):
            raise RuntimeError(f"{target.name}: requests failed in the warm-up")
    cpus: dict[str, list[float]] = {t.name: [] for t in targets}
    for _ in range(repeat):
        for target in targets:
            cpu0 = target.proc.cpu_seconds()
            samples = go(target, total)
            ok = sum(s.ok for s in samples)
            if ok < len(samples):
                raise RuntimeError(f"{target.name}: {len(samples) - ok} requests failed")
            cpus[target.name].append((target.proc.cpu_seconds() - cpu0) / max(1, ok))
    return {name: statistics.median(values) for name, values in cpus.items()}
