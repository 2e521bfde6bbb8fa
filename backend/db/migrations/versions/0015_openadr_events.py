"""demand-response events received over OpenADR 2.0b: what the VTN asked, the answer given and why

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 08:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "openadr_events",
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("vtn_id", sa.String(128), nullable=False),
        sa.Column("modification_number", sa.Integer(), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("asked", sa.JSON(), nullable=False),
        sa.Column("opt", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("dr_event_ids", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("openadr_events")
