"""what a car says over ISO 15118 through its station (NotifyEVChargingNeeds, NotifyEVChargingSchedule):
its departure, energy and power limits, for the planner

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 05:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ev_charging_needs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("departure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("energy_wh", sa.BigInteger(), nullable=True),
        sa.Column("import_wh_at", sa.BigInteger(), nullable=True),
        sa.Column("soc", sa.Float(), nullable=True),
        sa.Column("capacity_wh", sa.BigInteger(), nullable=True),
        sa.Column("max_charge_w", sa.Float(), nullable=True),
        sa.Column("max_discharge_w", sa.Float(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
    )
    op.create_index("ix_ev_charging_needs_tx", "ev_charging_needs", ["station_id", "transaction_id", "kind"])


def downgrade() -> None:
    op.drop_index("ix_ev_charging_needs_tx", table_name="ev_charging_needs")
    op.drop_table("ev_charging_needs")
