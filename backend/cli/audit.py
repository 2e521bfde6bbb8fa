"""`v2g audit ...`: statements, proofs, reconciliation, the energy equation and raw-frame exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from backend.cli.common import _platform
from backend.cli.errors import EntryNotFoundError, UnknownOwnerError
from backend.cli.options import (
    UINT63,
    AuditFeeOpt,
    AuditToleranceOpt,
    DateOpt,
    ExistingDbOpt,
    ReadChainOpt,
    _input_file,
    _integer,
)
from backend.cli.output import MONEY_NOTE, console, eur
from backend.cli.root import app
from backend.text import count

audit_app = typer.Typer(help="Audit: owner statements, reconciliation, inclusion proofs.")
app.add_typer(audit_app, name="audit")


@audit_app.command("statement")
def audit_statement(
    db: ExistingDbOpt,
    owner: Annotated[str, typer.Option(help="Owner id, e.g. owner-00007.")],
    chain: ReadChainOpt = None,
) -> None:
    """An owner's statement: per period, energy, fees, amount, payment and proof (from the database,
    checked to belong to the chain)."""
    from backend.platform import UnknownOwnerError as NoOwner

    with _platform(db, chain, write=False) as platform:
        try:
            statement = platform.statement(owner)
        except NoOwner:
            raise UnknownOwnerError(f"--owner {owner}: no such owner in {db}") from None
    if not statement.lines:  # a registered owner with nothing settled yet: an empty statement, as the API
        console.print(f"Statement of {owner} ({statement.address}): no periods settled yet")
        return
    table = Table(title=f"Statement of {owner} ({statement.address})", caption=MONEY_NOTE)
    for column in (
        "period",
        "charged Wh",
        "discharged Wh",
        "p2p Wh",
        "fees",
        "amount",
        "paid",
        "debt",
        "tx",
    ):
        table.add_column(column, justify="right")
    for line in statement.lines:
        table.add_row(
            str(line.period_id),
            f"{line.charged_wh:,}",
            f"{line.discharged_wh:,}",
            f"{line.p2p_wh:,}",
            eur(line.fees),
            eur(line.amount, signed=True),
            eur(line.paid) if line.paid is not None else "-",
            eur(line.debt_added) if line.debt_added is not None else "-",
            (line.claim_tx or "-")[:12],
        )
    console.print(table)
    console.print(f"total amount: {eur(statement.total_amount, signed=True)}")


@audit_app.command("proof")
def audit_proof(
    db: ExistingDbOpt,
    period: Annotated[
        int, typer.Option(parser=_integer("--period", 0, UINT63), metavar="INTEGER", help="Period id.")
    ],
    entry: Annotated[
        int, typer.Option(parser=_integer("--entry", 0, UINT63), metavar="INTEGER", help="Entry id.")
    ],
    chain: ReadChainOpt = None,
) -> None:
    """Verify an entry's inclusion proof against the root the chain recorded and the leaf the
    contract computes."""
    from backend.platform import EntryNotFoundError as NoEntry

    with _platform(db, chain, write=False) as platform:
        try:
            result = platform.proof(period, entry)
        except NoEntry as exc:
            raise EntryNotFoundError(f"--period {period} --entry {entry}: {exc}") from None
    console.print(
        f"leaf {result.leaf}\nroot {result.root}\nproof {len(result.proof)} hashes: "
        + ("[green]valid[/]" if result.valid else "[red]INVALID[/]")
        + (
            ""
            if result.contract_leaf_matches is None
            else f"; contract leaf {'matches' if result.contract_leaf_matches else '[red]DIFFERS[/]'}"
        )
    )
    if not result.valid or result.contract_leaf_matches is False:
        raise typer.Exit(code=1)


@audit_app.command("reconcile")
def audit_reconcile(db: ExistingDbOpt, chain: ReadChainOpt = None) -> None:
    """Database vs chain, every mismatch named (the chain the database was settled on)."""
    with _platform(db, chain, write=False) as platform:
        report = platform.reconcile()
    for m in report.mismatches:
        console.print(f"[red]{m.kind}[/] period {m.period_id}: {m.detail}")
    console.print(
        f"{count(report.periods, 'period')}, {count(report.entries, 'entry', 'entries')}, "
        f"{count(report.accounts, 'account')}: "
        + ("[green]OK[/]" if report.ok else f"[red]{len(report.mismatches)} mismatch(es)[/]")
    )
    if not report.ok:
        raise typer.Exit(code=1)


@audit_app.command("energy")
def audit_energy(
    db: ExistingDbOpt,
    date: DateOpt,
    clock_tolerance_s: AuditToleranceOpt = None,
) -> None:
    """Where every Wh the meters measured on a UTC day went: metered = settled + adjusted + refused +
    pending, each term from its own source (raw frames, the day's period, later periods, named refusals);
    exits 1 if the day does not balance (a Wh paid twice or without a meter behind it)."""
    from backend.audit.energy import energy_balance
    from backend.db.session import session_factory
    from backend.metering.replay import MeterPolicy

    day = int(date.replace("-", ""))
    with session_factory(db)() as session:
        policy = None if clock_tolerance_s is None else MeterPolicy(clock_tolerance_s=clock_tolerance_s)
        balance = energy_balance(session, day, policy)
    table = Table(title=f"Energy of {date} (UTC), whole Wh")
    table.add_column("term")
    table.add_column("Wh", justify="right")
    for term, wh in (
        ("metered (raw frames)", balance.metered_wh),
        ("settled (its own period)", balance.settled_wh),
        ("adjusted (later periods)", balance.adjusted_wh),
        ("refused", balance.refused_wh),
        *((f"  {reason}", wh) for reason, wh in balance.refused_by_reason.items()),
        ("pending (in no period yet)", balance.pending_wh),
        ("of settled + adjusted: from meters that do not sign", balance.unsigned_wh),
    ):
        table.add_row(term, f"{wh:,}")
    console.print(table)
    for r in balance.refusals[:50]:
        console.print(
            f"refused {r.reason}: station {r.station_id} transaction {r.transaction_id} at "
            f"{r.at:%Y-%m-%d %H:%M:%S} UTC, {r.wh:,} Wh ({r.detail})",
            markup=False,
        )
    for o in balance.overpaid[:50]:
        console.print(
            f"[red]OverpaidError[/] {o.session_id} {o.interval_start:%Y-%m-%d %H:%M} {o.direction}: paid "
            f"{o.paid_wh:,} Wh, metered {o.metered_wh:,} Wh"
        )
    console.print(
        balance.equation() + (": [green]balances[/]" if balance.ok else ": [red]does not balance[/]")
    )
    if not balance.ok:
        raise typer.Exit(code=1)


@audit_app.command("frames")
def audit_frames(
    db: ExistingDbOpt,
    period: Annotated[int, typer.Option(help="The metered period (its day, YYYYMMDD).")],
    out: Annotated[Path, typer.Option(help="The JSON file to write (frames, registry, prices, heads).")],
    fee_bps: AuditFeeOpt = None,
    clock_tolerance_s: AuditToleranceOpt = None,
) -> None:
    """Export what a metered period was computed from: every station's raw frames up to the period's heads
    (verified), the registry, the prices, the heads of the period signed before it and the deployment, so
    that `v2g audit recompute` (or any program) recomputes its root without this database."""
    from backend.audit.recompute import export_period
    from backend.db.session import session_factory
    from backend.metering.replay import MeterPolicy

    with session_factory(db)() as session:
        policy = None if clock_tolerance_s is None else MeterPolicy(clock_tolerance_s=clock_tolerance_s)
        count = export_period(session, period, out, fee_bps, policy)
    console.print(f"period {period}: {count:,} raw frames written to {out}")


@audit_app.command("recompute")
def audit_recompute(
    db: ExistingDbOpt,
    period: Annotated[int, typer.Option(help="The metered period (its day, YYYYMMDD).")],
    frames: Annotated[
        Path,
        typer.Option(parser=_input_file("--frames"), metavar="FILE", help="An export of `v2g audit frames`."),
    ],
    chain: ReadChainOpt = None,
) -> None:
    """Recompute a metered period's root from a raw-frame export alone (hash chains, station signatures,
    replay, tariff, Merkle tree) and compare it with the root on chain; exits 1 if they differ."""
    from backend.audit.recompute import recompute_file

    result = recompute_file(frames, period)
    with _platform(db, chain, write=False) as platform:
        on_chain = platform.period_on_chain(period)
    console.print(
        f"period {period}: {result.frames:,} frames verified; root from the frames {result.root}, "
        f"credit {eur(result.total_credit)}, debit {eur(result.total_debit)}, {result.entries} entries"
    )
    console.print(f"root on chain {on_chain}")
    if on_chain.lower() != result.root.lower():
        console.print("[red]RootMismatchError[/]: the frames do not give the root on chain")
        raise typer.Exit(code=1)
    console.print("[green]the raw frames give the root on chain[/]")
