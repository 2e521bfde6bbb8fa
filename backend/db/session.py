"""Engines and sessions; the schema is created and upgraded by Alembic migrations only.

A database URL from a person (the command line, the environment) is checked before any work with
:func:`check_url` and :func:`probe`; their errors name the URL (password hidden) and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


#: The databases the migrations support (each has its own plug-in overlap guard, migration 0004).
SUPPORTED_DIALECTS = ("sqlite", "postgresql")

K = TypeVar("K")


def bound_chunks(ids: Sequence[K], size: int = 5000) -> list[Sequence[K]]:
    """``ids`` in pieces one ``IN (...)`` can bind on every supported database (SQLite allows 32,766
    parameters, PostgreSQL 65,535)."""
    return [ids[k : k + size] for k in range(0, len(ids), size)]


class DatabaseError(Exception):
    """A database URL that cannot be used; the message starts with the URL (password hidden)."""


class InvalidDatabaseUrlError(DatabaseError):
    """Not a SQLAlchemy URL, an unknown dialect, a missing driver, or a SQLite path that cannot be a file."""


class DatabaseNotFoundError(DatabaseError):
    """A SQLite database that must already exist (to be read) does not."""


class DatabaseUnreachableError(DatabaseError):
    """The database does not accept a connection (server down, file not openable, bad credentials)."""


def shown_url(url: str | URL) -> str:
    """``url`` as it may be shown to a person: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url)


def _sqlite_file(parsed: URL) -> Path | None:
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def check_url(url: str, *, must_exist: bool = False) -> URL:
    """Parse ``url`` without connecting: a SQLAlchemy URL of a known dialect; for SQLite a file path
    whose directory exists (and, with ``must_exist``, the file itself)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise InvalidDatabaseUrlError(
            f"{url}: not a database URL (e.g. sqlite:///v2g.sqlite or postgresql://user@host/db)"
        ) from exc
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect()
    except NoSuchModuleError as exc:
        raise InvalidDatabaseUrlError(f"{shown}: unknown database dialect {parsed.drivername!r}") from exc
    except ImportError as exc:
        raise InvalidDatabaseUrlError(f"{shown}: database driver not installed ({exc})") from exc
    if parsed.get_backend_name() not in SUPPORTED_DIALECTS:
        raise InvalidDatabaseUrlError(
            f"{shown}: {parsed.get_backend_name()} is not supported (SQLite or PostgreSQL: the migrations "
            "guard plug-in overlaps on those two)"
        )
    path = _sqlite_file(parsed)
    if path is not None:
        if path.is_dir():
            raise InvalidDatabaseUrlError(f"{shown}: {path} is a directory")
        if not path.parent.is_dir():
            raise DatabaseNotFoundError(f"{shown}: directory {path.parent} does not exist")
        if must_exist and not path.exists():
            raise DatabaseNotFoundError(f"{shown}: no database file {path}")
    return parsed


def probe(url: str) -> None:
    """Open one connection to ``url`` (SQLite: creates the file) or raise a named error."""
    shown = shown_url(url)
    try:
        engine = make_engine(url)
    except ImportError as exc:
        raise InvalidDatabaseUrlError(f"{shown}: database driver not installed ({exc})") from exc
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "connection failed"
        raise DatabaseUnreachableError(f"{shown}: {reason}") from exc
    finally:
        engine.dispose()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


#: How long a SQLite connection waits for another process's write lock before "database is locked"
#: (the CSMS, the metering service and a settlement write to one file at once).
SQLITE_BUSY_TIMEOUT_S = 30.0


def make_engine(url: str) -> Engine:
    sqlite = url.startswith("sqlite")
    engine = create_engine(
        url, future=True, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S} if sqlite else {}
    )
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    return engine


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the latest schema."""
    command.upgrade(alembic_config(url), "head")


def session_factory(url: str, *, upgrade: bool = True) -> sessionmaker[Session]:
    """A session factory on an up-to-date database."""
    if upgrade:
        migrate(url)
    return sessionmaker(make_engine(url), expire_on_commit=False)
