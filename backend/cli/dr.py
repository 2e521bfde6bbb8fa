"""`v2g dr report`: every demand-response event of a day, what it asked and what the meters delivered."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from backend.cli.common import _probe_database
from backend.cli.options import DbOpt, _date
from backend.cli.output import console
from backend.cli.root import app

dr_app = typer.Typer(
    help="Demand response: events from the API, a file or an OpenADR VTN, and their delivery."
)
app.add_typer(dr_app, name="dr")


@dr_app.command("report")
def dr_report(
    db: DbOpt,
    date: Annotated[
        str, typer.Option(parser=_date("--date"), metavar="YYYY-MM-DD", help="UTC day of the events.")
    ],
) -> None:
    """Per DR event overlapping the day: where it came from, the answer given (OpenADR: optIn, optOut and
    why, mandatory), and per 15-minute interval ended so far the import it allowed against the site's
    metered net import (kW, means); the energy above the limit, kWh. Events a VTN sent that were declined
    are listed with their reason."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from backend.db.models import OpenAdrEventRow
    from backend.db.session import session_factory
    from backend.operations.openadr import delivery

    _probe_database(db)
    start = datetime.fromisoformat(date).replace(tzinfo=UTC)
    end = start + timedelta(days=1)
    now = datetime.now(UTC)
    with session_factory(db)() as session:
        report = delivery(session, start, end, until=now)
        declined = []  # what a VTN sent that is not held: by the day it asked for, else the day it came
        for e in session.scalars(select(OpenAdrEventRow).order_by(OpenAdrEventRow.received_at)):
            days = [datetime.fromisoformat(a["start"]) for a in e.asked] or [e.received_at]
            if not e.dr_event_ids and any(start <= t < end for t in days):
                declined.append(e)
    if not report and not declined:
        console.print(f"no demand-response event on {date}")
        return
    for d in report:
        where = "" if d.site_id is None else f", site {d.site_id}"
        table = Table(title=f"DR event {d.event_id} ({d.source}, {d.answer}{where})")
        table.add_column("interval (UTC)")
        table.add_column("asked ≤ kW", justify="right")
        table.add_column("metered kW", justify="right")
        table.add_column("above, kWh", justify="right")
        for i in d.intervals:
            table.add_row(
                f"{i.start:%Y-%m-%d %H:%M}",
                f"{i.asked_kw:,.1f}",
                f"{i.metered_kw:,.1f}",
                f"{i.excess_kwh:,.3f}",
            )
        console.print(table)
        if not d.intervals:
            console.print("  no interval of it has ended yet")
        else:
            verdict = "held" if d.held else f"missed by {d.excess_kwh:,.3f} kWh"
            console.print(f"  {len(d.intervals)} interval(s) ended: {verdict}")
    for e in declined:
        console.print(f"DR event {e.event_id} (openadr, {e.opt}): {e.reason or 'cancelled'}")
