"""drop periods.meter_nonce: the period id is the meter signature's nonce

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.db.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("periods", schema=None) as batch_op:
        batch_op.drop_column("meter_nonce")


def downgrade() -> None:
    with op.batch_alter_table("periods", schema=None) as batch_op:
        batch_op.add_column(sa.Column("meter_nonce", backend.db.models.BigInt(length=80), nullable=True))
    op.execute("UPDATE periods SET meter_nonce = id")
