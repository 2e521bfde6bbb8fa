"""`v2g prices import FILE`: day-ahead prices into the database, as ``POST /prices`` stores them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backend.cli.common import _probe_database
from backend.cli.options import DbOpt, _input_file
from backend.cli.output import console
from backend.cli.root import app

prices_app = typer.Typer(help="Day-ahead prices: the hours the planner and the settlement price energy at.")
app.add_typer(prices_app, name="prices")


@prices_app.command("import")
def prices_import(
    db: DbOpt,
    file: Annotated[
        Path,
        typer.Argument(
            parser=_input_file("FILE"),
            metavar="FILE",
            help="CSV with columns utc,eur_mwh (UTC start of hour, YYYY-MM-DD HH:MM:SS; EUR/MWh), or an "
            "ENTSO-E day-ahead price document (A44 XML, as the transparency platform publishes it).",
        ),
    ],
) -> None:
    """Store hourly day-ahead prices (negative prices kept; hours already stored are replaced). A malformed
    line, a duplicate hour or one out of order refuses the whole file by name and stores nothing; hours
    missing from the file are listed, never invented."""
    from backend.app.prices import read_price_file, store_prices
    from backend.db.session import session_factory

    _probe_database(db)
    prices = read_price_file(file)
    result = store_prices(session_factory(db), prices.points, str(file))
    console.print(
        f"{result.stored:,} hour(s) from {result.first:%Y-%m-%d %H:%M} to {result.last:%Y-%m-%d %H:%M} UTC "
        f"stored ({result.replaced:,} replaced) in {db} ({prices.note})"
    )
    if prices.gaps:
        missing = sum(hours for _, hours in prices.gaps)
        shown = ", ".join(f"{hours} from {start:%Y-%m-%d %H:%M}" for start, hours in prices.gaps[:5])
        more = f" and {len(prices.gaps) - 5} more runs" if len(prices.gaps) > 5 else ""
        console.print(f"{missing} hour(s) missing from the file, not stored: {shown}{more} (UTC)")
