"""`v2g backup DIR` and `v2g restore DIR`: the database and its chain, together (backend/app/backup.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backend.cli.common import _probe_database, _settings
from backend.cli.options import DbOpt, ExistingDbOpt
from backend.cli.output import console
from backend.cli.root import app


@app.command("backup")
def backup_command(
    db: ExistingDbOpt,
    target: Annotated[Path, typer.Argument(metavar="DIR", help="A new or empty directory for the backup.")],
) -> None:
    """Back up the database, then its chain (the embedded chain's file, or the managed anvil's state),
    consistently, while the service runs."""
    from backend.app.backup import backup

    _probe_database(db)
    manifest = backup(_settings(), target, database_url=db)
    console.print(
        f"backed up to {target}: {manifest.database} database ({manifest.periods} period(s)), "
        f"{manifest.chain} chain id {manifest.chain_id} at block {manifest.chain_head}"
        + (" (a chain reached by URL is not backed up here)" if manifest.chain == "external" else ""),
        soft_wrap=True,
    )


@app.command("restore")
def restore_command(
    db: DbOpt,
    source: Annotated[Path, typer.Argument(metavar="DIR", help="A directory `v2g backup` wrote.")],
) -> None:
    """Put a backup back (with the service stopped): the chain, the database, then every period brought
    to where the restored chain has it, and a reconciliation. Exits 1 unless it is OK."""
    from backend.app.backup import restore

    restored = restore(_settings(), source, database_url=db)
    m = restored.manifest
    console.print(
        f"restored {m.database} database and {m.chain} chain (id {m.chain_id}, block {m.chain_head}) of "
        f"{m.created_at}; period(s) taken from the chain: "
        f"{', '.join(map(str, restored.taken_from_chain)) or 'none'}",
        soft_wrap=True,
    )
    for mismatch in restored.reconciliation.mismatches[:20]:
        console.print(f"[red]{mismatch.kind}[/] period {mismatch.period_id}: {mismatch.detail}")
    console.print("reconciliation: " + ("OK" if restored.reconciliation.ok else "NOT OK"))
    if not restored.reconciliation.ok:
        raise typer.Exit(code=1)
