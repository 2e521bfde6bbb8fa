"""Metered energy per interval over a window: what the registers moved inside it, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import MeterReading, OcppTransaction, Station
from backend.operations.metered import metered_intervals
from tests.operations.test_live import sessions  # noqa: F401  (the fixture)

MIDNIGHT = datetime(2023, 7, 3, tzinfo=UTC)


def test_a_transaction_across_midnight_counts_each_watt_hour_in_one_day(
    sessions: sessionmaker[Session],  # noqa: F811
) -> None:
    """23:00 to 01:00 at 11 kW, sampled every 5 minutes (and off the interval grid at 00:07): each day
    gets what the register moved in it, and the two days add up to the whole transaction."""
    start = MIDNIGHT - timedelta(hours=1)
    times = [start + timedelta(minutes=5 * k) for k in range(25)]
    times[13] = MIDNIGHT + timedelta(minutes=7)  # in place of 00:05
    with sessions.begin() as db:
        station = db.get(Station, "CS21")
        assert station is not None
        db.add(
            OcppTransaction(
                station_id="CS21", transaction_id="t1", evse_id=1, vehicle_id="ev1", started_at=start
            )
        )
        for k, at in enumerate(times):
            wh = round(11_000 * (at - start).total_seconds() / 3600)
            db.add(
                MeterReading(
                    station_id="CS21",
                    transaction_id="t1",
                    seq_no=k,
                    measured_at=at,
                    received_at=at,
                    import_wh=wh,
                    export_wh=0,
                )
            )
    with sessions() as db:
        before = metered_intervals(db, MIDNIGHT - timedelta(days=1), MIDNIGHT)
        after = metered_intervals(db, MIDNIGHT, MIDNIGHT + timedelta(days=1))
    assert sum(m.import_wh for m in before) == 11_000
    assert sum(m.import_wh for m in after) == 11_000
    assert [m.import_wh for m in before] == [2750] * 4
    assert [m.import_wh for m in after] == [2750] * 4
