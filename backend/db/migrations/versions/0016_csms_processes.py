"""several CSMS processes on one database: which holds each station, the calls handed to them, and the
NoCredit answer kept with its transaction

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ocpp_transactions") as batch:
        batch.add_column(sa.Column("credit_refused", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "csms_links",
        sa.Column("station_id", sa.String(64), primary_key=True),
        sa.Column("worker", sa.Integer(), nullable=False, index=True),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "csms_commands",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("station_id", sa.String(64), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("status", sa.String(24), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("csms_commands")
    op.drop_table("csms_links")
    with op.batch_alter_table("ocpp_transactions") as batch:
        batch.drop_column("credit_refused")
