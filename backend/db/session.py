"""Engines and sessions; the schema is created and upgraded by Alembic migrations only."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def make_engine(url: str) -> Engine:
    engine = create_engine(url, future=True)
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
