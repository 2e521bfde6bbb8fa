"""`v2g backup DIR` and `v2g restore DIR`: the database and the chain, together, while the service runs.

The database is copied first, the chain second, so a backup's chain is never behind its database: on
restore, what the chain holds beyond the database (a period proposed, finalised or claimed meanwhile) is
taken from the chain (:meth:`SettlementJob.align`), never sent again. SQLite files (the database and the
embedded chain) are copied through SQLite's online backup (a consistent snapshot beside a writer);
PostgreSQL through ``pg_dump``/``pg_restore``; a managed anvil's state through ``anvil_dumpState`` (or
its state file when it is not running). A chain reached by URL is not ours to back up: the manifest says
so, and a restore checks the database against it.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from backend.app.settle import SettlePolicy, job_of, open_platform
from backend.audit.statements import ReconciliationReport
from backend.chain.client import best_anvil_state
from backend.chain.node import ANVIL_DIR, EMBEDDED_FILE, AnvilNode
from backend.config import Settings
from backend.db.models import Period
from backend.platform import PlatformError

MANIFEST = "backup.json"


class BackupError(PlatformError):
    """A backup or restore that cannot be made as asked (named, nothing half-written)."""


@dataclass(frozen=True)
class Manifest:
    created_at: str
    database: str  # sqlite | postgresql
    chain: str  # eth-tester | anvil | external
    chain_id: int
    chain_head: int
    periods: int


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy of ``source`` even while another process writes it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _sqlite_path(database_url: str) -> Path | None:
    url = make_url(database_url)
    return Path(str(url.database)) if url.get_backend_name() == "sqlite" and url.database else None


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: PostgreSQL databases are backed up with {name}")
    return found


def _libpq(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def backup(settings: Settings, target: Path, *, database_url: str | None = None) -> Manifest:
    """Write a backup of the database and its chain to ``target`` (a new or empty directory)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target}: not a new or empty directory (a backup never overwrites another)")
    url = database_url or settings.database_url
    platform = open_platform(settings, database_url=url, write=False, strict=False)
    try:
        chain = platform.chain
        kind = chain.kind if chain.kind in ("eth-tester", "anvil") else "external"
        located = Path(platform.located.get("data_dir", settings.data_dir))
        with platform.sessions() as session:
            periods = len(list(session.scalars(select(Period.id))))
        target.mkdir(parents=True, exist_ok=True)
        # the database first: the chain copied after it is never behind it
        sqlite = _sqlite_path(url)
        if sqlite is not None:
            _sqlite_copy(sqlite, target / "database.sqlite")
            database = "sqlite"
        else:
            subprocess.run(
                [_tool("pg_dump"), "--format=custom", "--file", str(target / "database.dump"), _libpq(url)],
                check=True,
                capture_output=True,
                timeout=600,
            )
            database = "postgresql"
        with chain.lock:
            head = int(chain.w3.eth.block_number)
            chain_id = int(chain.w3.eth.chain_id)
            if kind == "eth-tester":
                _sqlite_copy(located / EMBEDDED_FILE, target / "chain" / "eth-tester.sqlite")
            elif kind == "anvil":
                state = target / "chain" / "anvil-state.json"
                state.parent.mkdir(parents=True, exist_ok=True)
                dumped = chain.w3.provider.make_request("anvil_dumpState", [])  # type: ignore[arg-type]
                state.write_bytes(gzip.decompress(bytes.fromhex(str(dumped["result"])[2:])))
    finally:
        platform.close()
    manifest = Manifest(datetime.now(UTC).isoformat(), database, kind, chain_id, head, periods)
    (target / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2))
    return manifest


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    taken_from_chain: list[int]
    reconciliation: ReconciliationReport


def restore(settings: Settings, source: Path, *, database_url: str | None = None) -> Restored:
    """Put a backup back: the database and the chain, then every period brought to where the restored
    chain has it, then a reconciliation. The service must be stopped (the embedded chain's writer, or the
    managed anvil, would hold what is being replaced)."""
    try:
        manifest = Manifest(**json.loads((source / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise BackupError(f"{source}: not a backup ({MANIFEST}: {exc})") from None
    url = database_url or settings.database_url
    data_dir = Path(settings.data_dir)
    if manifest.chain == "anvil" and AnvilNode(data_dir).info() is not None:
        raise BackupError("the managed anvil is running: stop it first (v2g chain stop)")
    sqlite = _sqlite_path(url)
    if (manifest.database == "sqlite") != (sqlite is not None):
        raise BackupError(f"the backup holds a {manifest.database} database; {url} is not one")
    # the chain first, then the database: a restore killed half-way leaves a chain ahead of its
    # database, which the next settle brings forward, never the other way round
    if manifest.chain == "eth-tester":
        embedded = data_dir / EMBEDDED_FILE
        for stale in embedded.parent.glob(f"{embedded.name}*"):
            stale.unlink()
        _sqlite_copy(source / "chain" / "eth-tester.sqlite", embedded)
    elif manifest.chain == "anvil":
        state_dir = data_dir / ANVIL_DIR
        state_dir.mkdir(parents=True, exist_ok=True)
        for stale in state_dir.glob("state*.json"):
            stale.unlink()
        shutil.copyfile(source / "chain" / "anvil-state.json", state_dir / "state.json")
        best_anvil_state(state_dir / "state.json")
    if sqlite is not None:
        for stale in sqlite.parent.glob(f"{sqlite.name}*"):
            stale.unlink()
        _sqlite_copy(source / "database.sqlite", sqlite)
    else:
        subprocess.run(
            [
                _tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "-d",
                _libpq(url),
                str(source / "database.dump"),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    platform = open_platform(settings, database_url=url, write=True, strict=True)
    try:
        policy = SettlePolicy.from_settings(settings)
        job = job_of(platform, platform.actors(("settler",)), policy)
        with platform.chain.lock, platform.sessions() as session:
            periods = list(session.scalars(select(Period.id).order_by(Period.id)))
        taken = [p for p in periods if job.align(p)]
        report = platform.reconcile()
    finally:
        platform.close()
    return Restored(manifest, taken, report)
