"""live operations: stations, idTokens, OCPP transactions, meter readings as received, field rejections,
charging profiles sent

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.db.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    utc = backend.db.models.UtcDateTime(timezone=True)
    op.create_table(
        "stations",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("ocpp_version", sa.String(length=8), nullable=False),
        sa.Column("can_discharge", sa.Boolean(), nullable=False),
        sa.Column("evses", sa.Integer(), nullable=False),
        sa.Column("periods_per_schedule", sa.Integer(), nullable=False),
        sa.Column("meter_public_key", sa.String(length=130), nullable=True),
        sa.Column("boots", sa.Integer(), nullable=False),
        sa.Column("last_seen", utc, nullable=True),
    )
    op.create_table(
        "id_tokens",
        sa.Column("token", sa.String(length=64), primary_key=True),
        sa.Column(
            "vehicle_id", sa.String(length=64), sa.ForeignKey("vehicles.id"), nullable=False, index=True
        ),
    )
    op.create_table(
        "ocpp_transactions",
        sa.Column("station_id", sa.String(length=64), sa.ForeignKey("stations.id"), primary_key=True),
        sa.Column("transaction_id", sa.String(length=64), primary_key=True),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column(
            "vehicle_id", sa.String(length=64), sa.ForeignKey("vehicles.id"), nullable=True, index=True
        ),
        sa.Column("plug_session_id", sa.String(length=96), nullable=True),
        sa.Column("started_at", utc, nullable=False),
        sa.Column("ended_at", utc, nullable=True),
        sa.Column("stopped_reason", sa.String(length=32), nullable=True),
        sa.Column("last_seq_no", sa.Integer(), nullable=False),
        sa.Column("last_measured_at", utc, nullable=True),
        sa.Column("last_import_wh", sa.BigInteger(), nullable=False),
        sa.Column("last_export_wh", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "meter_readings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("seq_no", sa.Integer(), nullable=False),
        sa.Column("sample", sa.Integer(), nullable=False),
        sa.Column("measured_at", utc, nullable=False, index=True),
        sa.Column("received_at", utc, nullable=False),
        sa.Column("import_wh", sa.BigInteger(), nullable=False),
        sa.Column("export_wh", sa.BigInteger(), nullable=False),
        sa.Column("soc", sa.Double(), nullable=True),
        sa.Column("signed", sa.JSON(), nullable=True),
        sa.UniqueConstraint("station_id", "transaction_id", "seq_no", "sample"),
    )
    op.create_index(
        "ix_meter_readings_transaction_time",
        "meter_readings",
        ["station_id", "transaction_id", "measured_at"],
    )
    op.create_table(
        "field_rejections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(length=64), nullable=True, index=True),
        sa.Column("kind", sa.String(length=48), nullable=False, index=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("raw", sa.String(length=2000), nullable=True),
        sa.Column("at", utc, nullable=False),
    )
    op.create_table(
        "charging_profiles",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(length=64), nullable=False, index=True),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("sent_at", utc, nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "charging_profiles",
        "field_rejections",
        "meter_readings",
        "ocpp_transactions",
        "id_tokens",
        "stations",
    ):
        op.drop_table(table)
