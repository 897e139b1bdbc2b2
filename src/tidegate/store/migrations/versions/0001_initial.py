"""Managed client keys, the usage ledger, instances.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the three tables."""
    op.create_table(
        "client_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("user", sa.String(200)),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("max_streams", sa.Integer),
        sa.Column("budget", sa.Float),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("rotated_at", sa.DateTime),
    )
    op.create_table(
        "usage",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("key_name", sa.String(200)),
        sa.Column("user", sa.String(200)),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("deployment", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.String(64)),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cache_read_tokens", sa.Integer, nullable=False),
        sa.Column("cache_write_tokens", sa.Integer, nullable=False),
        sa.Column("reasoning_tokens", sa.Integer, nullable=False),
        sa.Column("estimated", sa.Boolean, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("ttfb_ms", sa.Float),
        sa.Column("duration_ms", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("stream_id", sa.String(64)),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("instance_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_usage_day", "usage", ["day"])
    op.create_index("ix_usage_started_at", "usage", ["started_at"])
    op.create_index("ix_usage_pending", "usage", ["status", "instance_id"])
    op.create_table(
        "instances",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("instances")
    op.drop_index("ix_usage_pending", "usage")
    op.drop_index("ix_usage_started_at", "usage")
    op.drop_index("ix_usage_day", "usage")
    op.drop_table("usage")
    op.drop_table("client_keys")
