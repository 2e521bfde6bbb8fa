"""The ``v2g`` command line (typer + rich)."""

from __future__ import annotations

import logging
from datetime import date

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from scheduler.datasets import EV_SPECS, PRICES_NL, load_elaad, load_ev_specs, load_prices

app = typer.Typer(help="v2g-settle: V2G scheduling and on-chain settlement for an EV aggregator.")
console = Console()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


@app.command()
def demo(day: str = typer.Option("2023-07-02", help="UTC day of NL day-ahead prices to use.")) -> None:
    """Run the main job end to end on the shipped real data."""
    start = date.fromisoformat(day)
    prices = load_prices(PRICES_NL)
    window = prices.window(str(start), str(start.fromordinal(start.toordinal() + 1)))
    elaad = load_elaad()
    models = load_ev_specs(EV_SPECS)
    table = Table(title=f"NL day-ahead {start} (UTC)")
    table.add_column("hours")
    table.add_column("min EUR/MWh", justify="right")
    table.add_column("mean EUR/MWh", justify="right")
    table.add_column("max EUR/MWh", justify="right")
    table.add_row(str(len(window)), f"{window.min():.2f}", f"{window.mean():.2f}", f"{window.max():.2f}")
    console.print(table)
    console.print(
        f"ElaadNL: {len(elaad.arrival_weekday)} arrival slots; EV specs: {len(models)} models; "
        f"price gaps handled: {len(prices.gaps)}"
    )


if __name__ == "__main__":
    app()
