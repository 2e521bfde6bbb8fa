"""raw frames and the metering service's record are append-only in the database

``raw_frames`` (what the stations sent) and ``meter_signatures`` (what the metering service signed) take
inserts only: an UPDATE or DELETE is refused by the database (``AppendOnlyError``), whoever the caller.
Someone who can change the schema can drop the guard; then the hash chains still name the edited frame
(``FrameChainError``), and the metering service's record and the roots on chain still hold the history
it signed. The guard makes an edit a deliberate act of a schema owner, not an UPDATE by any user with
write access.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:30:00
"""

from __future__ import annotations

from alembic import op

from backend.db.guards import UnsupportedDatabaseError, append_only_statements
from backend.db.session import InvalidDatabaseUrlError

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _statements(upgrade: bool) -> list[str]:
    dialect = op.get_bind().dialect.name
    try:
        return append_only_statements(dialect, install=upgrade)
    except UnsupportedDatabaseError as exc:
        raise InvalidDatabaseUrlError(str(exc)) from None


def upgrade() -> None:
    for statement in _statements(upgrade=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(upgrade=False):
        op.execute(statement)
