"""period_entries: indexes for an owner's entry in a period and for a period's unclaimed entries

At a million entries per period two reads scanned the period:
- an owner's entry in a period (``period_id = ? AND owner_id = ? ORDER BY entry_id``: the API's and the
  portal's entry list for an owner key) went through the primary key, the whole period, because the
  owner index could not give the order; ``(owner_id, period_id, entry_id)`` gives both the lookup and the
  order, and also serves the statement's ``owner_id = ? ORDER BY period_id``, so it replaces the
  ``owner_id`` index;
- the settlement job's next claim batch (``period_id = ? AND claimed = false ORDER BY entry_id``) walked
  past every claimed entry from the first one, once per batch; ``(period_id, claimed, entry_id)`` starts
  at the first unclaimed entry.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 17:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("period_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_period_entries_owner_period", ["owner_id", "period_id", "entry_id"], unique=False
        )
        batch_op.create_index(
            "ix_period_entries_period_claimed", ["period_id", "claimed", "entry_id"], unique=False
        )
        batch_op.drop_index("ix_period_entries_owner_id")


def downgrade() -> None:
    with op.batch_alter_table("period_entries", schema=None) as batch_op:
        batch_op.create_index("ix_period_entries_owner_id", ["owner_id"], unique=False)
        batch_op.drop_index("ix_period_entries_period_claimed")
        batch_op.drop_index("ix_period_entries_owner_period")
