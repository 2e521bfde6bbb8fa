"""The database's append-only guard on the tables that keep the money path's evidence: ``raw_frames``
(what the stations sent) and ``meter_signatures`` (what the metering service signed) take inserts only.
Installed by migration 0009; lifted only by someone who can change the schema (an attacker, or a drill
that plays one)."""

from __future__ import annotations

APPEND_ONLY_TABLES = ("raw_frames", "meter_signatures")


class UnsupportedDatabaseError(ValueError):
    pass


def append_only_statements(dialect: str, install: bool) -> list[str]:
    """The DDL that installs (``install``) or lifts the guard on ``dialect`` (sqlite, postgresql)."""
    if dialect == "sqlite":
        out = []
        for table in APPEND_ONLY_TABLES:
            for action in ("UPDATE", "DELETE"):
                name = f"{table}_append_only_{action.lower()}"
                out.append(
                    f"CREATE TRIGGER {name} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'AppendOnlyError: {table} takes inserts only'); END"
                    if install
                    else f"DROP TRIGGER IF EXISTS {name}"
                )
        return out
    if dialect == "postgresql":
        if not install:
            return [f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}" for t in APPEND_ONLY_TABLES] + [
                "DROP FUNCTION IF EXISTS refuse_change_of_append_only()"
            ]
        return [
            """
            CREATE FUNCTION refuse_change_of_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'AppendOnlyError: % takes inserts only', TG_TABLE_NAME
                    USING ERRCODE = 'integrity_constraint_violation';
            END
            $$
            """,
            *(
                f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_change_of_append_only()"
                for t in APPEND_ONLY_TABLES
            ),
        ]
    raise UnsupportedDatabaseError(f"{dialect} is not supported (SQLite or PostgreSQL)")
