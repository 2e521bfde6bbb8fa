"""The metering service's own PostgreSQL role: it reads the field data and the registry, and writes only
its own record of what it signed. A settler, a CSMS or an API that shares the database cannot act as the
meter by connecting as it (they do not hold its password), and the meter cannot change what it reads.

SQLite has no roles: there the meter's independence rests on the raw frames' hash chains, the append-only
guard and its own record (see ``docs/security.md``)."""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Connection

#: What the metering service reads (its period build, its record, the deployment it signs for).
METER_READS = (
    "raw_frames",
    "stations",
    "id_tokens",
    "vehicles",
    "owners",
    "prices",
    "deployments",
    "meter_signatures",
)
#: What it writes: its own record, insert only (the append-only guard refuses the rest to everyone).
METER_WRITES = ("meter_signatures",)


class RoleError(ValueError):
    """A role that cannot be made (not PostgreSQL, a name that is not an identifier)."""


def grant_meter_role(connection: Connection, role: str, password: str) -> None:
    """Create (or reset) ``role`` with exactly the metering service's rights on the current database."""
    if connection.dialect.name != "postgresql":
        raise RoleError(
            f"{connection.dialect.name} has no roles: the metering service's own role needs PostgreSQL"
        )
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise RoleError(f"role {role!r}: lower-case letters, digits and _ (a PostgreSQL identifier)")
    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    verb = "ALTER" if exists else "CREATE"
    # a password cannot be a bind parameter in DDL: quoted as a literal by the server's own rules
    quoted = connection.execute(text("SELECT quote_literal(:p)"), {"p": password}).scalar_one()
    connection.execute(text(f"{verb} ROLE {role} LOGIN PASSWORD {quoted}"))
    database = connection.execute(text("SELECT current_database()")).scalar_one()
    connection.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO {role}'))
    connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
    connection.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"))
    connection.execute(text(f"GRANT SELECT ON {', '.join(METER_READS)} TO {role}"))
    connection.execute(text(f"GRANT INSERT ON {', '.join(METER_WRITES)} TO {role}"))
    for table in METER_WRITES:
        connection.execute(text(f"GRANT USAGE ON SEQUENCE {table}_id_seq TO {role}"))
