"""`v2g owners`, `v2g stations` and `v2g keys`: the registries an operator fills."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select

from backend.cli.common import ID_RE, _csv_rows, _probe_database
from backend.cli.errors import (
    InvalidKeyError,
    InvalidOwnerFileError,
    InvalidRegistryFileError,
    UnknownOwnerError,
    UnknownStationError,
)
from backend.cli.options import DbOpt, _input_file, _role
from backend.cli.output import console
from backend.cli.root import app

owners_app = typer.Typer(help="The owner registry: owner ids and their payout addresses.")
app.add_typer(owners_app, name="owners")


@owners_app.command("import")
def owners_import(
    db: DbOpt,
    file: Annotated[
        Path,
        typer.Argument(parser=_input_file("FILE"), metavar="FILE", help="CSV with columns owner_id,address."),
    ],
) -> None:
    """Register owners and their addresses (a chain other than a local one settles only registered
    owners). Re-importing the same rows changes nothing; an owner registered with another address, a
    malformed address or id refuses the whole file."""
    from backend.db.models import Owner
    from backend.db.session import session_factory
    from backend.owners import system_addresses

    _probe_database(db)
    sessions = session_factory(db)
    added = 0
    with sessions.begin() as session:
        rows = _owner_rows(file, system_addresses(session))
        known = {o.id: o.address for o in session.scalars(select(Owner))}
        taken = {a: o for o, a in known.items()}
        for owner_id, address in rows:
            if owner_id in known:
                if known[owner_id] != address:
                    raise InvalidOwnerFileError(
                        f"{file}: owner {owner_id} is registered with {known[owner_id]}, not {address}"
                    )
                continue
            if address in taken:
                raise InvalidOwnerFileError(f"{file}: address {address} belongs to owner {taken[address]}")
            session.add(Owner(id=owner_id, address=address))
            known[owner_id], taken[address] = address, owner_id
            added += 1
    console.print(f"{added} owner(s) registered, {len(rows) - added} already known")


vehicles_app = typer.Typer(
    help="The vehicle registry: each owner's vehicles and their batteries and chargers."
)
app.add_typer(vehicles_app, name="vehicles")

VEHICLE_COLUMNS = ["vehicle_id", "owner_id", "battery_kwh", "charge_kw"]
VEHICLE_OPTIONAL = ["discharge_kw", "soc_min", "soc_max", "eta_charge", "eta_discharge"]


@vehicles_app.command("import")
def vehicles_import(
    db: DbOpt,
    file: Annotated[
        Path,
        typer.Argument(
            parser=_input_file("FILE"),
            metavar="FILE",
            help="CSV with columns vehicle_id,owner_id,battery_kwh,charge_kw and optionally discharge_kw "
            "(0: no V2G), soc_min, soc_max, eta_charge, eta_discharge (fractions).",
        ),
    ],
) -> None:
    """Register vehicles (as ``POST /vehicles`` does, with the same checks: the scheduler's own, and an
    owner that exists). A row already registered with the same values changes nothing; one with other
    values, a malformed value or an unknown owner refuses the whole file by line."""
    from pydantic import ValidationError

    from backend.api.schemas import VehicleCreate
    from backend.app.vehicles import check_vehicle
    from backend.db.models import Owner, Vehicle
    from backend.db.session import session_factory
    from scheduler.errors import SchedulerError

    _probe_database(db)
    rows = _csv_rows(file, VEHICLE_COLUMNS, InvalidRegistryFileError)
    parsed = []
    for line, row in rows:
        values = {"id": row["vehicle_id"], "owner_id": row["owner_id"]}
        for name in ("battery_kwh", "charge_kw", *VEHICLE_OPTIONAL):
            if row.get(name):
                try:
                    values[name] = float(row[name])  # type: ignore[assignment]  # a str|float dict
                except ValueError:
                    raise InvalidRegistryFileError(
                        f"{file}:{line}: {name} {row[name]!r} is not a number"
                    ) from None
        try:
            body = VehicleCreate.model_validate(values)
            check_vehicle(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidRegistryFileError(f"{file}:{line}: {where}: {first['msg']}") from None
        except SchedulerError as exc:
            raise InvalidRegistryFileError(f"{file}:{line}: {type(exc).__name__}: {exc}") from None
        parsed.append((line, body))
    added = 0
    with session_factory(db).begin() as session:
        owners = set(session.scalars(select(Owner.id)))
        for line, body in parsed:
            if body.owner_id not in owners:
                raise UnknownOwnerError(
                    f"{file}:{line}: vehicle {body.id}: no owner {body.owner_id} (v2g owners import)"
                )
            existing = session.get(Vehicle, body.id)
            if existing is not None:
                if any(getattr(existing, k) != v for k, v in body.model_dump().items()):
                    raise InvalidRegistryFileError(
                        f"{file}:{line}: vehicle {body.id} is registered with other values"
                    )
                continue
            session.add(Vehicle(**body.model_dump()))
            added += 1
    console.print(f"{added} vehicle(s) registered, {len(parsed) - added} already known")


def _owner_rows(file: Path, system: set[str]) -> list[tuple[str, str]]:
    """The file's (owner id, checksummed address) rows, each address by the one rule of
    :mod:`backend.owners` (EIP-55, not zero, not the deployment's own accounts or contracts)."""
    import re

    from backend.owners import OwnerAddressError, payout_address

    rows: list[tuple[str, str]] = []
    for line, row in _csv_rows(file, ["owner_id", "address"], InvalidOwnerFileError):
        owner_id, address = row["owner_id"], row["address"]
        if not re.fullmatch(ID_RE, owner_id):
            raise InvalidOwnerFileError(f"{file} line {line}: owner id {owner_id!r} is not an id")
        try:
            rows.append((owner_id, payout_address(address, system)))
        except OwnerAddressError as exc:
            raise InvalidOwnerFileError(f"{file} line {line}: {type(exc).__name__}: {exc}") from None
    if len({o for o, _ in rows}) != len(rows):
        raise InvalidOwnerFileError(f"{file}: an owner id appears twice")
    return rows


sites_app = typer.Typer(help="The grid connections stations are behind, each planned against its own limits.")
app.add_typer(sites_app, name="sites")


@sites_app.command("import")
def sites_import(
    db: DbOpt,
    file: Annotated[
        Path,
        typer.Argument(
            parser=_input_file("FILE"),
            metavar="FILE",
            help="CSV: site_id,import_limit_kw,export_limit_kw (kW the connection may draw and feed in).",
        ),
    ],
) -> None:
    """Register sites: grid connections with their own import and export limits. A station registered
    at a site (the stations file's site_id) is planned with the other stations there, against that
    site's limits, apart from every other site. Re-importing a site updates its limits; a malformed row
    refuses the whole file."""
    import re

    from backend.db.models import SiteRow
    from backend.db.session import session_factory

    parsed: list[tuple[str, float, float]] = []
    for line, row in _csv_rows(
        file, ["site_id", "import_limit_kw", "export_limit_kw"], InvalidRegistryFileError
    ):
        where = f"{file} line {line}"
        if not re.fullmatch(ID_RE, row["site_id"]):
            raise InvalidRegistryFileError(f"{where}: site id {row['site_id']!r} is not an id")
        limits = []
        for column in ("import_limit_kw", "export_limit_kw"):
            try:
                value = float(row[column])
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and 0 <= value <= 1e6):
                raise InvalidRegistryFileError(f"{where}: {column} {row[column]!r} (kW, 0 to 1,000,000)")
            limits.append(value)
        parsed.append((row["site_id"], limits[0], limits[1]))
    if len({p[0] for p in parsed}) != len(parsed):
        raise InvalidRegistryFileError(f"{file}: a site id appears twice")
    _probe_database(db)
    with session_factory(db).begin() as session:
        for site_id, import_kw, export_kw in parsed:
            site = session.get(SiteRow, site_id) or SiteRow(id=site_id)
            site.import_limit_kw, site.export_limit_kw = import_kw, export_kw
            session.add(site)
    console.print(f"{len(parsed)} site(s) registered")


stations_app = typer.Typer(
    help="The charging stations the CSMS accepts, and the idTokens that start a charge."
)
app.add_typer(stations_app, name="stations")


@stations_app.command("import")
def stations_import(
    db: DbOpt,
    file: Annotated[
        Path,
        typer.Argument(
            parser=_input_file("FILE"),
            metavar="FILE",
            help="CSV: station_id,ocpp_version (2.1|2.0.1),can_discharge (true|false),evses,"
            "periods_per_schedule[,meter_public_key (hex, 64 bytes)]"
            "[,max_power_kw (kW per EVSE, default 22; or one per EVSE: 11;22)]"
            "[,password (16-40 characters, stored hashed; empty: keep the current one)]"
            "[,site_id (a site of v2g sites import; empty: the operations loop's own connection)].",
        ),
    ],
) -> None:
    """Register charging stations (an unknown station is refused at connection). Re-importing a station
    updates it; a malformed row refuses the whole file. A station connects with HTTP Basic (user: its
    id, its password); the file's passwords are stored only as scrypt hashes (v2g stations password
    makes one)."""
    import re

    from backend.db.models import Station
    from backend.operations.auth import WeakPasswordError, check_password, hash_password

    parsed = []
    columns = ["station_id", "ocpp_version", "can_discharge", "evses", "periods_per_schedule"]
    has_site_column = False
    for line, row in _csv_rows(file, columns, InvalidRegistryFileError):
        where = f"{file} line {line}"
        if not re.fullmatch(ID_RE, row["station_id"]):
            raise InvalidRegistryFileError(f"{where}: station id {row['station_id']!r} is not an id")
        if row["ocpp_version"] not in ("2.1", "2.0.1"):
            raise InvalidRegistryFileError(f"{where}: ocpp_version {row['ocpp_version']!r} (2.1 or 2.0.1)")
        if row["can_discharge"].lower() not in ("true", "false"):
            raise InvalidRegistryFileError(f"{where}: can_discharge {row['can_discharge']!r} (true or false)")
        try:
            evses, periods = int(row["evses"]), int(row["periods_per_schedule"])
        except ValueError:
            raise InvalidRegistryFileError(
                f"{where}: evses and periods_per_schedule are whole numbers"
            ) from None
        if not (1 <= evses <= 64 and 1 <= periods <= 1024):
            raise InvalidRegistryFileError(f"{where}: evses 1-64, periods_per_schedule 1-1024")
        key = row.get("meter_public_key") or None
        if key is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]{128}", key):
            raise InvalidRegistryFileError(f"{where}: meter_public_key must be 64 bytes of hex")
        can_discharge = row["can_discharge"].lower() == "true"
        if can_discharge and row["ocpp_version"] != "2.1":
            raise InvalidRegistryFileError(f"{where}: only an OCPP 2.1 station can discharge (V2G setpoints)")
        power_text = row.get("max_power_kw") or ""
        power: list[float] | None = None
        if power_text:
            power = []
            for part in power_text.split(";"):
                try:
                    value = float(part)
                except ValueError:
                    value = math.nan
                if not (math.isfinite(value) and 0 < value <= 1000):
                    raise InvalidRegistryFileError(
                        f"{where}: max_power_kw {power_text!r} (kW per EVSE, more than 0 and at most 1000; "
                        "one for all EVSEs, or one per EVSE separated by ;)"
                    )
                power.append(value)
            if len(power) not in (1, evses):
                raise InvalidRegistryFileError(
                    f"{where}: max_power_kw {power_text!r} gives {len(power)} ratings for {evses} EVSEs"
                )
        password = row.get("password") or None
        if password is not None:
            try:
                check_password(password)
            except WeakPasswordError as exc:
                raise InvalidRegistryFileError(f"{where}: {exc}") from None
        has_site_column = "site_id" in row  # absent: each station's site stays as it is
        site = row.get("site_id") or None
        if site is not None and not re.fullmatch(ID_RE, site):
            raise InvalidRegistryFileError(f"{where}: site id {site!r} is not an id")
        parsed.append(
            (
                row["station_id"],
                row["ocpp_version"],
                can_discharge,
                evses,
                periods,
                key and key.removeprefix("0x"),
                power,
                password,
                site,
            )
        )
    if len({p[0] for p in parsed}) != len(parsed):
        raise InvalidRegistryFileError(f"{file}: a station id appears twice")
    _probe_database(db)
    from concurrent.futures import ThreadPoolExecutor

    from backend.db.models import SiteRow
    from backend.db.session import session_factory

    named = {p[8] for p in parsed if p[8] is not None}
    if named:
        with session_factory(db)() as session:
            known = set(session.scalars(select(SiteRow.id).where(SiteRow.id.in_(named))))
        if named - known:
            raise InvalidRegistryFileError(
                f"{file}: site {sorted(named - known)[0]} is not registered (v2g sites import registers it)"
            )

    # scrypt (~40 ms a password) releases the GIL: hashed on every core, before the transaction
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        hashes = list(pool.map(lambda p: None if p[7] is None else hash_password(p[7]), parsed))
    unset = []
    with session_factory(db).begin() as session:
        for (station_id, version, can_discharge, evses, periods, key, power, _, site), hashed in zip(
            parsed, hashes, strict=True
        ):
            station = session.get(Station, station_id) or Station(id=station_id, boots=0, max_power_kw=22.0)
            station.ocpp_version, station.can_discharge, station.evses = version, can_discharge, evses
            if has_site_column:
                station.site_id = site
            station.periods_per_schedule, station.meter_public_key = periods, key
            if power is not None:  # one rating for every EVSE, or one each
                station.max_power_kw = max(power)
                station.evse_max_kw = power if len(power) > 1 else None
            if hashed is not None:
                station.password_hash = hashed
            if station.password_hash is None:
                unset.append(station_id)
            session.add(station)
    console.print(f"{len(parsed)} station(s) registered")
    if unset:
        shown = ", ".join(unset[:5]) + (f" and {len(unset) - 5} more" if len(unset) > 5 else "")
        console.print(
            f"{len(unset)} station(s) without a password, refused at connection ({shown}): "
            "`v2g stations password ID` sets one"
        )


@stations_app.command("password")
def stations_password(
    db: DbOpt,
    station_id: Annotated[str, typer.Argument(metavar="STATION_ID", help="The station's id.")],
) -> None:
    """Give a station a new random password (its HTTP Basic password, OCPP security profiles 1 and 2)
    and print it once; only its scrypt hash is stored. The old password is refused from now on."""
    from backend.db.models import Station
    from backend.db.session import session_factory
    from backend.operations.auth import hash_password, new_password

    _probe_database(db)
    password = new_password()
    hashed = hash_password(password)
    with session_factory(db).begin() as session:
        station = session.get(Station, station_id)
        if station is None:
            raise UnknownStationError(f"STATION_ID {station_id}: no such station in {db}")
        station.password_hash = hashed
    console.print(password, markup=False, highlight=False)


@stations_app.command("tokens")
def stations_tokens(
    db: DbOpt,
    file: Annotated[
        Path,
        typer.Argument(parser=_input_file("FILE"), metavar="FILE", help="CSV: token,vehicle_id."),
    ],
) -> None:
    """Register idTokens (RFID cards, apps, contracts) and the vehicle each authorises."""
    import re

    from backend.db.models import IdTokenRow, Vehicle
    from backend.db.session import session_factory

    rows = _csv_rows(file, ["token", "vehicle_id"], InvalidRegistryFileError)
    for line, row in rows:
        if not re.fullmatch(ID_RE, row["token"]) or not re.fullmatch(ID_RE, row["vehicle_id"]):
            raise InvalidRegistryFileError(f"{file} line {line}: token and vehicle_id must be ids")
    if len({r["token"] for _, r in rows}) != len(rows):
        raise InvalidRegistryFileError(f"{file}: a token appears twice")
    _probe_database(db)
    with session_factory(db).begin() as session:
        for line, row in rows:
            if session.get(Vehicle, row["vehicle_id"]) is None:
                raise InvalidRegistryFileError(
                    f"{file} line {line}: no vehicle {row['vehicle_id']} (POST /vehicles)"
                )
            token = session.get(IdTokenRow, row["token"]) or IdTokenRow(token=row["token"])
            token.vehicle_id = row["vehicle_id"]
            session.add(token)
    console.print(f"{len(rows)} idToken(s) registered")


keys_app = typer.Typer(help="API keys (stored hashed; each key is shown once).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    db: DbOpt,
    role: Annotated[
        str, typer.Option(parser=_role("--role"), metavar="ROLE", help="operator, owner or auditor.")
    ],
    owner: Annotated[str | None, typer.Option(help="The owner id (owner keys only).")] = None,
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
) -> None:
    """Create an API key and print it once."""
    from backend.api.security import Role, create_api_key
    from backend.db.models import Owner
    from backend.db.session import session_factory

    parsed = Role(role)
    if (parsed is Role.OWNER) != (owner is not None):
        raise InvalidKeyError(f"--role {role}: owner keys name their owner (--owner); other keys name none")
    _probe_database(db)
    sessions = session_factory(db)
    with sessions.begin() as session:
        if owner is not None and session.get(Owner, owner) is None:
            raise UnknownOwnerError(f"--owner {owner}: no such owner in {db}")
        key = create_api_key(session, parsed, owner_id=owner, label=label)
    console.print(key)
