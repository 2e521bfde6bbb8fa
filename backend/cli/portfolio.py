"""`v2g portfolio ...`: sites under grid zones at portfolio scale, scheduled on Dask."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from backend.cli.errors import CliInputError
from backend.cli.options import DateOpt, SeedOpt, _directory, _integer, _output_file, _real
from backend.cli.output import console, err_console
from backend.cli.root import app
from scheduler.datasets import load_prices

portfolio_app = typer.Typer(
    help="Portfolio scale: sites under grid zones, generated or read from files, scheduled on Dask."
)
app.add_typer(portfolio_app, name="portfolio")


@portfolio_app.command("generate")
def portfolio_generate(
    out: Annotated[
        Path,
        typer.Argument(parser=_directory("DIR", create=True), metavar="DIR", help="Directory to write."),
    ],
    evs: Annotated[int, typer.Option(parser=_integer("--evs", 1, 10_000_000), metavar="N")] = 10_000,
    date: DateOpt = "2023-03-15",
    seed: SeedOpt = 0,
    cap_share: Annotated[
        float | None,
        typer.Option(
            parser=_real("--cap-share", 0.0, 1.0, open_lo=True),
            metavar="SHARE",
            help="A portfolio import cap as a share of all charger power (default: none).",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Draw a portfolio of N EVs (homes, depots, public sites under feeders and zones, DR events) from the
    ElaadNL data and write it as files that `v2g portfolio schedule` reads."""
    from scheduler.portfolio import PortfolioConfig, generate_portfolio, write_portfolio

    if fmt not in ("parquet", "csv"):
        raise CliInputError(f"--format {fmt}: not parquet or csv")
    day = dt.date.fromisoformat(date)
    prices = load_prices().window(day.isoformat(), (day + dt.timedelta(days=2)).isoformat())
    portfolio = generate_portfolio(
        date, prices, PortfolioConfig(n_evs=evs, portfolio_cap_share=cap_share), seed=seed
    )
    write_portfolio(portfolio, out, fmt=fmt)
    console.print(
        f"{portfolio.n_evs:,} EVs on {len(portfolio.sites):,} sites, {len(portfolio.nodes):,} grid nodes, "
        f"{len(portfolio.dr_events)} DR event(s) for {date}: written to {out}"
    )


@portfolio_app.command("schedule")
def portfolio_schedule(
    directory: Annotated[
        Path,
        typer.Argument(
            parser=_directory("DIR"), metavar="DIR", help="A portfolio's files (v2g portfolio generate)."
        ),
    ],
    workers: Annotated[int, typer.Option(parser=_integer("--workers", 1, 256), metavar="N")] = 2,
    scheduler_address: Annotated[
        str | None,
        typer.Option("--scheduler", metavar="ADDRESS", help="A Dask scheduler (default: a local cluster)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            parser=_output_file("--out", suffixes=(".parquet", ".csv")),
            metavar="FILE",
            help="Write the schedule (session, utc, charge_kw, discharge_kw) as .parquet or .csv.",
        ),
    ] = None,
    tol: Annotated[
        float,
        typer.Option(parser=_real("--tol", 0.0, 0.1, open_lo=True), help="Stop at this gap to the bound."),
    ] = 1e-4,
    monolithic: Annotated[
        bool, typer.Option(help="Solve as one LP (the reference; small portfolios).")
    ] = False,
) -> None:
    """Schedule a portfolio: blocks of sites in parallel on Dask, shared limits coordinated, every limit
    checked by an independent physics check; the gap to a proven lower bound is reported."""
    import numpy as np

    from scheduler.portfolio import read_portfolio, solve_portfolio
    from scheduler.portfolio.check import check_schedule

    portfolio = read_portfolio(directory)
    # the local cluster's own lifecycle (workers started, stopped at the end) is not the run's news
    import distributed  # noqa: F401  (registers its loggers, with their own levels)

    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]:
        logging.getLogger(name).setLevel(logging.ERROR)

    def progress(message: str) -> None:
        console.print(f"[dim]{message}[/dim]", highlight=False)

    result = solve_portfolio(
        portfolio,
        workers=workers,
        scheduler=scheduler_address,
        tol=tol,
        monolithic=monolithic,
        progress=progress,
    )
    schedule = result.schedule
    violations = check_schedule(
        portfolio,
        np.concatenate([b.session_row for b in schedule]) if schedule else np.zeros(0, np.int64),
        np.concatenate([b.t for b in schedule]) if schedule else np.zeros(0, np.int64),
        np.concatenate([b.charge_kw for b in schedule]) if schedule else np.zeros(0),
        np.concatenate([b.discharge_kw for b in schedule]) if schedule else np.zeros(0),
        tol=1e-3,
    )
    table = Table(title=f"Portfolio {portfolio.horizon.start:%Y-%m-%d}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    figures = result.figures()
    for key in (
        "evs",
        "sites",
        "zones",
        "blocks",
        "coupled_blocks",
        "coupling_rows",
        "coordination_iterations",
    ):
        table.add_row(key, f"{figures[key]:,}")
    table.add_row("cost (EUR)", f"{result.cost_eur:,.2f}")
    table.add_row("lower bound (EUR)", f"{result.lower_bound_eur:,.2f}")
    table.add_row("gap to bound", f"{result.gap:.2e}")
    table.add_row("solve / total (s)", f"{result.solve_s:.1f} / {result.total_s:.1f}")
    table.add_row(
        "physics check", "every limit holds" if not violations else f"{len(violations)} violation(s)"
    )
    console.print(table)
    if out is not None:
        frame = result.schedule_frame(portfolio)
        if out.suffix == ".csv":
            frame.to_csv(out, index=False)
        else:
            frame.to_parquet(out, index=False)
        console.print(f"schedule: {len(frame):,} rows written to {out}")
    if violations:
        for v in violations[:10]:
            err_console.print(f"PhysicsCheckError: {v}")
        raise typer.Exit(code=1)
