"""`v2g deploy`, `v2g settle` and `v2g demo`: a day settled on chain through the settlement use cases
(backend/app/settle.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from backend.cli.common import _data_dir, _day_prices, _platform, _policy, _probe_database
from backend.cli.options import (
    ChainOpt,
    DateOpt,
    DbOpt,
    FeeOpt,
    SeedOpt,
    _database,
    _deployment_record,
    _integer,
    _real,
)
from backend.cli.output import (
    MONEY_NOTE,
    _settle_table,
    _stage_progress,
    _strategy_table,
    _summary_lines,
    console,
    eur,
)
from backend.cli.root import app
from scheduler.datasets import PRICES_NL


@app.command()
def deploy(
    db: DbOpt,
    chain: ChainOpt = None,
    liveness: Annotated[
        int | None,
        typer.Option(
            parser=_integer("--liveness", 60, 30 * 24 * 3600),
            metavar="SECONDS",
            help="Challenge window of a new deployment, seconds (60 s to 30 days, as the contract allows); "
            "default: V2G_LIVENESS_S, else 3600.",
        ),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(
            parser=_deployment_record("--record"),
            metavar="FILE",
            help="Also write the deployment record (JSON) to this file.",
        ),
    ] = None,
) -> None:
    """Deploy the token and the settlement contract for this database (re-running changes nothing):
    the record goes into the database and deployments/<chain id>/."""
    with _platform(db, chain, write=True) as platform:
        existed = platform.stored is not None
        platform.ensure_deployment(liveness_s=_policy(None).liveness_s if liveness is None else liveness)
        assert platform.stored is not None
        text = platform.stored.to_json()
    if record is not None:
        record.write_text(text)
    console.print_json(text)
    if existed:
        console.print("deployment already recorded for this database: nothing sent")


@app.command()
def settle(
    db: DbOpt,
    date: DateOpt = "2023-07-02",
    evs: Annotated[
        int,
        typer.Option(
            parser=_integer("--evs", 1, 20_000), metavar="INTEGER", help="Fleet size (one owner per EV)."
        ),
    ] = 200,
    seed: SeedOpt = 0,
    chain: ChainOpt = None,
    fee_bps: FeeOpt = None,
    sell_spread: Annotated[
        float,
        typer.Option(
            parser=_real("--sell-spread", 0.0, 10_000.0),
            metavar="EUR/MWH",
            help="Planned sell price = day-ahead price − this spread (what discharged energy is paid).",
        ),
    ] = 0.0,
    metered: Annotated[
        bool,
        typer.Option(
            "--metered",
            help="Settle the day's metered energy (from the stations' registers, signed by the metering "
            "service) instead of a simulated schedule.",
        ),
    ] = False,
) -> None:
    """Schedule one day with V2G and settle it on chain: propose, finalise, claims, audit.

    The period of a day is settled once: a day already settled sends nothing and exits 0; a settle that
    was killed resumes where it stopped (the schedule is not recomputed)."""
    from backend.app.settle import resume, settle_metered, settle_simulated
    from backend.db.models import PeriodStatus
    from scheduler.fleet import FleetConfig, fleet_problem
    from scheduler.solve import solve

    series = None if metered else _day_prices(PRICES_NL, date)  # a metered day's prices are in the database
    policy = _policy(fee_bps)
    period_id = int(date.replace("-", ""))
    with _platform(db, chain, write=True) as platform:
        # keys before any work: every role's for a first deployment, the settler's after (the metering
        # service signs, metered registers or simulated ones: this process never loads the meter key)
        platform.actors(("admin", "settler", "auditor") if platform.stored is None else ("settler",))
        existing = platform.period(period_id) if platform.stored is not None else None
        if existing is not None and existing.status in (PeriodStatus.CLAIMED, PeriodStatus.DISPUTED):
            record = platform.record
            console.print(
                f"period {period_id} is already settled ({existing.status}) on chain id {record.chain_id}, "
                f"contract {record.settlement}: nothing sent"
            )
            report = platform.reconcile()
            console.print(
                "reconciliation: " + ("OK" if report.ok else f"{len(report.mismatches)} mismatch(es)")
            )
            if not report.ok:
                raise typer.Exit(code=1)
            return
        if metered:
            # V2G_SETTLE_NOW (ISO 8601): the time this settler takes as now, for drills that settle a day
            # they just operated; the day must still have ended by it
            from backend.app.settle import settler_now
            from backend.audit.energy import energy_balance

            metered_day, built, status = settle_metered(platform, period_id, policy, now=settler_now())
            report = platform.reconcile()
            with platform.sessions() as session:
                balance = energy_balance(session, period_id, ledger=metered_day.ledger)
            console.print(MONEY_NOTE, soft_wrap=True)
            console.print(
                f"period {period_id} (metered): {status}; {built.entry_count} entries, paid to owners "
                f"{eur(built.total_credit)}, paid by owners {eur(built.total_debit)}; "
                f"{len(metered_day.trades)} metered trades ({metered_day.adjusted_wh:,} Wh of earlier days "
                f"adjusted), {metered_day.unattributed_wh:,} Wh of unknown owners not billed"
            )
            console.print(
                "energy: " + balance.equation() + (" (balances)" if balance.ok else " (DOES NOT BALANCE)"),
                markup=False,
            )
            verdict = "OK" if report.ok else f"{len(report.mismatches)} mismatch(es)"
            console.print(f"reconciliation: {verdict}")
            if not report.ok or not balance.ok:
                raise typer.Exit(code=1)
            return
        # a simulated period stored unsigned (before the metering service signed simulated days) needs its
        # registers again: the schedule is recomputed, and must give the stored root
        unsigned = (
            existing is not None and existing.status == PeriodStatus.BUILT and existing.frame_heads is None
        )
        if existing is not None and not unsigned:
            console.print(
                f"period {period_id} was left at {existing.status}: resuming it (the stored period is "
                "settled as built; the schedule is not recomputed)"
            )
            with _stage_progress("resuming") as advance:
                result = resume(platform, period_id, policy, progress=advance)
        else:
            assert series is not None
            problem = fleet_problem(
                date, series, FleetConfig(n_evs=evs), seed=seed, sell_spread_eur_mwh=sell_spread
            )
            with console.status("scheduling ..."):
                schedule_ = solve(problem)
            with _stage_progress("settling") as advance:
                result = settle_simulated(problem, schedule_, platform, policy, progress=advance)
    console.print(_settle_table(result))
    console.print(MONEY_NOTE, soft_wrap=True)
    for line in _summary_lines(result):
        console.print(line)
    if result.status is PeriodStatus.PROPOSED:
        console.print(
            f"period {period_id} is proposed; its challenge window is open: run the same command again "
            "after it closes to finalise and pay"
        )
    if not result.reconciliation.ok:
        for m in result.reconciliation.mismatches[:20]:
            console.print(f"[red]{m.kind}[/] period {m.period_id}: {m.detail}")
        raise typer.Exit(code=1)


@app.command()
def demo(
    date: DateOpt = "2023-09-11",
    evs: Annotated[
        int,
        typer.Option(
            parser=_integer("--evs", 1, 5_000), metavar="INTEGER", help="Fleet size (one owner per EV)."
        ),
    ] = 200,
    seed: SeedOpt = 0,
    db: Annotated[
        str,
        typer.Option(
            parser=_database("--db"),
            metavar="URL",
            help="SQLAlchemy URL of the demo's database (the default is made afresh on every run).",
        ),
    ] = "sqlite:///demo.sqlite",
) -> None:
    """The main job end to end on the embedded chain and SQLite: real prices, a generated fleet,
    uncontrolled / smart / V2G schedules, trades, deployment, escrow, settlement, claims, statements and
    a reconciliation."""
    from backend.app.settle import settle_simulated
    from backend.audit.statements import owner_statement
    from backend.db.session import session_factory
    from backend.platform import Platform
    from scheduler.baselines import run_strategies
    from scheduler.fleet import FleetConfig, fleet_problem

    series = _day_prices(PRICES_NL, date)
    if db == "sqlite:///demo.sqlite":
        Path("demo.sqlite").unlink(missing_ok=True)
    _probe_database(db)
    problem = fleet_problem(date, series, FleetConfig(n_evs=evs), seed=seed)
    day = problem.prices.buy_eur_mwh
    console.print(
        f"[bold]NL day-ahead {date}[/]: min {day.min():.2f}, mean {day.mean():.2f}, "
        f"max {day.max():.2f} EUR/MWh; {evs} EVs from ElaadNL, "
        f"{sum(v.v2g for v in problem.vehicles)} V2G-capable"
    )
    with console.status("scheduling uncontrolled, smart and V2G ..."):
        results = run_strategies(problem)
    kpis_by = {k: v[1] for k, v in results.items()}
    console.print(_strategy_table("Day result", kpis_by))
    # the demo's own embedded chain, beside the default one: fresh with the fresh demo database, and
    # kept afterwards, so that `v2g audit ... --db sqlite:///demo.sqlite` finds it and checks against it
    demo_data = _data_dir() / "demo"
    if db == "sqlite:///demo.sqlite":
        shutil.rmtree(demo_data / "chains", ignore_errors=True)
    with (
        Platform.open(db, "eth-tester", data_dir=demo_data) as platform,
        _stage_progress("settling on the embedded chain") as advance,
    ):
        result = settle_simulated(problem, results["v2g"][0], platform, _policy(None), progress=advance)
    console.print(_settle_table(result))
    console.print(MONEY_NOTE, soft_wrap=True)
    sessions = session_factory(db, upgrade=False)
    with sessions() as session:
        owners = sorted(result.owner_addresses)[:3]
        for owner in owners:
            statement = owner_statement(session, result.record.settlement, owner)
            for line in statement.lines:
                paid = eur(line.paid) if line.paid is not None else "-"
                debt = eur(line.debt_added) if line.debt_added is not None else "-"
                console.print(
                    f"statement {owner}: {line.charged_wh:,} Wh charged, {line.discharged_wh:,} Wh "
                    f"discharged: amount {eur(line.amount, signed=True)} (paid {paid}, debt {debt}), "
                    f"tx {str(line.claim_tx)[:12]}",
                    soft_wrap=True,
                )
    console.rule("Summary")
    for text in _summary_lines(result, kpis_by):
        console.print(text)
    if not result.reconciliation.ok:
        raise typer.Exit(code=1)
