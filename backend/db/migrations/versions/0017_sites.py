"""sites: grid connections with their own limits, the station behind each, and the site a DR event limits

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("import_limit_kw", sa.Float(), nullable=False),
        sa.Column("export_limit_kw", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("stations") as batch:
        batch.add_column(sa.Column("site_id", sa.String(64), nullable=True))
        batch.create_index("ix_stations_site_id", ["site_id"])
        batch.create_foreign_key("fk_stations_site_id_sites", "sites", ["site_id"], ["id"])
    with op.batch_alter_table("dr_events") as batch:
        batch.add_column(sa.Column("site_id", sa.String(64), nullable=True))
        batch.create_index("ix_dr_events_site_id", ["site_id"])


def downgrade() -> None:
    with op.batch_alter_table("dr_events") as batch:
        batch.drop_index("ix_dr_events_site_id")
        batch.drop_column("site_id")
    with op.batch_alter_table("stations") as batch:
        batch.drop_constraint("fk_stations_site_id_sites", type_="foreignkey")
        batch.drop_index("ix_stations_site_id")
        batch.drop_column("site_id")
    op.drop_table("sites")
