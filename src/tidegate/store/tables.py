"""The tables: managed client keys, the usage ledger, and the instances that write it.

Times are naive UTC datetimes (the same on SQLite and PostgreSQL); `day` is the UTC day a
request started (`YYYY-MM-DD`), so that grouping by day is one plain column on every database.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

client_keys = Table(
    "client_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    #: SHA-256 of the key, hex (the key itself is never stored).
    Column("digest", String(64), nullable=False, unique=True),
    Column("user", String(200)),
    #: The models the key may use, comma-separated (empty: all).
    Column("models", Text, nullable=False, default=""),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("max_streams", Integer),
    Column("budget", Float),
    Column("period", String(8), nullable=False, default="month"),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("rotated_at", DateTime),
)

usage = Table(
    "usage",
    metadata,
    #: The row's own id (a request id may come from the client, so is not unique).
    Column("id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("key_id", String(64)),
    Column("key_name", String(200)),
    Column("user", String(200)),
    Column("endpoint", String(200), nullable=False),
    Column("model", String(200)),
    Column("deployment", String(200)),
    #: pending, ok, error, client_closed, cancelled, interrupted
    Column("status", String(16), nullable=False),
    Column("http_status", Integer),
    Column("error", String(64)),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cache_read_tokens", Integer, nullable=False, default=0),
    Column("cache_write_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("estimated", Boolean, nullable=False, default=False),
    Column("cost", Float, nullable=False, default=0.0),
    Column("ttfb_ms", Float),
    Column("duration_ms", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("stream_id", String(64)),
    Column("day", String(10), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Column("instance_id", String(64), nullable=False),
    Index("ix_usage_day", "day"),
    Index("ix_usage_started_at", "started_at"),
    Index("ix_usage_pending", "status", "instance_id"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
)
