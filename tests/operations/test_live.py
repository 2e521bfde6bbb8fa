"""Live operations over real websockets on loopback: the CSMS, simulated stations on the same OCPP
package, field data rules, a CSMS restart mid-day, and a metered settlement signed by the metering
service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from backend.db.models import (
    FieldRejection,
    IdTokenRow,
    MeterReading,
    OcppTransaction,
    Owner,
    Station,
    Vehicle,
)
from backend.db.session import session_factory
from backend.operations.auth import basic_header, hash_password
from backend.operations.csms import Csms
from backend.operations.field import close_open_transactions
from backend.operations.profiles import profile_of
from backend.operations.simulator import SimCar, SimClock, SimStation

T0 = datetime(2023, 7, 2, 10, tzinfo=UTC)
T = TypeVar("T")
#: The stations' HTTP Basic passwords (security profile 1; the CSMS stores their scrypt hashes).
PASSWORDS = {sid: f"test-password-of-{sid}-0123456789"[:40] for sid in ("CS21", "CS201", "CSSIG")}
HASHES = {sid: hash_password(password) for sid, password in PASSWORDS.items()}


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    factory = session_factory(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    with factory.begin() as db:
        db.add(Owner(id="alice", address="0x" + "11" * 20))
        db.add(
            Vehicle(id="ev1", owner_id="alice", battery_kwh=60, charge_kw=11, discharge_kw=11, soc_min=0.1)
        )
        db.flush()
        db.add(IdTokenRow(token="tok-ev1", vehicle_id="ev1"))
        db.add(
            Station(
                id="CS21",
                ocpp_version="2.1",
                can_discharge=True,
                evses=1,
                periods_per_schedule=24,
                password_hash=HASHES["CS21"],
            )
        )
        db.add(
            Station(
                id="CS201",
                ocpp_version="2.0.1",
                can_discharge=False,
                evses=1,
                periods_per_schedule=24,
                password_hash=HASHES["CS201"],
            )
        )
    return factory


def car(arrival: datetime, hours: float = 1.0, energy_kwh: float = 30.0) -> SimCar:
    return SimCar(
        "ev1",
        "tok-ev1",
        60.0,
        11.0,
        11.0,
        0.1,
        1.0,
        1.0,
        1.0,
        arrival,
        arrival + timedelta(hours=hours),
        energy_kwh,
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


L = TypeVar("L")


def day_loop(
    kind: Callable[..., L],
    csms: Csms,
    sessions: sessionmaker[Session],
    clock: SimClock,
    day: datetime,
    **options: Any,
) -> L:
    """An operations loop (or a subclass) over ``day`` at the real prices, 50 kW import and export."""
    from scheduler.datasets import load_prices

    return kind(
        csms,
        sessions,
        clock,
        day_start=day,
        hourly_prices=load_prices().window(day, day + timedelta(days=1)),
        import_limit_kw=50.0,
        export_limit_kw=50.0,
        **options,
    )


def rejections(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as db:
        return dict(db.execute(select(FieldRejection.kind, func.count()).group_by(FieldRejection.kind)).all())


async def _visit(
    sessions: sessionmaker[Session],
    station_id: str,
    version: str,
    profile_of: Callable[[datetime], dict[str, Any]],
) -> SimStation:
    """One car's one-hour visit at ``station_id``; on arrival the CSMS sends ``profile_of(arrival)``."""
    clock = SimClock(T0, 3600.0 / 3)  # an hour in three seconds
    arrival = T0 + timedelta(minutes=1)
    pending: list[asyncio.Task[str]] = []
    statuses: list[str] = []

    def on_event(kind: str, sid: str) -> None:
        if kind == "arrival":

            async def send() -> str:
                status = await csms.set_profile(sid, 1, profile_of(arrival))
                statuses.append(status)
                return status

            pending.append(asyncio.get_running_loop().create_task(send()))

    csms = Csms(sessions, clock, on_event=on_event)
    port = await csms.start()
    station = SimStation(
        station_id,
        f"ws://127.0.0.1:{port}",
        version,
        clock,
        car(arrival),
        can_discharge=version == "2.1",
        password=PASSWORDS[station_id],
    )
    try:
        await station.run(arrival + timedelta(hours=2))
        await asyncio.gather(*pending)
    finally:
        await csms.stop()
    assert statuses == ["Accepted"]
    return station


def _hours_before_profile(station: SimStation) -> float:
    """Hours of the visit before the station held its profile (the car charged at full power meanwhile,
    as a station without a profile lets it)."""
    assert station.profile_at is not None and station.car is not None
    gap = station.profile_at - station.car.arrival
    assert gap <= timedelta(minutes=15), f"the profile came {gap} after the arrival"
    return gap.total_seconds() / 3600


def test_a_v21_setpoint_reaches_the_station_and_is_followed(sessions: sessionmaker[Session]) -> None:
    def discharge_7kw(start: datetime) -> dict[str, Any]:
        return profile_of(
            profile_id=1,
            transaction_id="CS21-tx1",
            starts=[start + timedelta(minutes=15 * k) for k in range(8)],
            charge_kw=[0.0] * 8,
            discharge_kw=[7.0] * 8,
            v2g=True,
            max_charge_kw=11,
            max_discharge_kw=11,
            periods_per_schedule=24,
        )

    station = run(_visit(sessions, "CS21", "2.1", discharge_7kw))
    assert station.profile is not None
    period = station.profile["charging_schedule"][0]["charging_schedule_period"]
    assert period == [
        {
            "operation_mode": "CentralSetpoint",
            "setpoint": -7000.0,
            "limit": 11000.0,
            "discharge_limit": -11000.0,
            "start_period": 0,
        }
    ]
    with sessions() as db:
        rows = list(db.scalars(select(MeterReading).order_by(MeterReading.measured_at)))
        tx = db.get(OcppTransaction, ("CS21", "CS21-tx1"))
    assert tx is not None and tx.vehicle_id == "ev1" and tx.ended_at is not None
    # until the profile arrived (an hour runs in 3 s: a minute or so) the car charged at the station's
    # full 11 kW; from then on it gave 7 kW, as metered
    before_h = _hours_before_profile(station)
    assert abs(rows[-1].import_wh - 11_000 * before_h) <= 1
    assert abs(rows[-1].export_wh - 7_000 * (1 - before_h)) <= 1
    assert rejections(sessions) == {}


def test_a_201_station_gets_charge_limits_only(sessions: sessionmaker[Session]) -> None:
    def limit_3kw(start: datetime) -> dict[str, Any]:
        return profile_of(
            profile_id=1,
            transaction_id="CS201-tx1",
            starts=[start + timedelta(minutes=15 * k) for k in range(8)],
            charge_kw=[3.0] * 8,
            discharge_kw=[2.0] * 8,
            v2g=False,
            max_charge_kw=11,
            max_discharge_kw=0,
            periods_per_schedule=24,
        )

    station = run(_visit(sessions, "CS201", "2.0.1", limit_3kw))
    assert station.profile is not None
    period = station.profile["charging_schedule"][0]["charging_schedule_period"]
    assert period == [{"limit": 3000.0, "start_period": 0}]  # no setpoint, no discharge on 2.0.1
    with sessions() as db:
        last = db.scalars(select(MeterReading).order_by(MeterReading.measured_at.desc())).first()
    # full power until the profile arrived, 3 kW from then on, never any discharge
    before_h = _hours_before_profile(station)
    assert last is not None and last.export_wh == 0
    assert abs(last.import_wh - round(11_000 * before_h + 3_000 * (1 - before_h))) <= 1


def test_a_profile_longer_than_the_station_takes_is_cut_to_its_periods() -> None:
    profile = profile_of(
        profile_id=7,
        transaction_id="t",
        starts=[T0 + timedelta(minutes=15 * k) for k in range(96)],
        charge_kw=[float(k % 5) for k in range(96)],
        discharge_kw=[0.0] * 96,
        v2g=False,
        max_charge_kw=11,
        max_discharge_kw=0,
        periods_per_schedule=5,
    )
    periods = profile["charging_schedule"][0]["charging_schedule_period"]
    assert [p["start_period"] for p in periods] == [0, 900, 1800, 2700, 3600]
    assert [p["limit"] for p in periods] == [0.0, 1000.0, 2000.0, 3000.0, 4000.0]


# --- field data that must be refused or flagged, on a raw OCPP-J socket ----------------------------------


class RawStation:
    """A bare OCPP-J client: sends exactly the frames a test writes."""

    def __init__(self, url: str, station_id: str, subprotocol: str = "ocpp2.1") -> None:
        self.url, self.station_id, self.subprotocol = url, station_id, subprotocol
        self.n = 0

    async def __aenter__(self) -> RawStation:
        password = PASSWORDS.get(self.station_id)
        self.ws = await connect(
            f"{self.url}/{self.station_id}",
            subprotocols=[Subprotocol(self.subprotocol)],
            additional_headers={}
            if password is None
            else {"Authorization": basic_header(self.station_id, password)},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def raw(self, text: str) -> Any:
        await self.ws.send(text)
        return json.loads(await asyncio.wait_for(self.ws.recv(), 10))

    async def call(self, action: str, payload: dict[str, Any]) -> Any:
        self.n += 1
        return await self.raw(json.dumps([2, str(self.n), action, payload]))


def tx_event(
    event: str,
    seq: int,
    at: datetime,
    import_wh: int,
    *,
    token: str | None = "tok-ev1",
    evse: int = 1,
    tx: str = "T1",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": event,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq,
        "transactionInfo": {"transactionId": tx},
        "evse": {"id": evse, "connectorId": 1},
        "meterValue": [
            {
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "sampledValue": [
                    {"value": import_wh, "measurand": "Energy.Active.Import.Register"},
                    {"value": 0, "measurand": "Energy.Active.Export.Register"},
                ],
            }
        ],
    }
    if token is not None and event == "Started":
        payload["idToken"] = {"idToken": token, "type": "ISO14443"}
    return payload


def test_every_class_of_bad_field_data_is_named_and_nothing_counts_twice(
    sessions: sessionmaker[Session],
) -> None:
    async def scenario() -> None:
        csms = Csms(sessions, lambda: T0)
        port = await csms.start()
        url = f"ws://127.0.0.1:{port}"
        try:
            with pytest.raises(InvalidStatus) as refused:  # an unknown station is refused at the handshake
                async with RawStation(url, "NOPE") as nope:
                    await nope.call("Heartbeat", {})
            assert refused.value.response.status_code == 401
            async with RawStation(url, "CS21") as cs:
                assert (await cs.raw("this is not json"))[:3] == [4, "-1", "RpcFrameworkError"]
                assert (await cs.call("BootNotification", {"chargingStation": {}, "reason": "PowerUp"}))[
                    0
                ] == 4  # schema
                t = T0
                started = await cs.call("TransactionEvent", tx_event("Started", 0, t, 1000))
                assert started[2]["idTokenInfo"]["status"] == "Accepted"
                again = await cs.call(
                    "TransactionEvent", tx_event("Started", 0, t, 1000)
                )  # the answer was lost
                assert again[0] == 3
                await cs.call("TransactionEvent", tx_event("Updated", 1, t + timedelta(minutes=5), 2000))
                await cs.call(
                    "TransactionEvent", tx_event("Updated", 3, t + timedelta(minutes=15), 4000)
                )  # gap
                await cs.call(
                    "TransactionEvent", tx_event("Updated", 2, t + timedelta(minutes=10), 3000)
                )  # late
                await cs.call(
                    "TransactionEvent", tx_event("Updated", 4, t + timedelta(minutes=20), 3500)
                )  # backwards
                await cs.call("TransactionEvent", tx_event("Started", 0, t, 0, token="stolen", tx="T2"))
                await cs.call("TransactionEvent", tx_event("Started", 0, t, 0, evse=9, tx="T3"))
                await cs.call("TransactionEvent", tx_event("Updated", 5, t, 10, tx="T4"))  # never started
        finally:
            await csms.stop()

    run(scenario())
    counted = rejections(sessions)
    assert counted == {
        "UnknownStationError": 1,
        "MalformedFrameError": 2,
        "DuplicateMessageError": 1,
        "SequenceGapError": 1,
        "OutOfOrderMessageError": 1,
        "RegisterBackwardsError": 1,
        "UnknownIdTokenError": 2,  # a stranger's token, and an event of a transaction never started
        "UnknownEvseError": 1,
        "UnknownTransactionError": 1,
    }
    with sessions() as db:
        t1 = [
            r.import_wh
            for r in db.scalars(
                select(MeterReading)
                .where(MeterReading.transaction_id == "T1")
                .order_by(MeterReading.measured_at)
            )
        ]
        assert t1 == [
            1000,
            2000,
            3000,
            4000,
        ]  # the duplicate once, the late one kept, the backwards one refused
        assert db.get(OcppTransaction, ("CS21", "T2")).vehicle_id is None  # type: ignore[union-attr]  # kept, unattributed
        assert db.get(OcppTransaction, ("CS21", "T3")) is None
        # the station was heard from on the day: only what a later transaction on its EVSE superseded ends
        superseded = close_open_transactions(db, T0 + timedelta(days=1))
        # a whole day without a word from it: gone, every transaction it left open ends at its last sample
        closed_ids = superseded + close_open_transactions(db, T0 + timedelta(days=2))
        db.commit()
    assert superseded == []
    assert sorted(closed_ids) == ["T1", "T2", "T4"]
    assert rejections(sessions)["TransactionNeverEndedError"] == 3
    # a transaction that still reports after the day's end (a car charging across midnight) stays open
    with sessions() as db:
        late = T0 + timedelta(days=1, minutes=30)
        db.add(
            OcppTransaction(
                station_id="CS21",
                transaction_id="T9",
                evse_id=1,
                started_at=T0 + timedelta(hours=23),
                last_measured_at=late,
            )
        )
        db.commit()
        assert close_open_transactions(db, T0 + timedelta(days=1)) == []
        assert close_open_transactions(db, T0 + timedelta(days=2)) == ["T9"]
        db.commit()
        # a station that samples rarely but is heard from after midnight: its car is still charging
        db.get(Station, "CS21").last_seen = T0 + timedelta(days=2, minutes=10)  # type: ignore[union-attr]
        db.add(
            OcppTransaction(
                station_id="CS21",
                transaction_id="T10",
                evse_id=2,
                started_at=T0 + timedelta(days=1, hours=20),
                last_measured_at=T0 + timedelta(days=1, hours=23),
            )
        )
        db.commit()
        assert close_open_transactions(db, T0 + timedelta(days=2)) == []
        # until a later transaction on the same EVSE shows that car has gone
        db.add(
            OcppTransaction(
                station_id="CS21", transaction_id="T11", evse_id=2, started_at=T0 + timedelta(days=2, hours=1)
            )
        )
        db.commit()
        assert close_open_transactions(db, T0 + timedelta(days=2)) == ["T10"]
        db.commit()
        # a station that keeps sending heartbeats while one transaction says nothing for a whole day: its
        # Ended was lost, the car has gone
        db.add(
            OcppTransaction(
                station_id="CS21",
                transaction_id="T12",
                evse_id=3,
                started_at=T0 + timedelta(days=1, hours=12),
                last_measured_at=T0 + timedelta(days=1, hours=13),
            )
        )
        db.commit()
        assert close_open_transactions(db, T0 + timedelta(days=2)) == []  # quiet for 11 hours only
        db.get(Station, "CS21").last_seen = T0 + timedelta(days=3, minutes=5)  # type: ignore[union-attr]
        assert close_open_transactions(db, T0 + timedelta(days=3)) == ["T12"]  # T11 began 23 h before
        db.commit()


@pytest.mark.slow  # 32 s of an accelerated day; make test-slow runs it
def test_a_csms_restart_mid_day_loses_and_doubles_nothing(sessions: sessionmaker[Session]) -> None:
    async def scenario() -> SimStation:
        clock = SimClock(T0, 3600.0 / 4)  # an hour in four seconds
        first = Csms(sessions, clock)
        port = await first.start()
        arrival = T0 + timedelta(minutes=1)
        station = SimStation(
            "CS21",
            f"ws://127.0.0.1:{port}",
            "2.1",
            clock,
            car(arrival, hours=2.0),
            can_discharge=True,
            password=PASSWORDS["CS21"],
        )
        visit = asyncio.create_task(station.run(arrival + timedelta(hours=3)))
        await clock.sleep_until(arrival + timedelta(minutes=30))
        await first.stop()  # the CSMS goes down with the station connected
        await asyncio.sleep(1.0)  # a quarter of an hour of simulated time without it
        second = Csms(sessions, clock)
        await second.start(port=port)
        try:
            await visit
        finally:
            await second.stop()
        return station

    station = run(scenario())
    assert station.stats.reconnects >= 1 and station.stats.queued >= 1
    with sessions() as db:
        rows = list(db.scalars(select(MeterReading).order_by(MeterReading.measured_at)))
        tx = db.get(OcppTransaction, ("CS21", "CS21-tx1"))
    assert tx is not None and tx.ended_at is not None
    assert len({(r.seq_no, r.sample) for r in rows}) == len(rows)  # nothing doubled
    assert rows[-1].import_wh == station.register(
        station.import_wh
    )  # nothing lost: the last register arrived
    assert rows[-1].import_wh == 22_000  # 11 kW for the two hours, no profile: full power


def test_signed_meter_values_are_verified_against_the_meters_key(sessions: sessionmaker[Session]) -> None:
    from eth_keys.datatypes import PrivateKey

    from backend.operations.field import sign_meter_value

    meter = bytes(range(1, 33))
    with sessions.begin() as db:
        db.add(
            Station(
                id="CSSIG",
                ocpp_version="2.1",
                can_discharge=True,
                evses=1,
                periods_per_schedule=24,
                meter_public_key=PrivateKey(meter).public_key.to_bytes().hex(),
                password_hash=HASHES["CSSIG"],
            )
        )

    def signed(seq: int, at: datetime, reported: int, signed_as: int, key: bytes = meter) -> dict[str, Any]:
        event = tx_event("Started" if seq == 0 else "Updated", seq, at, reported, tx="S1")
        stamp = event["meterValue"][0]["timestamp"]
        value = sign_meter_value(key, "S1", stamp, signed_as, 0)
        event["meterValue"][0]["sampledValue"][0]["signedMeterValue"] = {
            "signedMeterData": value["signed_meter_data"],
            "signingMethod": value["signing_method"],
            "encodingMethod": value["encoding_method"],
            "publicKey": value["public_key"],
        }
        return event

    async def scenario() -> None:
        csms = Csms(sessions, lambda: T0)
        port = await csms.start()
        try:
            async with RawStation(f"ws://127.0.0.1:{port}", "CSSIG") as cs:
                await cs.call("TransactionEvent", signed(0, T0, 1000, 1000))  # genuine
                await cs.call("TransactionEvent", signed(1, T0 + timedelta(minutes=5), 9000, 2000))  # altered
                await cs.call(
                    "TransactionEvent", signed(2, T0 + timedelta(minutes=10), 3000, 3000, key=bytes(32 * [7]))
                )
                await cs.call(
                    "TransactionEvent", tx_event("Updated", 3, T0 + timedelta(minutes=15), 4000, tx="S1")
                )
                await cs.call(
                    "TransactionEvent", signed(4, T0 + timedelta(minutes=20), 5000, 5000)
                )  # genuine
        finally:
            await csms.stop()

    run(scenario())
    with sessions() as db:
        rows = list(
            db.scalars(
                select(MeterReading)
                .where(MeterReading.transaction_id == "S1")
                .order_by(MeterReading.measured_at)
            )
        )
    assert [r.import_wh for r in rows] == [1000, 5000]
    assert all(r.signed is not None and r.signed["verified"] is True for r in rows)
    assert rejections(sessions)["InvalidMeterSignatureError"] == 3  # altered, another key, unsigned


def test_a_station_that_rejects_profiles_is_named_and_its_car_planned_as_it_will_charge(
    sessions: sessionmaker[Session],
) -> None:
    from backend.db.models import PlugSession
    from backend.operations.loop import OperationsLoop

    arrival = T0 + timedelta(minutes=1)
    with sessions.begin() as db:
        db.add(
            PlugSession(
                id="s1",
                vehicle_id="ev1",
                arrival=arrival,
                departure=arrival + timedelta(hours=2),
                arrival_kwh=30,
                target_kwh=50,
            )
        )
    day = T0.replace(hour=0)

    async def scenario() -> OperationsLoop:
        clock = SimClock(T0, 3600.0 / 3)
        box: dict[str, OperationsLoop] = {}
        csms = Csms(sessions, clock, on_event=lambda kind, sid: box["loop"].trigger(kind, sid))
        port = await csms.start()
        loop = day_loop(OperationsLoop, csms, sessions, clock, day)
        box["loop"] = loop
        station = SimStation(
            "CS21",
            f"ws://127.0.0.1:{port}",
            "2.1",
            clock,
            car(arrival),
            can_discharge=True,
            refuse_profiles=True,
            password=PASSWORDS["CS21"],
        )
        task = asyncio.create_task(loop.run())
        try:
            await station.run(arrival + timedelta(hours=1))
        finally:
            loop.stop()
            await asyncio.gather(task, return_exceptions=True)
            await csms.stop()
        return loop

    loop = run(scenario())
    assert loop.stats.profiles_rejected >= 1 and "ev1" in loop.uncontrolled
    assert rejections(sessions)["ProfileRejectedError"] >= 1
    with sessions() as db:
        last = db.scalars(select(MeterReading).order_by(MeterReading.measured_at.desc())).first()
    assert last is not None and last.import_wh == 11_000  # what the station did: full power for the hour


def test_a_dr_event_stored_mid_run_is_applied_at_once(sessions: sessionmaker[Session]) -> None:
    from backend.db.models import ChargingProfileRow, DrEventRow, PlugSession
    from backend.operations.loop import OperationsLoop
    from backend.operations.profiles import power_at

    arrival = T0 + timedelta(minutes=1)
    with sessions.begin() as db:
        db.add(
            PlugSession(
                id="s1",
                vehicle_id="ev1",
                arrival=arrival,
                departure=arrival + timedelta(hours=3),
                arrival_kwh=30,
                target_kwh=50,
            )
        )
    day = T0.replace(hour=0)
    event_start = T0 + timedelta(hours=1)

    async def scenario() -> datetime:
        clock = SimClock(T0, 3600.0 / 4)  # an hour in four seconds
        box: dict[str, OperationsLoop] = {}
        csms = Csms(sessions, clock, on_event=lambda kind, sid: box["loop"].trigger(kind, sid))
        port = await csms.start()
        loop = day_loop(OperationsLoop, csms, sessions, clock, day)
        box["loop"] = loop
        station = SimStation(
            "CS21",
            f"ws://127.0.0.1:{port}",
            "2.1",
            clock,
            car(arrival, hours=3.0),
            can_discharge=True,
            password=PASSWORDS["CS21"],
        )
        task = asyncio.create_task(loop.run())
        visit = asyncio.create_task(station.run(arrival + timedelta(hours=2)))
        await clock.sleep_until(T0 + timedelta(minutes=30))
        with sessions.begin() as db:  # as POST /dr-events stores it
            db.add(DrEventRow(id="dr1", start=event_start, duration_s=3600, import_limit_kw=0.0))
        stored_at = clock()
        await visit
        loop.stop()
        await asyncio.gather(task, return_exceptions=True)
        await csms.stop()
        return stored_at

    stored_at = run(scenario())
    with sessions() as db:
        after = [
            p
            for p in db.scalars(select(ChargingProfileRow).order_by(ChargingProfileRow.id))
            if p.sent_at >= stored_at
        ]
    assert after, "no profile after the DR event"
    first = after[0]
    assert (first.sent_at - stored_at) <= timedelta(minutes=5)  # within DR_POLL_S real seconds (×900)
    for minute in range(0, 60, 15):
        setpoint, _, _ = power_at(first.body, event_start + timedelta(minutes=minute))
        assert setpoint is not None and setpoint <= 0.0  # no import while the event holds the site at 0 kW


def test_meter_values_outside_transaction_events_follow_the_same_rules(
    sessions: sessionmaker[Session],
) -> None:
    def meter_values(at: datetime, import_wh: int) -> dict[str, Any]:
        return {"evseId": 1, "meterValue": tx_event("Updated", 0, at, import_wh)["meterValue"]}

    async def scenario() -> None:
        csms = Csms(sessions, lambda: T0)
        port = await csms.start()
        try:
            async with RawStation(f"ws://127.0.0.1:{port}", "CS21") as cs:
                await cs.call("TransactionEvent", tx_event("Started", 0, T0, 1000))
                await cs.call("TransactionEvent", tx_event("Updated", 1, T0 + timedelta(minutes=5), 2000))
                await cs.call("MeterValues", meter_values(T0 + timedelta(minutes=10), 5000))
                await cs.call("MeterValues", meter_values(T0 + timedelta(minutes=10), 5000))  # again
                # in order after the last TransactionEvent, but behind the MeterValues sample
                await cs.call("TransactionEvent", tx_event("Updated", 2, T0 + timedelta(minutes=15), 4000))
                await cs.call("TransactionEvent", tx_event("Updated", 3, T0 + timedelta(minutes=20), 6000))
        finally:
            await csms.stop()

    run(scenario())
    with sessions() as db:
        stored = [r.import_wh for r in db.scalars(select(MeterReading).order_by(MeterReading.measured_at))]
    assert stored == [1000, 2000, 5000, 6000]
    assert rejections(sessions) == {
        "DuplicateMessageError": 1,
        "RegisterBackwardsError": 1,
        "SequenceGapError": 1,
    }


def test_a_trigger_or_a_stop_during_a_replan_is_not_lost(sessions: sessionmaker[Session]) -> None:
    """The loop sleeps until the next 15-minute boundary after a re-plan; an arrival (trigger) or a SIGTERM
    (stop) that comes while a re-plan runs must be acted on at once, not at that boundary (a lost wake-up
    once made `v2g operate` ignore SIGTERM for up to 15 minutes)."""
    from backend.operations.loop import OperationsLoop

    day = T0.replace(hour=0)

    class Probe(OperationsLoop):
        calls = 0

        async def replan(self, sites: set[str | None] | None = None) -> int:
            Probe.calls += 1
            await asyncio.sleep(0.05)  # the re-plan is in progress when the event comes
            if Probe.calls == 1:
                self.trigger("arrival", "CS21")
            elif Probe.calls == 2:
                self.stop()
            return 0

    async def scenario() -> float:
        clock = SimClock(T0 + timedelta(minutes=1), 1.0)  # the next boundary is 14 minutes away
        csms = Csms(sessions, clock)
        loop = day_loop(Probe, csms, sessions, clock, day)
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(loop.run(), timeout=20)
        finally:
            await csms.stop()
        return asyncio.get_running_loop().time() - started

    elapsed = run(scenario())
    assert Probe.calls == 2  # the trigger made the second re-plan, the stop ended the loop after it
    assert elapsed < 5


def test_a_station_asked_to_stop_a_transaction_ends_it_and_refuses_an_unknown_one(
    sessions: sessionmaker[Session],
) -> None:
    """RequestStopTransaction, as the loop sends it for a transaction it closed as superseded: the
    simulated station ends its car's (stoppedReason Remote) and refuses one it does not hold."""

    async def scenario() -> tuple[str, str]:
        clock = SimClock(T0, 3600.0 / 3)
        arrival = T0 + timedelta(minutes=1)
        csms = Csms(sessions, clock)
        port = await csms.start()
        station = SimStation(
            "CS21",
            f"ws://127.0.0.1:{port}",
            "2.1",
            clock,
            car(arrival),
            can_discharge=True,
            password=PASSWORDS["CS21"],
        )
        visit = asyncio.create_task(station.run(arrival + timedelta(hours=2)))
        try:
            await clock.sleep_until(arrival + timedelta(minutes=20))
            unknown = await csms.request_stop("CS21", "no-such-tx")
            known = await csms.request_stop("CS21", "CS21-tx1")
            await asyncio.wait_for(visit, 10)
        finally:
            await csms.stop()
        return unknown, known

    assert run(scenario()) == ("Rejected", "Accepted")
    with sessions() as db:
        tx = db.get_one(OcppTransaction, ("CS21", "CS21-tx1"))
    assert tx.stopped_reason == "Remote" and tx.ended_at is not None
    assert tx.ended_at < T0 + timedelta(minutes=40)  # at the next meter step, not the car's departure
