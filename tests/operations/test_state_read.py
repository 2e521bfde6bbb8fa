"""The state a re-plan starts from, read alike from SQLite and PostgreSQL (whose first-sample query is its
own: a LATERAL join, one probe per transaction)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import MeterReading, OcppTransaction, Owner, PlugSession, Station, Vehicle
from backend.db.session import session_factory
from backend.operations.loop import OperationsLoop
from scheduler.datasets import load_prices
from tests.postgres import fresh_database, throwaway_postgres

T0 = datetime(2023, 9, 12, 10, tzinfo=UTC)
DAY = T0.replace(hour=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        yield session_factory(f"sqlite:///{tmp_path / 'state.sqlite'}")
        return
    with throwaway_postgres() as cluster:
        yield session_factory(fresh_database(cluster, "state"))


def _seed(sessions: sessionmaker[Session]) -> None:
    """Two cars plugged in at 10:00 with 30 kWh, η 0.9 both ways. Car ``a``'s samples were stored out of
    their order in time, two of them at the same instant; car ``b`` gave energy back as well."""
    with sessions.begin() as db:
        db.add(Owner(id="alice", address="0x" + "11" * 20))
        db.flush()
        for car in ("a", "b"):
            db.add(
                Vehicle(id=car, owner_id="alice", battery_kwh=60, charge_kw=11, discharge_kw=11,
                        soc_min=0.1, eta_charge=0.9, eta_discharge=0.9)
            )  # fmt: skip
            db.add(
                Station(
                    id=f"S{car}", ocpp_version="2.1", can_discharge=True, evses=1, periods_per_schedule=24
                )
            )
            db.flush()
            db.add(
                PlugSession(id=f"p-{car}", vehicle_id=car, arrival=T0, departure=T0 + timedelta(hours=4),
                            arrival_kwh=30, target_kwh=50)
            )  # fmt: skip
            db.flush()
            db.add(
                OcppTransaction(station_id=f"S{car}", transaction_id=f"tx-{car}", evse_id=1, vehicle_id=car,
                                plug_session_id=f"p-{car}", started_at=T0)
            )  # fmt: skip
        db.flush()
        # (car, seq, minutes after 10:00, import Wh, export Wh), in the order stored
        samples = [
            ("a", 0, 10, 2000, 0),
            ("a", 1, 5, 1500, 0),  # earlier in time, stored later: the first sample
            ("a", 2, 5, 1700, 0),  # the same instant, stored after it: not the first
            ("a", 3, 20, 4000, 0),
            ("b", 0, 0, 1000, 100),
            ("b", 1, 30, 3000, 1000),
        ]
        for car, seq, minutes, imported, exported in samples:
            at = T0 + timedelta(minutes=minutes)
            db.add(
                MeterReading(station_id=f"S{car}", transaction_id=f"tx-{car}", seq_no=seq, measured_at=at,
                             received_at=at, import_wh=imported, export_wh=exported)
            )  # fmt: skip
            db.flush()  # one row at a time: ids in the order stored
        for car, seq, minutes, imported, exported in (("a", 3, 20, 4000, 0), ("b", 1, 30, 3000, 1000)):
            tx = db.get(OcppTransaction, (f"S{car}", f"tx-{car}"))
            assert tx is not None
            tx.last_seq_no, tx.last_measured_at = seq, T0 + timedelta(minutes=minutes)
            tx.last_import_wh, tx.last_export_wh = imported, exported


def test_the_energy_a_car_has_counts_from_its_first_sample_in_time(sessions: sessionmaker[Session]) -> None:
    _seed(sessions)
    now = T0 + timedelta(minutes=30)
    loop = OperationsLoop(
        SimpleNamespace(stations={}, on_event=None), sessions, lambda: now, day_start=DAY,
        hourly_prices=load_prices().window(DAY, DAY + timedelta(days=1)), import_limit_kw=100,
        export_limit_kw=100,
    )  # fmt: skip
    scopes: list[set[str | None] | None] = [None, {None}]
    for scope in scopes:  # the whole fleet, and the loop's own site by its stations
        present, _, _, anomalies = loop._state(now, scope)
        energy = {p.vehicle.id: p.energy_kwh for p in present}
        assert not anomalies
        # a: 30 + (4000 - 1500) Wh × 0.9; b: 30 + 2000 Wh × 0.9 - 900 Wh / 0.9
        assert energy == pytest.approx({"a": 32.25, "b": 30.8})
