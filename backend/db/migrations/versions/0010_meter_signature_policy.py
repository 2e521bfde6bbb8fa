"""the metering service records the policy it signed each period under (clock tolerance, power tolerance,
register slack, grid-to-battery efficiency, fee), so that an audit replays a day as the meter did without
being told the tolerance

A plain ADD COLUMN (no table copy), so the append-only triggers of migration 0009 stay on the table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 00:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("meter_signatures", sa.Column("policy", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("meter_signatures", "policy")
