"""plug sessions: no two overlapping plug-ins of one vehicle, no cancelling a settled one, in the database

The API used to check for an overlap and then insert; two concurrent requests could both pass the check
and both be stored. Now the database refuses the second one whatever the caller does:

- SQLite: ``BEFORE INSERT``/``BEFORE UPDATE`` triggers that abort when the new row overlaps a stored
  plug-in of the same vehicle. SQLite runs one writer at a time and a write transaction always sees the
  last committed state, so the check and the insert cannot interleave with another writer's.
- PostgreSQL: an exclusion constraint ``EXCLUDE USING gist (vehicle_id WITH =, tstzrange(arrival,
  departure) WITH &&)`` (``btree_gist``, a trusted extension since PostgreSQL 13), which holds under
  every isolation level.

Intervals are half-open, ``[arrival, departure)``: a plug-in may start when the previous one ends.
A trigger on each backend also refuses deleting a plug-in whose energy is in a settlement period.

Existing overlaps (stored before this revision) make the upgrade stop with the pairs named: cancel one
of each pair and upgrade again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from backend.db.session import InvalidDatabaseUrlError

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OVERLAP = "OverlappingSessionsError: plug_sessions_no_overlap"
SETTLED = "SessionSettledError: plug_sessions_settled"

SQLITE_UPGRADE = [
    f"""
    CREATE TRIGGER plug_sessions_no_overlap_insert
    BEFORE INSERT ON plug_sessions
    FOR EACH ROW WHEN EXISTS (
        SELECT 1 FROM plug_sessions s
        WHERE s.vehicle_id = NEW.vehicle_id AND s.arrival < NEW.departure AND s.departure > NEW.arrival
    )
    BEGIN SELECT RAISE(ABORT, '{OVERLAP}'); END
    """,
    f"""
    CREATE TRIGGER plug_sessions_no_overlap_update
    BEFORE UPDATE OF vehicle_id, arrival, departure ON plug_sessions
    FOR EACH ROW WHEN EXISTS (
        SELECT 1 FROM plug_sessions s
        WHERE s.id != OLD.id AND s.vehicle_id = NEW.vehicle_id
          AND s.arrival < NEW.departure AND s.departure > NEW.arrival
    )
    BEGIN SELECT RAISE(ABORT, '{OVERLAP}'); END
    """,
    f"""
    CREATE TRIGGER plug_sessions_settled_delete
    BEFORE DELETE ON plug_sessions
    FOR EACH ROW WHEN EXISTS (SELECT 1 FROM settled_trades t WHERE t.session_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, '{SETTLED}'); END
    """,
]
SQLITE_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS plug_sessions_settled_delete",
    "DROP TRIGGER IF EXISTS plug_sessions_no_overlap_update",
    "DROP TRIGGER IF EXISTS plug_sessions_no_overlap_insert",
]

POSTGRESQL_UPGRADE = [
    "CREATE EXTENSION IF NOT EXISTS btree_gist",
    """
    ALTER TABLE plug_sessions ADD CONSTRAINT plug_sessions_no_overlap
    EXCLUDE USING gist (vehicle_id WITH =, tstzrange(arrival, departure, '[)') WITH &&)
    """,
    f"""
    CREATE FUNCTION plug_sessions_refuse_settled_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM settled_trades t WHERE t.session_id = OLD.id) THEN
            RAISE EXCEPTION '{SETTLED} (session %)', OLD.id USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END
    $$
    """,
    """
    CREATE TRIGGER plug_sessions_settled_delete BEFORE DELETE ON plug_sessions
    FOR EACH ROW EXECUTE FUNCTION plug_sessions_refuse_settled_delete()
    """,
]
POSTGRESQL_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS plug_sessions_settled_delete ON plug_sessions",
    "DROP FUNCTION IF EXISTS plug_sessions_refuse_settled_delete()",
    "ALTER TABLE plug_sessions DROP CONSTRAINT IF EXISTS plug_sessions_no_overlap",
]


def _refuse_existing_overlaps() -> None:
    pairs = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT a.vehicle_id, a.id, b.id FROM plug_sessions a JOIN plug_sessions b"
                " ON a.vehicle_id = b.vehicle_id AND a.id < b.id"
                " AND a.arrival < b.departure AND b.arrival < a.departure"
                " ORDER BY a.vehicle_id, a.id, b.id LIMIT 20"
            )
        )
        .all()
    )
    if pairs:
        listed = "; ".join(f"vehicle {v}: {a} and {b}" for v, a, b in pairs)
        raise RuntimeError(
            f"OverlappingSessionsError: plug_sessions holds overlapping plug-ins ({listed}); "
            "delete one of each pair (DELETE FROM plug_sessions WHERE id = '...') and upgrade again"
        )


def _statements(upgrade: bool) -> list[str]:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return SQLITE_UPGRADE if upgrade else SQLITE_DOWNGRADE
    if dialect == "postgresql":
        return POSTGRESQL_UPGRADE if upgrade else POSTGRESQL_DOWNGRADE
    raise InvalidDatabaseUrlError(
        f"{dialect} is not supported (SQLite or PostgreSQL): no plug-in overlap guard"
    )


def upgrade() -> None:
    _refuse_existing_overlaps()
    for statement in _statements(upgrade=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(upgrade=False):
        op.execute(statement)
