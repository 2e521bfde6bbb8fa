"""The service's jobs on the market's clock: price files dropped in a directory imported (and moved) by
the running server, each run a row of ``/jobs``; the days due for settlement chosen from the data."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.api.app import create_app
from backend.api.market_clock import due_days
from backend.api.security import Role, create_api_key
from backend.db.models import OcppTransaction, PricePoint, Station
from backend.db.session import session_factory
from tests.backend.conftest import settings_for

DATA = Path(__file__).resolve().parents[1] / "data"


def test_dropped_price_files_are_imported_by_the_running_server_and_moved(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(DATA / "entsoe_A44_NL_PT15M_A03.xml", inbox / "nl-2023-07-02.xml")
    (inbox / "broken.csv").write_text("utc,eur_mwh\n2023-07-03 00:30:00,1\n")
    (inbox / "notes.txt").write_text("not a price file: left alone\n")
    before = time.time() - 60
    for name in ("nl-2023-07-02.xml", "broken.csv"):
        os.utime(inbox / name, (before, before))  # dropped a minute ago
    shutil.copy(DATA / "entsoe_A44_NL_PT15M_A03.xml", inbox / "arriving.xml")  # still being copied: waits
    shutil.copy(DATA / "entsoe_A44_NL_PT15M_A03.xml", inbox / ".nl.xml.Xa81")  # scp's temporary name
    os.utime(inbox / ".nl.xml.Xa81", (before, before))
    settings = settings_for(tmp_path, service_jobs=True, prices_drop_dir=str(inbox), prices_every_s=3600)
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.v2g.sessions.begin() as db:
            key = create_api_key(db, Role.OPERATOR)
        deadline = time.monotonic() + 60
        jobs: list[dict[str, object]] = []
        while time.monotonic() < deadline:  # the tick at start-up
            jobs = client.get("/jobs", params={"kind": "import_prices"}, headers={"X-API-Key": key}).json()
            if len(jobs) == 2 and all(j["status"] in ("succeeded", "failed") for j in jobs):
                break
            time.sleep(0.1)
    by_file = {Path(str(j["params"]["file"])).name: j for j in jobs}  # type: ignore[index]
    good, bad = by_file["nl-2023-07-02.xml"], by_file["broken.csv"]
    assert good["status"] == "succeeded" and good["params"]["source"] == "market-clock"  # type: ignore[index]
    assert good["result"]["stored"] == 24  # type: ignore[index]
    assert good["result"]["note"] == "ENTSO-E A44, PT15M averaged to hours"  # type: ignore[index]
    assert bad["status"] == "failed" and str(bad["error"]).startswith("MalformedTimestampError: ")
    assert sorted(p.name for p in inbox.iterdir()) == [
        ".nl.xml.Xa81",
        "arriving.xml",
        "imported",
        "notes.txt",
        "refused",
    ]
    assert [p.name for p in (inbox / "imported").iterdir()] == ["nl-2023-07-02.xml"]
    assert sorted(p.name for p in (inbox / "refused").iterdir()) == ["broken.csv", "broken.csv.error"]
    assert (inbox / "refused" / "broken.csv.error").read_text().startswith("MalformedTimestampError: ")
    with session_factory(settings.database_url)() as db:
        assert db.scalar(select(PricePoint).order_by(PricePoint.utc)).utc == datetime(  # type: ignore[union-attr]
            2023, 7, 1, 22, tzinfo=UTC
        )


def test_days_due_for_settlement_are_the_ended_days_with_data(tmp_path: Path) -> None:
    sessions = session_factory(f"sqlite:///{tmp_path / 'due.sqlite'}")
    d = datetime(2026, 12, 1, tzinfo=UTC)
    with sessions.begin() as db:
        db.add(Station(id="S", ocpp_version="2.1", can_discharge=True, evses=1, periods_per_schedule=24))
        db.flush()
        # Dec 1, Dec 2 23:00 to Dec 3 01:00 (across midnight), none on Dec 4, Dec 5 left open by its station
        for tx, start, end in (
            ("a", d + timedelta(hours=9), d + timedelta(hours=10)),
            ("b", d + timedelta(days=1, hours=23), d + timedelta(days=2, hours=1)),
            ("c", d + timedelta(days=4, hours=8), None),
        ):
            db.add(
                OcppTransaction(station_id="S", transaction_id=tx, evse_id=1, started_at=start, ended_at=end)
            )
    grace = timedelta(minutes=15)
    with sessions() as db:
        # not before the day's grace has passed: at 00:10 on Dec 2, Dec 1 is not due yet
        assert due_days(db, d + timedelta(days=1, minutes=10), grace) == []
        assert due_days(db, d + timedelta(days=1, minutes=20), grace) == ["2026-12-01"]
        # each day a transaction touched; the open one's days as they end (its settlement closes it)
        assert due_days(db, d + timedelta(days=6, minutes=20), grace) == [
            "2026-12-01",
            "2026-12-02",
            "2026-12-03",
            "2026-12-05",
            "2026-12-06",
        ]


def test_a_day_in_its_challenge_window_is_not_settled_again_and_the_next_days_are(tmp_path: Path) -> None:
    """Day 1 proposed (waiting out its challenge window), day 2 built, day 3 claimed, day 4 without a
    period: the settle tick takes days 2 and 4 (day 1 is the finalise tick's), never day 1 again."""
    from backend.db.models import Deployment, Period, PeriodStatus

    sessions = session_factory(f"sqlite:///{tmp_path / 'due.sqlite'}")
    d = datetime(2026, 12, 1, tzinfo=UTC)
    with sessions.begin() as db:
        db.add(Station(id="S", ocpp_version="2.1", can_discharge=True, evses=1, periods_per_schedule=24))
        deployment = Deployment(
            chain_id=1,
            token_address="0x" + "1" * 40,
            settlement_address="0x" + "2" * 40,
            block_number=1,
            artifact_hashes={},
        )
        db.add(deployment)
        db.flush()
        for k, status in enumerate((PeriodStatus.PROPOSED, PeriodStatus.BUILT, PeriodStatus.CLAIMED, None)):
            day = d + timedelta(days=k)
            db.add(
                OcppTransaction(
                    station_id="S",
                    transaction_id=f"t{k}",
                    evse_id=1,
                    started_at=day + timedelta(hours=9),
                    ended_at=day + timedelta(hours=10),
                )
            )
            if status is not None:
                db.add(
                    Period(
                        id=int(f"{day:%Y%m%d}"),
                        deployment_id=deployment.id,
                        starts_at=day,
                        ends_at=day + timedelta(days=1),
                        status=status,
                        root="0x" + "0" * 64,
                        total_credit=0,
                        total_debit=0,
                        entry_count=0,
                    )
                )
    with sessions() as db:
        assert due_days(db, d + timedelta(days=5), timedelta(minutes=15)) == ["2026-12-02", "2026-12-04"]
