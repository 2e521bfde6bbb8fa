"""Plug-ins can be cancelled until they are settled; a settled day takes no second schedule; and the
database itself (not only the API) refuses overlapping plug-ins and cancelling a settled one, on SQLite
and on PostgreSQL (a throwaway cluster, when the PostgreSQL binaries are installed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db.models import Deployment, Owner, Period, PlugSession, SettledTradeRow, Vehicle
from backend.db.session import alembic_config, migrate
from tests.backend.conftest import SCHEDULE, Api
from tests.postgres import throwaway_postgres

T0 = datetime(2023, 7, 2, 6, tzinfo=UTC)
#: How each backend words its refusal of an overlap (a trigger message; the constraint name).
OVERLAP = r"OverlappingSessionsError|plug_sessions_no_overlap"


def status(api: Api, method: str, path: str, body: object = None) -> tuple[int, str]:
    response = api.client.request(method, path, json=body, headers=api.headers("operator"))
    return response.status_code, (response.json().get("error", "") if response.content else "")


def test_cancel_until_settled_and_no_second_schedule_for_a_settled_day(api: Api) -> None:
    # a mistaken plug-in is cancelled, and the vehicle's time is free again
    assert status(api, "GET", "/sessions/s3")[0] == 200
    assert status(api, "DELETE", "/sessions/s3") == (204, "")
    assert status(api, "GET", "/sessions/s3") == (404, "NotFoundError")
    assert status(api, "DELETE", "/sessions/s3") == (404, "NotFoundError")
    again = {
        "id": "s3b",
        "vehicle_id": "ev3",
        "arrival": "2023-07-02T09:00:00Z",
        "departure": "2023-07-02T20:00:00Z",
        "arrival_kwh": 20,
        "target_kwh": 30,
    }
    assert status(api, "POST", "/sessions", again) == (201, "")
    assert status(api, "DELETE", "/sessions/s1", None)[0] == 204
    # a schedule computed with a plug-in cancelled since is not settled: schedule the day again
    stale = api.wait(api.post("/schedules", SCHEDULE))  # type: ignore[arg-type]
    assert status(api, "DELETE", "/sessions/s3b") == (204, "")
    stale_id = stale["result"]["schedule_id"]  # type: ignore[index]
    assert status(api, "POST", "/periods", {"schedule_id": stale_id}) == (409, "StaleScheduleError")
    fresh = api.wait(api.post("/schedules", SCHEDULE))  # type: ignore[arg-type]
    fresh_id = fresh["result"]["schedule_id"]  # type: ignore[index]
    api.wait(api.post("/periods", {"schedule_id": fresh_id}))  # type: ignore[arg-type]
    # once settled: no cancelling its plug-ins, no second schedule, no settling another schedule of it
    assert status(api, "DELETE", "/sessions/s0") == (409, "SessionSettledError")
    assert status(api, "GET", "/sessions/s0")[0] == 200
    assert status(api, "POST", "/schedules", SCHEDULE) == (409, "AlreadySettledError")
    shifted = {**SCHEDULE, "start": "2023-07-01T23:00:00Z", "intervals": 8}  # overlaps the settled day
    assert status(api, "POST", "/schedules", shifted) == (409, "AlreadySettledError")
    assert status(api, "POST", "/periods", {"schedule_id": stale_id}) == (409, "AlreadySettledError")
    assert status(api, "POST", "/periods", {"schedule_id": fresh_id, "fee_bps": 7}) == (
        409,
        "AlreadySettledError",
    )
    # settling the same schedule again resumes it (nothing paid twice)
    assert status(api, "POST", "/periods", {"schedule_id": fresh_id})[0] == 202
    with api.state.sessions() as session:  # the database refuses it too, whoever asks
        row = session.get_one(PlugSession, "s0")
        session.delete(row)
        with pytest.raises(IntegrityError, match="SessionSettledError"):
            session.commit()


def seed_rows(session: Session) -> None:
    session.add(Owner(id="o", address="0x" + "a1" * 20))
    session.add(Vehicle(id="v", owner_id="o", battery_kwh=60, charge_kw=11))
    session.add(Vehicle(id="w", owner_id="o", battery_kwh=60, charge_kw=11))
    session.commit()


def plug(i: str, vehicle: str, start_h: float, end_h: float) -> PlugSession:
    return PlugSession(
        id=i,
        vehicle_id=vehicle,
        arrival=T0 + timedelta(hours=start_h),
        departure=T0 + timedelta(hours=end_h),
        arrival_kwh=10,
        target_kwh=20,
    )


def check_guards(engine: Engine) -> None:
    """What every backend must refuse and accept, straight through SQLAlchemy."""
    with Session(engine) as session:
        seed_rows(session)
        session.add(plug("a", "v", 0, 4))
        session.commit()
        for row in (
            plug("b", "v", 3, 5),
            plug("c", "v", -1, 0.5),
            plug("d", "v", 1, 2),
            plug("e", "v", -2, 9),
        ):
            session.add(row)
            with pytest.raises(IntegrityError, match=OVERLAP):
                session.commit()
            session.rollback()
        session.add_all([plug("f", "v", 4, 6), plug("g", "w", 0, 4)])  # touching ends; another vehicle
        session.commit()
        moved = session.get_one(PlugSession, "f")
        moved.arrival = T0 + timedelta(hours=3)
        with pytest.raises(IntegrityError, match=OVERLAP):
            session.commit()
        session.rollback()
        session.add(
            Deployment(
                id=1, chain_id=1, token_address="0x" + "1" * 40, settlement_address="0x" + "2" * 40,
                block_number=0, artifact_hashes={},
            )
        )  # fmt: skip
        session.add(
            Period(
                id=20230702, deployment_id=1, starts_at=T0, ends_at=T0 + timedelta(days=1), root="0x",
                total_credit=0, total_debit=0, entry_count=1,
            )
        )  # fmt: skip
        session.add(
            SettledTradeRow(
                period_id=20230702, entry_id=0, owner_id="o", vehicle_id="v", session_id="a",
                interval_start=T0, direction="charge", energy_wh=1, p2p_wh=0, grid_wh=1,
                p2p_price=0, grid_price=1, value=1, fee=0, amount=-1,
            )
        )  # fmt: skip
        session.flush()
        session.delete(session.get_one(PlugSession, "a"))
        with pytest.raises(IntegrityError, match="SessionSettledError"):
            session.flush()
        session.rollback()
        session.delete(session.get_one(PlugSession, "g"))  # not settled: cancelled
        session.commit()
    race(engine)


def race(engine: Engine, n: int = 20) -> None:
    """``n`` connections insert overlapping plug-ins of one vehicle at once: exactly one is stored."""
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def insert(i: int) -> None:
        with Session(engine) as session:
            session.add(plug(f"race-{i}", "w", 10 + i / 10, 14))
            barrier.wait()
            try:
                session.commit()
                outcomes.append("stored")
            except IntegrityError:
                outcomes.append("refused")

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["refused"] * (n - 1) + ["stored"], outcomes
    with Session(engine) as session:
        stored = session.scalars(select(PlugSession.id).where(PlugSession.id.like("race-%"))).all()
        assert len(stored) == 1


def test_sqlite_refuses_overlaps_and_settled_cancellations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'guards.sqlite'}"
    migrate(url)
    engine = create_engine(url, connect_args={"timeout": 60})
    try:
        check_guards(engine)
    finally:
        engine.dispose()


def test_the_migration_refuses_overlaps_stored_before_it_and_downgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    command.upgrade(alembic_config(url), "0003")
    engine = create_engine(url)
    try:
        with Session(engine) as session:  # what the racing API could store before revision 0004
            seed_rows(session)
            session.add_all([plug("a", "v", 0, 4), plug("b", "v", 3, 5), plug("c", "w", 0, 1)])
            session.commit()
        with pytest.raises(RuntimeError, match="vehicle v: a and b"):
            migrate(url)
        with Session(engine) as session:
            session.delete(session.get_one(PlugSession, "b"))
            session.commit()
        migrate(url)
        with Session(engine) as session:
            session.add(plug("b", "v", 3, 5))
            with pytest.raises(IntegrityError, match=OVERLAP):
                session.commit()
        command.downgrade(alembic_config(url), "0003")
        with Session(engine) as session:
            session.add(plug("b", "v", 3, 5))
            session.commit()  # the guard is gone with its revision
    finally:
        engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (:func:`tests.postgres.throwaway_postgres`)."""
    with throwaway_postgres() as url:
        yield url


def test_postgresql_refuses_overlaps_and_settled_cancellations(postgres_url: str) -> None:
    migrate(postgres_url)
    engine = create_engine(postgres_url, pool_size=25)
    try:
        check_guards(engine)
    finally:
        engine.dispose()
