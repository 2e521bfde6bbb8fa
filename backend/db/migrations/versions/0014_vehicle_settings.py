"""owners' settings per vehicle (usual and next departure, target and minimum state of charge, V2G
opt-in), honoured by the re-plan

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 05:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vehicle_settings",
        sa.Column(
            "vehicle_id", sa.String(64), sa.ForeignKey("vehicles.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("usual_departure", sa.String(5), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("next_departure", sa.DateTime(timezone=True), nullable=True),
        sa.Column("target_soc", sa.Float(), nullable=True),
        sa.Column("min_soc", sa.Float(), nullable=True),
        sa.Column("v2g", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vehicle_settings")
