"""The `v2g` command line on real data, through typer's runner."""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from backend.cli import app
from backend.db.models import Owner, PeriodEntry
from backend.db.session import session_factory
from backend.settlement.tariff import TOKEN_DECIMALS

runner = CliRunner()


def test_schedule_writes_plot_and_integer_trades(tmp_path: Path) -> None:
    plot, trades = tmp_path / "day.png", tmp_path / "trades.csv"
    result = runner.invoke(
        app, ["schedule", "--evs", "40", "--date", "2023-07-02", "--plot", str(plot), "--trades", str(trades)]
    )
    assert result.exit_code == 0, result.output
    assert "uncontrolled" in result.output and "v2g" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(trades.open()))
    assert rows and all(int(r["energy_wh"]) > 0 for r in rows)
    assert {r["direction"] for r in rows} <= {"charge", "discharge"}


def test_schedule_refuses_a_malformed_price_file(tmp_path: Path) -> None:
    bad = tmp_path / "prices.csv"
    bad.write_text("utc,eur_mwh\n2023-07-02 00:00:00,abc\n")
    result = runner.invoke(app, ["schedule", "--evs", "5", "--prices", str(bad)])
    assert result.exit_code == 2
    assert "NonNumericValueError" in result.output and "prices.csv:2" in result.output


def test_demo_settles_and_audits_end_to_end(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    result = runner.invoke(app, ["demo", "--evs", "20", "--date", "2023-07-02", "--db", db])
    assert result.exit_code == 0, result.output
    assert "reconciliation: OK" in result.output and "owners paid:" in result.output
    # money in EUR with the token's decimals and the sign stated once; the summary adds up as printed
    flat = " ".join(result.output.split())
    assert flat.count("1 EUR = 1,000,000 base units") == 1 and flat.count("base units") == 1
    summary = re.search(
        r"V2G schedule: import (\S+) − export (\S+) \+ wear (\S+) \+ penalty (\S+) = net (\S+) EUR", flat
    )
    assert summary, result.output
    imported, exported, wear, penalty, net = (Decimal(x.replace(",", "")) for x in summary.groups())
    assert imported - exported + wear + penalty == net
    statements = re.findall(r"statement owner-\d+: .* amount ([+-][\d,]+\.\d{6}) EUR", result.output)
    assert len(statements) == 3, result.output

    statement = runner.invoke(app, ["audit", "statement", "--owner", "owner-00003", "--db", db])
    assert statement.exit_code == 0, statement.output
    assert "20230702" in statement.output
    total = re.search(r"total amount: ([+-][\d,]+\.\d{6}) EUR", statement.output)
    assert total, statement.output
    with session_factory(db)() as session:
        entry = session.scalars(select(PeriodEntry).where(PeriodEntry.owner_id == "owner-00003")).one()
    assert Decimal(total.group(1).replace(",", "")) * 10**TOKEN_DECIMALS == entry.amount

    proof = runner.invoke(app, ["audit", "proof", "--period", "20230702", "--entry", "0", "--db", db])
    assert proof.exit_code == 0 and "valid" in proof.output

    missing = runner.invoke(app, ["audit", "proof", "--period", "1", "--entry", "0", "--db", db])
    assert missing.exit_code == 2
    assert missing.output.strip().startswith("EntryNotFoundError: --period 1 --entry 0: ")
    assert len(missing.output.strip().splitlines()) == 1

    nobody = runner.invoke(app, ["audit", "statement", "--owner", "nobody", "--db", db])
    assert nobody.exit_code == 2
    assert nobody.output.strip() == f"UnknownOwnerError: --owner nobody: no such owner in {db}"
    # a registered owner with nothing settled gets an empty statement through every door, not an error
    with session_factory(db).begin() as session:
        session.add(Owner(id="newcomer", address="0x" + "ab" * 20))
    newcomer = runner.invoke(app, ["audit", "statement", "--owner", "newcomer", "--db", db])
    assert newcomer.exit_code == 0, newcomer.output
    assert "no periods settled yet" in newcomer.output

    owner_key = runner.invoke(
        app, ["keys", "create", "--role", "owner", "--owner", "owner-00003", "--db", db]
    )
    assert owner_key.exit_code == 0 and owner_key.output.startswith("v2g_")


def test_keys_create_stores_only_the_hash(tmp_path: Path) -> None:
    from backend.api.security import hash_key
    from backend.db.models import ApiKey

    db = f"sqlite:///{tmp_path / 'keys.sqlite'}"
    result = runner.invoke(app, ["keys", "create", "--role", "auditor", "--db", db])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    with session_factory(db)() as session:
        (row,) = session.query(ApiKey).all()
    assert row.key_hash == hash_key(key) and key not in row.key_hash and row.role == "auditor"
    bad = runner.invoke(app, ["keys", "create", "--role", "owner", "--db", db])
    assert bad.exit_code == 2 and "InvalidKey" in bad.output


def test_prices_import_stores_hours_replaces_and_refuses_a_bad_file_whole(tmp_path: Path) -> None:
    from backend.db.models import PricePoint

    db = f"sqlite:///{tmp_path / 'prices.sqlite'}"
    good = tmp_path / "prices.csv"
    good.write_text(
        "utc,eur_mwh\n2026-12-08 00:00:00,81.5\n2026-12-08 01:00:00,-3.25\n2026-12-08 03:00:00,70\n"
    )
    done = runner.invoke(app, ["prices", "import", str(good), "--db", db])
    assert done.exit_code == 0, done.output
    assert "3 hour(s) from 2026-12-08 00:00 to 2026-12-08 03:00 UTC stored (0 replaced)" in done.output
    assert "1 hour(s) missing from the file, not stored: 1 from 2026-12-08 02:00" in done.output
    good.write_text("utc,eur_mwh\n2026-12-08 01:00:00,5\n")
    assert "(1 replaced)" in runner.invoke(app, ["prices", "import", str(good), "--db", db]).output

    def stored() -> dict[str, float]:
        with session_factory(db)() as session:
            return {f"{p.utc:%H}": p.eur_mwh for p in session.scalars(select(PricePoint))}

    assert stored() == {"00": 81.5, "01": 5.0, "03": 70.0}
    for text, name in (
        ("utc,eur_mwh\n2026-12-09 00:00:00,1\n2026-12-09 00:00:00,2\n", "DuplicateTimestampError"),
        ("utc,eur_mwh\n2026-12-09 00:30:00,1\n", "MalformedTimestampError"),
        ("utc,eur_mwh\n2026-12-09 00:00:00,cheap\n", "NonNumericValueError"),
        ("when,price\n2026-12-09 00:00:00,1\n", "MissingColumnError"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        refused = runner.invoke(app, ["prices", "import", str(bad), "--db", db])
        assert refused.exit_code == 2 and refused.output.startswith(name), (text, refused.output)
        assert len(refused.output.strip().splitlines()) == 1
    assert stored() == {"00": 81.5, "01": 5.0, "03": 70.0}  # nothing of a refused file


DATA = Path(__file__).resolve().parents[1] / "data"


def test_prices_import_reads_entsoe_day_ahead_documents(tmp_path: Path) -> None:
    """The transparency platform's A44 documents for the NL day of 2023-07-02 (CEST: 22:00Z to 22:00Z):
    hourly with every position (A01), and at 15 minutes with a position only where the price changes
    (A03, as published since the 15-minute market), averaged to the planner's hours. Both give the day's
    24 real prices; an acknowledgement (no data) is refused by name."""
    import pandas as pd

    from backend.db.models import PricePoint
    from scheduler.datasets import load_prices

    truth = load_prices().window("2023-07-01 22:00", "2023-07-02 22:00")
    for name, note in (
        ("entsoe_A44_NL_2023-07-02.xml", "ENTSO-E A44, hourly"),
        ("entsoe_A44_NL_PT15M_A03.xml", "ENTSO-E A44, PT15M averaged to hours"),
    ):
        db = f"sqlite:///{tmp_path / (name + '.sqlite')}"
        done = runner.invoke(app, ["prices", "import", str(DATA / name), "--db", db])
        assert done.exit_code == 0, done.output
        text = " ".join(done.output.split())
        assert (
            f"24 hour(s) from 2023-07-01 22:00 to 2023-07-02 21:00 UTC stored (0 replaced) in {db} ({note})"
            in text
        )
        with session_factory(db)() as session:
            stored = {p.utc: p.eur_mwh for p in session.scalars(select(PricePoint))}
        assert stored == {
            t.to_pydatetime(): v for t, v in zip(pd.DatetimeIndex(truth.index), truth, strict=True)
        }
        assert min(stored.values()) == -500.0  # the day's negative prices kept
    ack = tmp_path / "ack.xml"
    ack.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<Acknowledgement_MarketDocument '
        'xmlns="urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0"><mRID>x</mRID>'
        "<Reason><code>999</code><text>No matching data found</text></Reason>"
        "</Acknowledgement_MarketDocument>\n"
    )
    refused = runner.invoke(
        app, ["prices", "import", str(ack), "--db", f"sqlite:///{tmp_path / 'ack.sqlite'}"]
    )
    assert refused.exit_code == 2 and refused.output.startswith("NoPricesInDocumentError: "), refused.output


def test_the_example_registry_files_import_and_a_bad_vehicle_file_changes_nothing(tmp_path: Path) -> None:
    """examples/*.csv, in the README's order: owners, vehicles, stations, tokens; a vehicle file with one
    bad row (an unknown owner, soc_min above soc_max, a word for a number) refuses the whole file."""
    from backend.db.models import IdTokenRow, Station, Vehicle

    examples = Path(__file__).resolve().parents[2] / "examples"
    db = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    for group, name, said in (
        ("owners", "owners.csv", "2 owner(s) registered"),
        ("vehicles", "vehicles.csv", "2 vehicle(s) registered, 0 already known"),
        ("vehicles", "vehicles.csv", "0 vehicle(s) registered, 2 already known"),
        ("stations", "stations.csv", "2 station(s) registered"),
    ):
        done = runner.invoke(app, [group, "import", str(examples / name), "--db", db])
        assert done.exit_code == 0 and said in done.output, done.output
    done = runner.invoke(app, ["stations", "tokens", str(examples / "tokens.csv"), "--db", db])
    assert done.exit_code == 0 and "2 idToken(s) registered" in done.output, done.output
    with session_factory(db)() as session:
        ev = session.get_one(Vehicle, "ev-0001")
        assert (ev.owner_id, ev.battery_kwh, ev.discharge_kw, ev.soc_min, ev.soc_max) == (
            "owner-0001",
            60,
            11,
            0.2,
            0.9,
        )
        assert session.get_one(Vehicle, "ev-0002").discharge_kw == 0
        assert (
            len(list(session.scalars(select(Station)))) == 2
            and len(list(session.scalars(select(IdTokenRow)))) == 2
        )
    header = "vehicle_id,owner_id,battery_kwh,charge_kw,soc_min,soc_max\nev-0003,owner-0001,50,7,0.1,0.9\n"
    for bad, name in (
        ("ev-0004,nobody,60,11,0.1,0.9\n", "UnknownOwnerError: "),
        ("ev-0004,owner-0002,60,11,0.9,0.2\n", "InvalidRegistryFileError: "),
        ("ev-0004,owner-0002,sixty,11,0.1,0.9\n", "InvalidRegistryFileError: "),
        ("ev-0001,owner-0001,61,11,0.2,0.9\n", "InvalidRegistryFileError: "),  # registered with other values
    ):
        file = tmp_path / "vehicles.csv"
        file.write_text(header + bad)
        refused = runner.invoke(app, ["vehicles", "import", str(file), "--db", db])
        assert refused.exit_code == 2 and refused.output.startswith(name) and ":3: " in refused.output, (
            refused.output
        )
    with session_factory(db)() as session:
        assert session.get(Vehicle, "ev-0003") is None  # nothing of a refused file
