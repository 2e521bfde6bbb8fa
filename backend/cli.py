"""The ``v2g`` command line (typer + rich)."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import Deployment
from backend.settlement.service import DayResult
from scheduler.baselines import run_strategies
from scheduler.datasets import PRICES_NL, load_prices
from scheduler.errors import SchedulerError
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.index import build_index
from scheduler.schedule import Kpis, to_trades
from scheduler.solve import solve

app = typer.Typer(help="v2g-settle: V2G scheduling and on-chain settlement for an EV aggregator.")
# Full width in a terminal; a fixed, wide layout in logs and pipes (CI, `make demo | tee`).
console = Console(width=None if sys.stdout.isatty() else 132)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


SETTLEMENT_STAGES = ("trades", "deploy", "build", "escrow", "settle", "audit")


@contextmanager
def _stage_progress(label: str) -> Iterator[Callable[[str], None]]:
    """A progress bar over the settlement stages; yields the callback that marks a stage done."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=len(SETTLEMENT_STAGES))

        def advance(stage: str) -> None:
            progress.update(task, advance=1, description=f"{label}: {stage} done")

        yield advance


@contextmanager
def _named_errors() -> Iterator[None]:
    """Show a named input or scheduling error as one red line and exit 2 (no traceback)."""
    try:
        yield
    except SchedulerError as exc:
        console.print(f"[red]{type(exc).__name__}[/]: {exc}")
        raise typer.Exit(code=2) from exc


def _strategy_table(title: str, results: dict[str, Kpis]) -> Table:
    table = Table(title=title, caption="net € = energy − export + wear; Δ net against uncontrolled")
    table.add_column("strategy")
    for column in ("energy €", "V2G €", "wear €", "net €", "Δ net", "peak kW", "short kWh"):
        table.add_column(column, justify="right")
    base = results["uncontrolled"].net_cost_eur
    for name, k in results.items():
        change = (k.net_cost_eur - base) / abs(base) * 100 if base else 0.0
        table.add_row(
            name,
            f"{k.import_cost_eur:,.2f}",
            f"{k.v2g_revenue_eur:,.2f}",
            f"{k.degradation_eur:,.2f}",
            f"{k.net_cost_eur:,.2f}",
            f"{change:+.1f} %",
            f"{k.peak_import_kw:,.1f}",
            f"{k.shortfall_kwh:,.3f}",
        )
    return table


@app.command()
def schedule(
    date: Annotated[str, typer.Option(help="UTC day of NL day-ahead prices.")] = "2023-07-02",
    evs: Annotated[int, typer.Option(min=1, help="Fleet size (generated from ElaadNL).")] = 1000,
    v2g_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of V2G-capable vehicles.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Fleet generator seed.")] = 0,
    prices: Annotated[Path, typer.Option(help="Hourly price CSV (utc,eur_mwh).")] = PRICES_NL,
    gap: Annotated[float, typer.Option(help="Relative MIP gap.")] = 1e-4,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of prices, power, limits and SoC band.")
    ] = None,
    trades: Annotated[
        Path | None, typer.Option(help="Write the V2G schedule's trades (whole Wh) as CSV.")
    ] = None,
) -> None:
    """Schedule one day for a generated fleet: uncontrolled, smart and V2G, side by side."""
    with _named_errors():
        series = load_prices(prices).eur_mwh
        problem = fleet_problem(date, series, FleetConfig(n_evs=evs, v2g_share=v2g_share), seed=seed)
        with console.status(f"solving {evs} EVs × {problem.horizon.intervals} intervals ..."):
            results = run_strategies(problem, mip_gap=gap)
    console.print(
        _strategy_table(f"{evs} EVs on {date} (NL day-ahead)", {k: v[1] for k, v in results.items()})
    )
    v2g = results["v2g"][0]
    console.print(f"V2G schedule: {v2g.status}, gap {v2g.mip_gap:.2e}, solved in {v2g.solve_s:.2f} s")
    if plot is not None:
        from scheduler.plot import plot_schedule

        console.print(f"plot: {plot_schedule(v2g, build_index(problem), plot)}")
    if trades is not None:
        rows = to_trades(v2g)
        with trades.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["owner", "vehicle_id", "session_id", "interval_start", "direction", "energy_wh"])
            for t in rows:
                writer.writerow(
                    [
                        t.owner,
                        t.vehicle_id,
                        t.session_id,
                        t.interval_start.isoformat(),
                        t.direction.value,
                        t.energy_wh,
                    ]
                )
        console.print(f"trades: {len(rows)} rows → {trades}")


audit_app = typer.Typer(help="Audit: owner statements, reconciliation, inclusion proofs.")
app.add_typer(audit_app, name="audit")

ChainOpt = Annotated[
    str, typer.Option(help="eth-tester (embedded), anvil, or a JSON-RPC URL (keys: V2G_PRIVATE_KEYS).")
]
DbOpt = Annotated[str, typer.Option(help="SQLAlchemy URL of the database.")]


def _latest_deployment(db: str) -> tuple[sessionmaker[Session], Deployment]:
    """The database's sessions and its most recent deployment; exits 2 when there is none."""
    from backend.db.session import session_factory

    sessions = session_factory(db)
    with sessions() as session:
        deployment = session.scalars(select(Deployment).order_by(Deployment.id.desc())).first()
    if deployment is None:
        console.print("[red]NoDeployment[/]: no deployment in this database")
        raise typer.Exit(code=2)
    return sessions, deployment


@app.command()
def deploy(
    chain: ChainOpt = "eth-tester",
    liveness: Annotated[int, typer.Option(help="Challenge window, seconds.")] = 3600,
    record: Annotated[Path | None, typer.Option(help="Deployment record (JSON) to write or reuse.")] = None,
) -> None:
    """Deploy the token and the settlement contract with their roles (re-running changes nothing)."""
    from backend.chain.client import connect
    from backend.chain.deploy import deploy as deploy_contracts

    with _named_errors(), connect(chain) as connected:
        if connected.kind != "rpc":
            console.print(f"[yellow]{connected.kind} is a local chain: it ends with this command[/]")
        result = deploy_contracts(connected, liveness_s=liveness, record_path=record)
    console.print_json(result.to_json())


def _settle_table(result: DayResult) -> Table:
    table = Table(title=f"Settlement period {result.period_id}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in result.seconds.items():
        table.add_row(stage, f"{seconds:.2f}")
    return table


def _summary_lines(result: DayResult, kpis_by_strategy: dict[str, Kpis] | None = None) -> list[str]:
    lines = []
    if kpis_by_strategy:
        base = kpis_by_strategy["uncontrolled"]
        v2g = kpis_by_strategy["v2g"]
        lines.append(
            f"energy cost (V2G schedule): {v2g.import_cost_eur:,.2f} EUR "
            f"(uncontrolled {base.import_cost_eur:,.2f} EUR)"
        )
        lines.append(
            f"V2G revenue: {v2g.v2g_revenue_eur:,.2f} EUR; net cost {v2g.net_cost_eur:,.2f} EUR "
            f"vs {base.net_cost_eur:,.2f} EUR uncontrolled"
        )
    lines.append(
        f"owners paid: {result.owners_paid}, owners debited: {result.owners_debited} "
        f"({result.entries} entries, credit {result.total_credit / 1e6:,.2f} tEUR, "
        f"debit {result.total_debit / 1e6:,.2f} tEUR)"
    )
    lines.append(
        f"period {result.period_id}: {result.status}; gas "
        + ", ".join(f"{k} {v:,}" for k, v in result.gas.items())
    )
    lines.append(
        "reconciliation: "
        + ("OK" if result.reconciliation.ok else f"{len(result.reconciliation.mismatches)} mismatch(es)")
    )
    return lines


@app.command()
def settle(
    date: Annotated[str, typer.Option(help="UTC day of NL day-ahead prices.")] = "2023-07-02",
    evs: Annotated[int, typer.Option(min=1, max=20_000, help="Fleet size (one owner per EV).")] = 200,
    seed: Annotated[int, typer.Option(help="Fleet generator seed.")] = 0,
    chain: ChainOpt = "eth-tester",
    db: DbOpt = "sqlite:///v2g.sqlite",
    fee_bps: Annotated[int, typer.Option(min=0, max=10_000, help="Aggregator fee, basis points.")] = 100,
) -> None:
    """Schedule one day with V2G and settle it on chain: propose, finalise, claims, audit."""
    from backend.chain.client import connect
    from backend.settlement.service import settle_day

    with _named_errors():
        problem = fleet_problem(date, load_prices(PRICES_NL).eur_mwh, FleetConfig(n_evs=evs), seed=seed)
        with console.status("scheduling ..."):
            schedule_ = solve(problem)
        with connect(chain) as connected, _stage_progress("settling") as advance:
            result = settle_day(
                problem,
                schedule_,
                connected,
                db,
                fee_bps=fee_bps,
                progress=advance,
            )
    console.print(_settle_table(result))
    for line in _summary_lines(result):
        console.print(line)
    if not result.reconciliation.ok:
        raise typer.Exit(code=1)


@audit_app.command("statement")
def audit_statement(
    owner: Annotated[str, typer.Option(help="Owner id, e.g. owner-00007.")],
    db: DbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """An owner's statement: per period, energy, fees, amount, payment and proof (from the database)."""
    from backend.audit.statements import owner_statement

    sessions, deployment = _latest_deployment(db)
    with sessions() as session:
        statement = owner_statement(session, deployment.settlement_address, owner)
    if not statement.lines:
        console.print(f"[red]UnknownOwner[/]: no periods for {owner}")
        raise typer.Exit(code=2)
    table = Table(title=f"Statement of {owner} ({statement.address})")
    for column in ("period", "charged Wh", "discharged Wh", "p2p Wh", "fees", "amount", "paid", "debt", "tx"):
        table.add_column(column, justify="right")
    for line in statement.lines:
        table.add_row(
            str(line.period_id),
            f"{line.charged_wh:,}",
            f"{line.discharged_wh:,}",
            f"{line.p2p_wh:,}",
            f"{line.fees:,}",
            f"{line.amount:,}",
            f"{line.paid if line.paid is not None else '-'}",
            f"{line.debt_added if line.debt_added is not None else '-'}",
            (line.claim_tx or "-")[:12],
        )
    console.print(table)
    console.print(f"total amount: {statement.total_amount:,} base units")


@audit_app.command("proof")
def audit_proof(
    period: Annotated[int, typer.Option(help="Period id.")],
    entry: Annotated[int, typer.Option(help="Entry id.")],
    db: DbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """Verify an entry's inclusion proof against the root indexed from the chain (offline)."""
    from backend.audit.statements import verify_inclusion

    sessions, deployment = _latest_deployment(db)
    with sessions() as session:
        try:
            result = verify_inclusion(
                session, period, entry, chain_id=deployment.chain_id, contract=deployment.settlement_address
            )
        except KeyError as exc:
            console.print(f"[red]NotFound[/]: {exc.args[0]}")
            raise typer.Exit(code=2) from exc
    console.print(
        f"leaf {result.leaf}\nroot {result.root}\nproof {len(result.proof)} hashes: "
        + ("[green]valid[/]" if result.valid else "[red]INVALID[/]")
    )
    if not result.valid:
        raise typer.Exit(code=1)


@audit_app.command("reconcile")
def audit_reconcile(chain: ChainOpt, db: DbOpt = "sqlite:///v2g.sqlite") -> None:
    """Database vs chain, every mismatch named (needs the chain the database was settled on)."""
    from backend.audit.indexer import EventIndexer
    from backend.audit.statements import reconcile
    from backend.chain.client import connect
    from backend.chain.contracts import SettlementClient

    sessions, deployment = _latest_deployment(db)
    with _named_errors(), connect(chain) as connected:
        EventIndexer(sessions, connected, deployment.settlement_address, deployment.block_number).sync()
        settlement = SettlementClient.at(connected, deployment.settlement_address)
        aggregator = str(connected.call(settlement.contract.functions.aggregator()))
        with sessions() as session:
            report = reconcile(session, settlement, aggregator)
    for m in report.mismatches:
        console.print(f"[red]{m.kind}[/] period {m.period_id}: {m.detail}")
    console.print(
        f"{report.periods} periods, {report.entries} entries, {report.accounts} accounts: "
        + ("[green]OK[/]" if report.ok else f"[red]{len(report.mismatches)} mismatch(es)[/]")
    )
    if not report.ok:
        raise typer.Exit(code=1)


keys_app = typer.Typer(help="API keys (stored hashed; each key is shown once).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="operator, owner or auditor.")],
    owner: Annotated[str | None, typer.Option(help="The owner id (owner keys only).")] = None,
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    db: DbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """Create an API key and print it once."""
    from backend.api.security import Role, create_api_key
    from backend.db.session import session_factory

    try:
        parsed = Role(role)
    except ValueError as exc:
        console.print(f"[red]InvalidRole[/]: {role!r} (operator, owner or auditor)")
        raise typer.Exit(code=2) from exc
    sessions = session_factory(db)
    try:
        with sessions.begin() as session:
            key = create_api_key(session, parsed, owner_id=owner, label=label)
    except ValueError as exc:
        console.print(f"[red]InvalidKey[/]: {exc}")
        raise typer.Exit(code=2) from exc
    console.print(key)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Run the HTTP API (settings from V2G_* environment variables, see backend/config.py)."""
    import uvicorn

    from backend.api.app import create_app

    uvicorn.run(create_app(), host=host, port=port)


@app.command(
    "case-study",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def case_study(ctx: typer.Context) -> None:
    """The four-strategy case study over days of real prices on Dask (options: --help)."""
    from scheduler.case_study import run_from_args

    with console.status("running the case study on Dask ..."):
        run = run_from_args(list(ctx.args))
    for line in run.lines:
        console.print(line)


@app.command()
def demo(
    date: Annotated[str, typer.Option(help="UTC day of NL day-ahead prices.")] = "2023-09-11",
    evs: Annotated[int, typer.Option(min=1, max=5_000, help="Fleet size (one owner per EV).")] = 200,
    seed: Annotated[int, typer.Option(help="Fleet generator seed.")] = 0,
    db: DbOpt = "sqlite:///demo.sqlite",
) -> None:
    """The main job end to end on the embedded chain and SQLite: real prices, a generated fleet,
    uncontrolled / smart / V2G schedules, trades, deployment, escrow, settlement, claims, statements and
    a reconciliation."""
    from backend.audit.statements import owner_statement
    from backend.chain.client import Chain
    from backend.db.session import session_factory
    from backend.settlement.service import settle_day

    if db == "sqlite:///demo.sqlite":
        Path("demo.sqlite").unlink(missing_ok=True)
    with _named_errors():
        series = load_prices(PRICES_NL).eur_mwh
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
        with Chain.eth_tester() as chain, _stage_progress("settling on the embedded chain") as advance:
            result = settle_day(
                problem,
                results["v2g"][0],
                chain,
                db,
                fee_bps=100,
                progress=advance,
            )
    console.print(_settle_table(result))
    sessions = session_factory(db, upgrade=False)
    with sessions() as session:
        owners = sorted(result.owner_addresses)[:3]
        for owner in owners:
            statement = owner_statement(session, result.record.settlement, owner)
            for line in statement.lines:
                console.print(
                    f"statement {owner}: charged {line.charged_wh:,} Wh, discharged "
                    f"{line.discharged_wh:,} Wh, amount {line.amount:,} (paid {line.paid}, "
                    f"debt {line.debt_added}), tx {str(line.claim_tx)[:14]}"
                )
    console.rule("Summary")
    for text in _summary_lines(result, kpis_by):
        console.print(text)
    if not result.reconciliation.ok:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
