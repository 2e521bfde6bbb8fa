"""deployments: the chain's identity and the full record, checked whenever the database is opened

A database settles on one chain. To find out, when a command or the server opens it, that the chain it is
connected to is that chain (and not another one with the same id, a reset one, or one that lost blocks),
the deployment keeps the genesis hash, the deploy block's hash and the settlement contract's code hash,
and the full deployment record (role accounts, liveness). Rows stored before this revision get them on
their next successful open.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("genesis_hash", sa.String(length=66), nullable=True))
        batch_op.add_column(sa.Column("block_hash", sa.String(length=66), nullable=True))
        batch_op.add_column(sa.Column("code_hash", sa.String(length=66), nullable=True))
        batch_op.add_column(sa.Column("record", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("record")
        batch_op.drop_column("code_hash")
        batch_op.drop_column("block_hash")
        batch_op.drop_column("genesis_hash")
