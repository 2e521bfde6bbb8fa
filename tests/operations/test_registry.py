"""The station and idToken registry from the command line: named refusals that change nothing."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from backend.cli import app
from backend.db.models import IdTokenRow, Owner, Station, Vehicle
from backend.db.session import session_factory

runner = CliRunner()


def test_stations_and_tokens_import_and_refuse_bad_files(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    sessions = session_factory(db)
    with sessions.begin() as s:
        s.add(Owner(id="alice", address="0x" + "22" * 20))
        s.add(Vehicle(id="ev1", owner_id="alice", battery_kwh=60, charge_kw=11))
    good = tmp_path / "stations.csv"
    good.write_text(
        "station_id,ocpp_version,can_discharge,evses,periods_per_schedule,meter_public_key\n"
        f"CS1,2.1,true,2,24,{'ab' * 64}\nCS2,2.0.1,false,1,12,\n"
    )
    result = runner.invoke(app, ["stations", "import", str(good), "--db", db])
    assert result.exit_code == 0 and "2 station(s) registered" in result.output, result.output
    with sessions() as s:
        cs1, cs2 = s.get(Station, "CS1"), s.get(Station, "CS2")
        assert cs1 is not None and (cs1.ocpp_version, cs1.can_discharge, cs1.evses, cs1.meter_public_key) == (
            "2.1",
            True,
            2,
            "ab" * 64,
        )
        assert cs2 is not None and (cs2.can_discharge, cs2.periods_per_schedule, cs2.meter_public_key) == (
            False,
            12,
            None,
        )

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "station_id,ocpp_version,can_discharge,evses,periods_per_schedule\nCS3,2.1,false,1,24\nCS4,2.0.1,true,1,24\n"
    )
    refused = runner.invoke(app, ["stations", "import", str(bad), "--db", db])
    assert refused.exit_code == 2
    assert (
        refused.output.strip()
        == f"InvalidRegistryFileError: {bad} line 3: only an OCPP 2.1 station can discharge (V2G setpoints)"
    )
    with sessions() as s:
        assert s.get(Station, "CS3") is None  # the whole file refused

    tokens = tmp_path / "tokens.csv"
    tokens.write_text("token,vehicle_id\ntok-1,ev1\ntok-2,ev9\n")
    refused = runner.invoke(app, ["stations", "tokens", str(tokens), "--db", db])
    assert refused.exit_code == 2 and "line 3: no vehicle ev9" in refused.output
    with sessions() as s:
        assert list(s.scalars(select(IdTokenRow))) == []  # nothing half-imported
    tokens.write_text("token,vehicle_id\ntok-1,ev1\n")
    assert runner.invoke(app, ["stations", "tokens", str(tokens), "--db", db]).exit_code == 0
    with sessions() as s:
        row = s.get(IdTokenRow, "tok-1")
        assert row is not None and row.vehicle_id == "ev1"
