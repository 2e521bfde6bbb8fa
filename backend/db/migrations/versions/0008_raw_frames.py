"""metering integrity: raw frames (append-only, hash-chained per station), the metering service's record
of what it signed, the frame heads a metered period was computed at, stations' rated power and hashed
passwords (OCPP security profiles 1 and 2)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.db.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    utc = backend.db.models.UtcDateTime(timezone=True)
    op.create_table(
        "raw_frames",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_at", utc, nullable=False),
        sa.Column("frame", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.UniqueConstraint("station_id", "seq"),
    )
    op.create_index("ix_raw_frames_received", "raw_frames", ["received_at"])
    op.create_table(
        "meter_signatures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("period_id", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("contract", sa.String(length=42), nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("frame_heads", sa.JSON(), nullable=False),
        sa.Column("signature", sa.String(length=132), nullable=False),
        sa.Column("signed_at", utc, nullable=False),
    )
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_power_kw", sa.Float(), nullable=False, server_default="22.0"))
        batch_op.add_column(sa.Column("evse_max_kw", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("password_hash", sa.String(length=256), nullable=True))
    with op.batch_alter_table("periods", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frame_heads", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("periods", schema=None) as batch_op:
        batch_op.drop_column("frame_heads")
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.drop_column("password_hash")
        batch_op.drop_column("evse_max_kw")
        batch_op.drop_column("max_power_kw")
    op.drop_table("meter_signatures")
    op.drop_index("ix_raw_frames_received", table_name="raw_frames")
    op.drop_table("raw_frames")
