"""`v2g schedule` and `v2g case-study`: the scheduler on real prices."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer

from backend.cli.common import _day_prices
from backend.cli.options import DateOpt, SeedOpt, _input_file, _integer, _output_file, _real
from backend.cli.output import _strategy_table, console
from backend.cli.root import app
from scheduler.datasets import PRICES_NL


@app.command()
def schedule(
    date: DateOpt = "2023-07-02",
    evs: Annotated[
        int,
        typer.Option(
            parser=_integer("--evs", 1), metavar="INTEGER", help="Fleet size (generated from ElaadNL)."
        ),
    ] = 1000,
    v2g_share: Annotated[
        float,
        typer.Option(
            parser=_real("--v2g-share", 0.0, 1.0), metavar="FLOAT", help="Share of V2G-capable vehicles."
        ),
    ] = 0.3,
    seed: SeedOpt = 0,
    prices: Annotated[
        Path,
        typer.Option(parser=_input_file("--prices"), metavar="FILE", help="Hourly price CSV (utc,eur_mwh)."),
    ] = PRICES_NL,
    gap: Annotated[
        float,
        typer.Option(
            parser=_real("--gap", 0.0, 1.0, open_lo=True, open_hi=True),
            metavar="FLOAT",
            help="Relative MIP gap, 0 < gap < 1.",
        ),
    ] = 1e-4,
    plot: Annotated[
        Path | None,
        typer.Option(
            parser=_output_file("--plot", suffixes=(".png", ".svg", ".pdf")),
            metavar="FILE",
            help="Write a PNG (or .svg, .pdf) of prices, power, limits and SoC band.",
        ),
    ] = None,
    trades: Annotated[
        Path | None,
        typer.Option(
            parser=_output_file("--trades"),
            metavar="FILE",
            help="Write the V2G schedule's trades (whole Wh) as CSV.",
        ),
    ] = None,
) -> None:
    """Schedule one day for a generated fleet: uncontrolled, smart and V2G, side by side."""
    from scheduler.baselines import run_strategies
    from scheduler.fleet import FleetConfig, fleet_problem
    from scheduler.index import build_index
    from scheduler.schedule import to_trades

    series = _day_prices(prices, date)
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


@app.command(
    "case-study",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def case_study(ctx: typer.Context) -> None:
    """The four-strategy case study over days of real prices on Dask (options: --help). Bad options
    are named errors of the scheduler (its parser raises them); exits 1 when a day failed after every
    solver recovery, once all the other days are done and written."""
    from scheduler.case_study import run_from_args

    with console.status("running the case study on Dask ..."):
        run = run_from_args(list(ctx.args))
    for line in run.lines:
        console.print(line)
    if run.failed:
        raise typer.Exit(code=1)
