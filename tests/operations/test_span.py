"""What the live loop plans over: the rest of the UTC day as far as prices are stored (a UTC day ends in
the next market day, public only at noon), and past midnight once they are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import PricePoint
from backend.db.session import migrate, session_factory
from backend.operations.csms import Csms
from backend.operations.loop import REPLANS_KEPT, LoopStats, OperationsLoop, span_of
from backend.operations.run import NoPricesError, stored_prices
from scheduler.errors import MisalignedIntervalError

DAY = datetime(2026, 1, 15, tzinfo=UTC)  # winter: the UTC day's last hour is the next market day's first


def hours(start: datetime, count: int, *, skip: int | None = None) -> pd.Series:
    index = [start + timedelta(hours=h) for h in range(count) if h != skip]
    return pd.Series([50.0 + h for h in range(len(index))], index=pd.DatetimeIndex(index), dtype=float)


def test_the_span_is_the_hours_stored_without_a_gap() -> None:
    assert span_of(DAY, hours(DAY, 23)).intervals == 92  # 23:00 to 24:00 UTC is tomorrow's market day
    assert span_of(DAY, hours(DAY, 47)).end == DAY + timedelta(hours=47)
    assert span_of(DAY, hours(DAY, 72)).end == DAY + timedelta(hours=48)  # the scheduler's horizon
    assert span_of(DAY, hours(DAY, 24, skip=5)).end == DAY + timedelta(hours=5)  # up to the gap
    with pytest.raises(MisalignedIntervalError):
        span_of(DAY, hours(DAY + timedelta(hours=1), 23))


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'v2g.sqlite'}"
    migrate(url)
    return session_factory(url)


def store(sessions: sessionmaker[Session], series: pd.Series) -> None:
    with sessions.begin() as db:
        for at, value in zip(pd.DatetimeIndex(series.index), series.to_numpy(), strict=True):
            db.add(PricePoint(utc=at.to_pydatetime(), eur_mwh=float(value)))


def loop_at(sessions: sessionmaker[Session], now: datetime) -> OperationsLoop:
    """The loop of ``DAY`` at ``now`` over the prices stored (50 kW import, no export)."""
    return OperationsLoop(
        Csms(sessions, lambda: now),
        sessions,
        lambda: now,
        day_start=DAY,
        hourly_prices=stored_prices(sessions, DAY, now),
        import_limit_kw=50.0,
        export_limit_kw=0.0,
    )


def test_the_morning_is_planned_before_the_last_hour_is_public_and_the_night_once_it_is(
    sessions: sessionmaker[Session],
) -> None:
    store(sessions, hours(DAY, 23))  # 00:00-23:00 UTC: the market day published yesterday
    morning = DAY + timedelta(hours=6)
    loop = loop_at(sessions, morning)
    assert loop.day.end == DAY + timedelta(hours=23)
    assert not loop.extend(stored_prices(sessions, DAY, morning))  # nothing new: no re-plan
    with pytest.raises(NoPricesError, match="run 23 hour"):
        stored_prices(sessions, DAY, DAY + timedelta(hours=23, minutes=10))  # the hour not covered
    store(sessions, hours(DAY + timedelta(hours=23), 24))  # tomorrow's market day, public at noon
    assert loop.extend(stored_prices(sessions, DAY, DAY + timedelta(hours=12)))
    assert loop.day.end == DAY + timedelta(hours=47) and loop.prices.buy_eur_mwh.shape == (47 * 4,)
    assert loop.prices.buy_eur_mwh[-1] == 50.0 + 23  # the last hour stored, in its place
    with pytest.raises(NoPricesError, match="run 0 hour"):
        stored_prices(sessions, DAY + timedelta(days=3), DAY + timedelta(days=3))


def test_a_car_nobody_gave_a_departure_is_planned_to_leave_by_midnight_even_when_the_plan_runs_on(
    sessions: sessionmaker[Session],
) -> None:
    """The plan reaches 47 hours ahead, but a car with no booking, no word from the car and none from its
    owner is planned to leave at midnight, as before: never left to charge in a night it may not see."""
    from backend.db.models import OcppTransaction, Owner, Station, Vehicle

    store(sessions, hours(DAY, 47))
    now = DAY + timedelta(hours=14)
    with sessions.begin() as db:
        db.add(Owner(id="alice", address="0x" + "11" * 20))
        db.add(Vehicle(id="ev1", owner_id="alice", battery_kwh=60, charge_kw=11))
        db.add(Station(id="CS1", ocpp_version="2.0.1"))
        db.flush()
        db.add(
            OcppTransaction(
                station_id="CS1", transaction_id="T1", evse_id=1, vehicle_id="ev1", started_at=now
            )
        )
    loop = loop_at(sessions, now)
    assert loop.day.end == DAY + timedelta(hours=47)
    present, expected, vehicles, _ = loop._state(now)
    problem = loop._problem(now, present, expected, vehicles)
    assert problem is not None and problem.horizon.end == DAY + timedelta(hours=47)
    [session] = problem.sessions
    assert session.departure == DAY + timedelta(days=1)


def test_the_metrics_count_todays_part_of_a_plan_that_runs_past_midnight(
    sessions: sessionmaker[Session],
) -> None:
    from backend.metrics import Live, registry_of

    store(sessions, hours(DAY, 47))
    now = DAY + timedelta(hours=14)
    loop = loop_at(sessions, now)
    loop.planned_wh[("ev1", DAY + timedelta(hours=22))] = 2_750  # tonight, before midnight: today's
    loop.planned_wh[("ev1", DAY + timedelta(hours=25))] = 11_000  # after midnight: tomorrow's
    registry = registry_of(sessions, lambda: Live(loop.csms, lambda: loop))
    assert registry.get_sample_value("v2g_planned_wh") == 2_750.0


def test_a_loop_keeps_its_last_re_plans_durations_only() -> None:
    # a service runs for months: its re-plans' durations are a window, the last one always at the end
    stats = LoopStats()
    for k in range(REPLANS_KEPT + 500):
        stats.replan_seconds.append(float(k))
    assert len(stats.replan_seconds) == REPLANS_KEPT
    assert stats.replan_seconds[-1] == REPLANS_KEPT + 499.0
    assert stats.replan_seconds[0] == 500.0
