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
import os
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
from backend.chain.client import Chain
from backend.chain.embedded import ChainBusyError
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
    #: where the local chain's state lived (a restore puts it back there unless V2G_DATA_DIR says else)
    data_dir: str = ""


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


def _pg(tool: str, arguments: list[str], database_url: str) -> None:
    """Run pg_dump or pg_restore on the database of ``database_url`` (its password in the environment,
    never on the command line); a failure is :class:`BackupError` with the tool's own words."""
    url = make_url(database_url)
    environment = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    target = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    try:
        subprocess.run(
            [_tool(tool), *arguments, f"--dbname={target}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
            env=environment,
        )
    except subprocess.CalledProcessError as exc:
        raise BackupError(f"{tool} failed: {(exc.stderr or '').strip()[:300]}") from None


def _sqlite_files(path: Path) -> list[Path]:
    """A SQLite database's file and its companions (never a neighbour that only shares its prefix)."""
    return [
        p
        for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal")))
        if p.exists()
    ]


def backup(settings: Settings, target: Path, *, database_url: str | None = None) -> Manifest:
    """Write a backup of the database and its chain to ``target`` (a new or empty directory)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target}: not a new or empty directory (a backup never overwrites another)")
    url = database_url or settings.database_url
    platform = open_platform(settings, database_url=url, write=False, strict=False)
    try:
        chain = platform.chain
        spec = platform.located.get("spec", "")
        kind = spec if spec in ("eth-tester", "anvil") else "external"  # a node by URL is not ours
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
            _pg("pg_dump", ["--format=custom", "--file", str(target / "database.dump")], url)
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
    manifest = Manifest(
        datetime.now(UTC).isoformat(), database, kind, chain_id, head, periods, str(located.resolve())
    )
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
    explicit = "data_dir" in settings.model_fields_set
    data_dir = Path(settings.data_dir) if explicit or not manifest.data_dir else Path(manifest.data_dir)
    sqlite = _sqlite_path(url)
    if (manifest.database == "sqlite") != (sqlite is not None):
        raise BackupError(f"the backup holds a {manifest.database} database; {url} is not one")
    wanted = [source / ("database.sqlite" if sqlite is not None else "database.dump")]
    wanted += {
        "eth-tester": [source / "chain" / "eth-tester.sqlite"],
        "anvil": [source / "chain" / "anvil-state.json"],
    }.get(manifest.chain, [])
    missing = [str(p) for p in wanted if not p.is_file()]
    if missing:
        raise BackupError(f"{source}: incomplete backup, missing {', '.join(missing)}: nothing restored")
    # nothing may hold what is replaced: the managed anvil, or the embedded chain's writer (a server)
    if manifest.chain == "anvil" and AnvilNode(data_dir).info() is not None:
        raise BackupError("the managed anvil is running: stop it first (v2g chain stop)")
    embedded = data_dir / EMBEDDED_FILE
    if manifest.chain == "eth-tester" and embedded.exists():
        try:
            Chain.eth_tester(embedded).close()
        except ChainBusyError:
            raise BackupError(
                f"{embedded} is held by a running service (v2g serve or operate): stop it first"
            ) from None
    # the chain first, then the database: a restore killed half-way leaves a chain ahead of its
    # database, which the next settle brings forward, never the other way round
    if manifest.chain == "eth-tester":
        for stale in _sqlite_files(embedded):
            stale.unlink()
        _sqlite_copy(source / "chain" / "eth-tester.sqlite", embedded)
    elif manifest.chain == "anvil":
        state_dir = data_dir / ANVIL_DIR
        state_dir.mkdir(parents=True, exist_ok=True)
        for stale in state_dir.glob("state*.json"):
            stale.unlink()
        shutil.copyfile(source / "chain" / "anvil-state.json", state_dir / "state.json")
    if sqlite is not None:
        for stale in _sqlite_files(sqlite):
            stale.unlink()
        _sqlite_copy(source / "database.sqlite", sqlite)
    else:
        _pg("pg_restore", ["--clean", "--if-exists", "--no-owner", str(source / "database.dump")], url)
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
