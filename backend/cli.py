"""The ``v2g`` command line (typer + rich)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from scheduler.baselines import run_strategies
from scheduler.datasets import PRICES_NL, load_prices
from scheduler.errors import SchedulerError
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.index import build_index
from scheduler.schedule import Direction, Kpis, to_trades

app = typer.Typer(help="v2g-settle: V2G scheduling and on-chain settlement for an EV aggregator.")
console = Console()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


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


@app.command()
def demo(
    date: Annotated[str, typer.Option(help="UTC day of NL day-ahead prices.")] = "2023-07-02",
    evs: Annotated[int, typer.Option(min=1, help="Fleet size.")] = 200,
    seed: Annotated[int, typer.Option(help="Fleet generator seed.")] = 0,
) -> None:
    """The main job end to end on real data: prices, fleet, schedules, trades."""
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
    console.print(_strategy_table("Day result", {k: v[1] for k, v in results.items()}))
    trades = to_trades(results["v2g"][0])
    owners = {t.owner for t in trades}
    charged = sum(t.energy_wh for t in trades if t.direction is Direction.CHARGE)
    discharged = sum(t.energy_wh for t in trades if t.direction is Direction.DISCHARGE)
    summary = {
        "trades": len(trades),
        "owners": len(owners),
        "charged_wh": charged,
        "discharged_wh": discharged,
        "v2g_status": results["v2g"][0].status,
        "v2g_gap": results["v2g"][0].mip_gap,
    }
    console.print(
        f"Trades: {len(trades)} for {len(owners)} owners, {charged:,} Wh charged, "
        f"{discharged:,} Wh discharged (whole Wh)."
    )
    console.print_json(json.dumps(summary))


if __name__ == "__main__":
    app()
