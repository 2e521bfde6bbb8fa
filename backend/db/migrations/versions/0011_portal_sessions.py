"""portal sign-ins kept server-side, so that signing out (or the key's deletion) ends a session at once
instead of when its signed cookie expires

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.Integer(), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_portal_sessions_key_id", "portal_sessions", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_portal_sessions_key_id", table_name="portal_sessions")
    op.drop_table("portal_sessions")
