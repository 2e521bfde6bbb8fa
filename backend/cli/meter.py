"""`v2g meter ...`: the metering service, its own process, key and database role."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from backend.cli.common import _policy
from backend.cli.errors import UsageError
from backend.cli.options import ClockToleranceOpt, ExistingDbOpt, FeeOpt, _integer
from backend.cli.output import console
from backend.cli.root import app

meter_app = typer.Typer(help="The metering service: its own process and key; it signs metered periods.")
app.add_typer(meter_app, name="meter")


@meter_app.command("serve")
def meter_serve(
    db: ExistingDbOpt,
    port: Annotated[
        int, typer.Option(parser=_integer("--port", 0, 65535), metavar="PORT", help="0: any free port.")
    ] = 8700,
    fee_bps: FeeOpt = None,
    clock_tolerance_s: ClockToleranceOpt = 900.0,
) -> None:
    """Run the metering service until stopped (settlers reach it at V2G_METER_URL). Its key:
    V2G_METER_KEY or V2G_METER_KEYSTORE + V2G_KEYSTORE_PASSWORD, in this process only; on a local chain
    without one, the chain's dev meter key."""
    from backend.metering.replay import MeterPolicy
    from backend.metering.service import serve

    serve(db, port, _policy(fee_bps).fee_bps, MeterPolicy(clock_tolerance_s=clock_tolerance_s))


@meter_app.command("role")
def meter_role(
    db: ExistingDbOpt,
    role: Annotated[
        str, typer.Option(help="The PostgreSQL role the metering service connects as.")
    ] = "v2g_meter",
) -> None:
    """Create (or reset) the metering service's own PostgreSQL role: it reads the raw frames and the
    registry and inserts its record of what it signed, nothing else. The password: V2G_METER_DB_PASSWORD,
    or a new random one printed once. Start the service with `v2g meter serve --db <that role's URL>`."""
    import secrets

    from sqlalchemy.engine import make_url

    from backend.db.roles import RoleError, grant_meter_role
    from backend.db.session import make_engine

    password = os.environ.get("V2G_METER_DB_PASSWORD") or secrets.token_urlsafe(24)
    engine = make_engine(db)
    try:
        with engine.begin() as connection:
            grant_meter_role(connection, role, password)
    except RoleError as exc:
        raise UsageError(f"--role {role}: {exc}") from None
    finally:
        engine.dispose()
    url = make_url(db).set(username=role, password="PASSWORD")
    console.print(f"role {role} can read field data and insert meter signatures; its URL:", markup=False)
    console.print(url.render_as_string(hide_password=False), markup=False)
    if not os.environ.get("V2G_METER_DB_PASSWORD"):
        console.print(f"PASSWORD = {password} (shown once)", markup=False)
