"""Hostile stations against the CSMS (real websockets, OCPP 2.0.1 and 2.1), then the money path: every Wh a
register advanced is settled, adjusted, refused by name or pending, and the day's equation balances after
each case (:func:`backend.audit.energy.energy_balance`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from backend.audit.energy import EnergyBalance, current_ledger, energy_balance
from backend.db.models import FieldRejection, MeterReading
from backend.metering.frames import FrameChainError, heads, load_verified
from backend.metering.replay import Ledger
from tests.operations.hostile import DAY, Field, as_schema_owner, hostile_field, register_value
from tests.postgres import fresh_database, throwaway_postgres

D = 20230702
D1 = 20230703
PROTOCOLS = ["2.0.1", "2.1"]


def _station(version: str, signs: bool = False) -> str:
    return f"st{version.replace('.', '')}{'s' if signs else ''}"


def _balance(field: Field, day: int = D) -> EnergyBalance:
    with field.sessions() as db:
        balance = energy_balance(db, day)
    assert balance.ok, balance
    assert balance.metered_wh == (
        balance.settled_wh + balance.adjusted_wh + balance.refused_wh + balance.pending_wh
    )
    return balance


def _ledger(field: Field) -> Ledger:
    with field.sessions() as db:
        return current_ledger(db)


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[str]:
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every case on both databases (PostgreSQL: a fresh database on a throwaway cluster)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'field.sqlite'}"
    return fresh_database(request.getfixturevalue("postgres_cluster"), f"hostile_{tmp_path.name.lower()}")


def _run(database: str, case: Any) -> None:
    async def go() -> None:
        async with hostile_field(database) as field:
            await case(field)

    asyncio.run(go())


@pytest.mark.parametrize("version", PROTOCOLS)
def test_forged_energy_from_a_meter_without_key_is_refused_by_name(database: str, version: str) -> None:
    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=8)
        async with field.station(_station(version)) as st:
            field.clock.now = t
            await st.event("Started", "tx1", t, [register_value(t, 1000, 0)], token="TOKEN0")
            field.clock.now = t + timedelta(seconds=60)
            answer = await st.event(
                "Updated",
                "tx1",
                t + timedelta(seconds=60),
                [register_value(t + timedelta(seconds=60), 501_000, 0)],
            )
            assert answer[0] == 3  # acknowledged: stored before it is believed
            field.clock.now = t + timedelta(hours=1)
            await st.event(
                "Ended", "tx1", t + timedelta(hours=1), [register_value(t + timedelta(hours=1), 505_000, 0)]
            )
        balance = _balance(field)
        assert balance.metered_wh == 504_000
        assert balance.refused_by_reason == {"ImplausibleEnergyError": 500_000}
        assert balance.pending_wh == 4_000  # the hour's plausible 4 kWh, in no period yet
        [refusal] = balance.refusals
        assert (refusal.station_id, refusal.transaction_id, refusal.wh) == (_station(version), "tx1", 500_000)

    _run(database, case)


@pytest.mark.parametrize("version", PROTOCOLS)
def test_a_signed_reading_with_another_time_or_no_signature_is_refused(database: str, version: str) -> None:
    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=9)
        station = _station(version, signs=True)
        async with field.station(station) as st:
            field.clock.now = t
            await st.event(
                "Started",
                "tx2",
                t,
                [register_value(t, 0, 0, transaction_id="tx2", sign=True)],
                token="TOKEN1",
            )
            u = t + timedelta(minutes=15)
            field.clock.now = u
            # signed over 09:10, reported at 09:15: the time inside the signature is compared
            await st.event(
                "Updated",
                "tx2",
                u,
                [
                    register_value(
                        u, 2000, 0, transaction_id="tx2", sign=True, signed_at=u - timedelta(minutes=5)
                    )
                ],
            )
            v = u + timedelta(minutes=15)
            field.clock.now = v
            await st.event("Updated", "tx2", v, [register_value(v, 4000, 0, transaction_id="tx2", sign=True)])
            w = v + timedelta(minutes=15)
            field.clock.now = w
            await st.event("Updated", "tx2", w, [register_value(w, 5000, 0)])  # unsigned
        balance = _balance(field)
        assert balance.refused_by_reason == {"InvalidMeterSignatureError": 3000}
        assert balance.metered_wh == 5000 and balance.pending_wh == 2000

    _run(database, case)


@pytest.mark.parametrize("version", PROTOCOLS)
def test_registers_as_real_meters_report_them(database: str, version: str) -> None:
    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=10)
        minute = timedelta(minutes=30)
        async with field.station(_station(version)) as st:
            field.clock.now = t
            # import register only (most charge-only meters): export is 0, nothing refused
            await st.event("Started", "imp", t, [register_value(t, 0, None)], token="TOKEN0", evse=1)
            field.clock.now = t + minute
            await st.event("Updated", "imp", t + minute, [register_value(t + minute, 3000, None)], evse=1)
            # per-phase values (no total), kWh with a multiplier, a net register
            phases = [
                {
                    "timestamp": "",
                    "sampledValue": [
                        {
                            "value": v,
                            "measurand": "Energy.Active.Import.Register",
                            "phase": p,
                            "unitOfMeasure": {"unit": "Wh"},
                        }
                        for p in ("L1", "L2", "L3")
                    ],
                }
                for v in (100, 300)
            ]
            phases[0]["timestamp"] = (t).isoformat()
            phases[1]["timestamp"] = (t + minute).isoformat()
            field.clock.now = t
            await st.event("Started", "ph", t, [phases[0]], token="TOKEN1", evse=2, seq_no=0)
            field.clock.now = t + minute
            await st.event("Ended", "ph", t + minute, [phases[1]], evse=2, seq_no=1)
            later = t + 2 * minute
            field.clock.now = later
            kwh = {
                "timestamp": later.isoformat(),
                "sampledValue": [
                    {
                        "value": 0.5,
                        "measurand": "Energy.Active.Import.Register",
                        "unitOfMeasure": {"unit": "kWh"},
                    }
                ],
            }
            await st.event("Started", "kwh", later, [kwh], token="TOKEN1", evse=2, seq_no=0)
            end = later + minute
            field.clock.now = end
            scaled = {
                "timestamp": end.isoformat(),
                "sampledValue": [
                    {
                        "value": 2,
                        "measurand": "Energy.Active.Import.Register",
                        "unitOfMeasure": {"unit": "Wh", "multiplier": 3},
                    }
                ],
            }
            await st.event("Ended", "kwh", end, [scaled], evse=2, seq_no=1)
            net = [
                {
                    "timestamp": (end + k * minute).isoformat(),
                    "sampledValue": [
                        {
                            "value": v,
                            "measurand": "Energy.Active.Net.Register",
                            "unitOfMeasure": {"unit": "Wh"},
                        }
                    ],
                }
                for k, v in enumerate((0, 1000, 400))
            ]
            for k, (kind, value) in enumerate(zip(("Started", "Updated", "Ended"), net, strict=True)):
                field.clock.now = end + k * minute
                await st.event(
                    kind,
                    "net",
                    end + k * minute,
                    [value],
                    token="TOKEN0" if k == 0 else None,
                    evse=2,
                    seq_no=k,
                )
        ledger = _ledger(field)
        by_tx: dict[str, tuple[int, int]] = {}
        for seg in ledger.segments:
            imp, exp = by_tx.get(seg.transaction_id, (0, 0))
            by_tx[seg.transaction_id] = (imp + seg.import_wh, exp + seg.export_wh)
        assert by_tx == {"imp": (3000, 0), "ph": (600, 0), "kwh": (1500, 0), "net": (1000, 600)}
        assert ledger.refusals == []
        with field.sessions() as db:
            kinds = set(db.scalars(select(FieldRejection.kind)))
        assert "MissingRegisterError" not in kinds
        assert _balance(field).pending_wh == 3000 + 600 + 1500 + 1600

    _run(database, case)


def test_a_transaction_across_midnight_is_split_at_the_boundary(database: str) -> None:
    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=23)
        async with field.station("st21") as st:
            field.clock.now = t
            await st.event("Started", "night", t, [register_value(t, 0, 0)], token="TOKEN0")
            field.clock.now = t + timedelta(hours=2)
            await st.event(
                "Ended", "night", t + timedelta(hours=2), [register_value(t + timedelta(hours=2), 8000, 0)]
            )
        assert _balance(field, D).pending_wh == 4000
        assert _balance(field, D1).pending_wh == 4000

    _run(database, case)


def test_a_transaction_ended_thirty_days_later_contributes_to_each_day(database: str) -> None:
    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=12)
        async with field.station("st201") as st:
            field.clock.now = t
            await st.event("Started", "long", t, [register_value(t, 0, 0)], token="TOKEN1")
            end = t + timedelta(days=30)
            field.clock.now = end
            await st.event("Ended", "long", end, [register_value(end, 3000, 0)])
        assert _balance(field, D).pending_wh == 50
        assert _balance(field, D1).pending_wh == 100
        total = sum(
            _balance(field, int((DAY + timedelta(days=k)).strftime("%Y%m%d"))).pending_wh for k in range(31)
        )
        assert total == 3000

    _run(database, case)


def test_a_station_clock_a_day_behind_never_puts_energy_in_its_own_day(database: str) -> None:
    async def case(field: Field) -> None:
        true_time = DAY + timedelta(days=1, hours=10)
        skewed = true_time - timedelta(hours=26)
        async with field.station("st21") as st:
            field.clock.now = true_time
            await st.event("Started", "skew", skewed, [register_value(skewed, 0, 0)], token="TOKEN0")
            field.clock.now = true_time + timedelta(minutes=30)
            await st.event(
                "Updated",
                "skew",
                skewed + timedelta(minutes=30),
                [register_value(skewed + timedelta(minutes=30), 5000, 0)],
            )
        station_day = DAY  # 2023-07-02 08:00 in the station's clock
        assert skewed.date() == station_day.date()
        day = _balance(field, D)
        assert day.metered_wh == 0  # nothing lands in a day only the station's clock knows
        received = _balance(field, D1)
        assert received.refused_by_reason == {"ClockSkewError": 5000}
        # and a queued message flagged offline is late, not skewed
        async with field.station("st201") as st:
            late = DAY + timedelta(hours=6)
            field.clock.now = true_time + timedelta(hours=1)
            await st.event(
                "Started", "queued", late, [register_value(late, 0, 0)], token="TOKEN1", offline=True
            )
            await st.event(
                "Ended",
                "queued",
                late + timedelta(hours=1),
                [register_value(late + timedelta(hours=1), 7000, 0)],
                offline=True,
            )
        assert _balance(field, D).pending_wh == 7000
        # a Started whose time is not believed, then samples on time: the first rise is judged by the
        # battery alone (its duration is unknown), and accepted
        async with field.station("st21") as st:
            now = true_time + timedelta(hours=2)
            field.clock.now = now
            await st.event(
                "Started",
                "rebased",
                now - timedelta(hours=26),
                [register_value(now - timedelta(hours=26), 0, 0)],
                token="TOKEN0",
            )
            later = now + timedelta(minutes=30)
            field.clock.now = later
            await st.event("Ended", "rebased", later, [register_value(later, 4000, 0)])
        rebased = [s for s in _ledger(field).segments if s.transaction_id == "rebased"]
        assert sum(s.import_wh for s in rebased) == 4000

    _run(database, case)


def test_meter_values_at_ten_hertz_are_each_kept_and_go_to_the_transaction_started_last(
    database: str,
) -> None:
    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=14)
        async with field.station("st21") as st:
            field.clock.now = t
            await st.event(
                "Started",
                "stale",
                t - timedelta(hours=1),
                [register_value(t - timedelta(hours=1), 0, 0)],
                token="TOKEN1",
            )
            await st.event("Started", "fresh", t, [register_value(t, 0, 0)], token="TOKEN0", seq_no=0)
            for k in range(1, 51):
                at = t + timedelta(milliseconds=100 * k)
                answer = await st.meter_values(1, [register_value(at, k, 0)])
                assert answer[0] == 3
            await st.meter_values(1, [register_value(t + timedelta(milliseconds=5000), 50, 0)])  # a resend
        ledger = _ledger(field)
        assert sum(s.import_wh for s in ledger.segments if s.transaction_id == "fresh") == 50
        assert not [s for s in ledger.segments if s.transaction_id == "stale"]
        with field.sessions() as db:
            stored = db.scalar(
                select(func.count()).select_from(MeterReading).where(MeterReading.transaction_id == "fresh")
            )
            duplicates = db.scalar(
                select(func.count())
                .select_from(FieldRejection)
                .where(FieldRejection.kind == "DuplicateMessageError")
            )
        assert stored == 51 and duplicates == 1
        assert _balance(field).pending_wh == 50

    _run(database, case)


def test_resends_and_backwards_registers_are_counted_once_and_never(database: str) -> None:
    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=16)
        async with field.station("st201") as st:
            field.clock.now = t
            await st.event("Started", "rs", t, [register_value(t, 100, 0)], token="TOKEN0", seq_no=0)
            u = t + timedelta(minutes=15)
            field.clock.now = u
            for _ in range(3):  # the answer "was lost": the same message three times
                await st.event("Updated", "rs", u, [register_value(u, 1100, 0)], seq_no=1)
            v = u + timedelta(minutes=15)
            field.clock.now = v
            await st.event("Updated", "rs", v, [register_value(v, 900, 0)], seq_no=2)  # backwards
            w = v + timedelta(minutes=15)
            field.clock.now = w
            await st.event("Ended", "rs", w, [register_value(w, 2100, 0)], seq_no=3)
        balance = _balance(field)
        assert balance.metered_wh == 2000 and balance.refused_wh == 0

    _run(database, case)


def test_an_edited_raw_frame_breaks_its_chain_and_an_edited_reading_changes_nothing(database: str) -> None:
    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=8)
        async with field.station("st21") as st:
            field.clock.now = t
            await st.event("Started", "tx", t, [register_value(t, 0, 0)], token="TOKEN0")
            field.clock.now = t + timedelta(hours=1)
            await st.event(
                "Ended", "tx", t + timedelta(hours=1), [register_value(t + timedelta(hours=1), 9000, 0)]
            )
        before = _balance(field)
        with field.sessions.begin() as db:
            db.execute(text("UPDATE meter_readings SET import_wh = 400000"))
        assert _balance(field).pending_wh == before.pending_wh == 9000
        edit = "UPDATE raw_frames SET frame = replace(frame, '9000', '90000') WHERE frame LIKE '%9000%'"
        # any user with write access: refused by the database (raw frames are append-only)
        with pytest.raises(IntegrityError, match="AppendOnlyError"), field.sessions.begin() as db:
            db.execute(text(edit))
        with field.sessions() as db:
            signed_heads = heads(db)
        # a schema owner who drops the guard: the frame's chain names the edit
        with field.sessions.begin() as db:
            as_schema_owner(db, edit)
        with field.sessions() as db, pytest.raises(FrameChainError, match="changed after it was stored"):
            load_verified(db, signed_heads)
        # ... and a deleted frame
        with field.sessions.begin() as db:
            as_schema_owner(db, "DELETE FROM raw_frames WHERE station_id = 'st21' AND seq = 1")
        with field.sessions() as db, pytest.raises(FrameChainError, match="frame 1 is missing"):
            load_verified(db, signed_heads)

    _run(database, case)


def _meter_role(database: str) -> str:
    """The metering service's own role on this PostgreSQL database; its URL. The role reads field data
    and inserts meter signatures, and nothing else."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ProgrammingError

    from backend.db.roles import grant_meter_role

    owner = create_engine(database)
    with owner.begin() as connection:
        grant_meter_role(connection, "v2g_meter", "a meter's own password")
    owner.dispose()
    url = make_url(database).set(username="v2g_meter", password="a meter's own password")
    meter = create_engine(url)
    try:
        for statement in (
            "INSERT INTO raw_frames (station_id, seq, received_at, frame, prev_hash, hash) "
            "VALUES ('st21', 999, now(), 'x', 'x', 'x')",
            "UPDATE periods SET status = 'claimed'",
            "INSERT INTO owners (id, address) VALUES ('meter', '0x')",
        ):
            with pytest.raises(ProgrammingError, match="permission denied"), meter.begin() as connection:
                connection.execute(text(statement))
        with meter.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM raw_frames")).scalar_one() > 0
    finally:
        meter.dispose()
    return url.render_as_string(hide_password=False)


def test_late_data_is_an_adjustment_of_the_next_period_and_nothing_is_paid_twice(
    tmp_path: Path, database: str
) -> None:
    from backend.app.settle import SettlePolicy, settle_metered
    from backend.audit.recompute import export_period, recompute_file
    from backend.db.models import Period, SettledTradeRow
    from backend.metering.reach import metering_service
    from backend.metering.service import MeterClient, MeterServiceError
    from backend.platform import Platform

    async def case(field: Field) -> None:
        t = DAY + timedelta(hours=10)
        async with field.station("st21") as st:
            field.clock.now = t
            await st.event("Started", "a", t, [register_value(t, 0, 0)], token="TOKEN0")
            field.clock.now = t + timedelta(hours=1)
            await st.event(
                "Updated", "a", t + timedelta(hours=1), [register_value(t + timedelta(hours=1), 5000, 0)]
            )
        with (
            Platform.open(
                field.database_url, "eth-tester", data_dir=tmp_path / "data", deployments_dir=tmp_path / "dep"
            ) as platform,
            contextlib.ExitStack() as stack,
        ):
            # on PostgreSQL the metering service runs as its own role (reads field data, inserts its record)
            meter_url = None
            if field.database_url.startswith("postgresql"):
                meter_url = stack.enter_context(metering_service(_meter_role(field.database_url), 100))
            _, period_d, status = settle_metered(
                platform,
                D,
                SettlePolicy(fee_bps=100),
                now=DAY + timedelta(days=1, hours=1),
                meter_url=meter_url,
            )
            assert status == "claimed" and period_d.total_debit + period_d.total_credit > 0
            assert _balance(field, D).settled_wh == 5000
            # the station was offline: its queued readings for the settled day arrive the next morning
            async with field.station("st21") as st:
                field.clock.now = DAY + timedelta(days=1, hours=9)
                noon = DAY + timedelta(hours=12)
                await st.event("Updated", "a", noon, [register_value(noon, 7000, 0)], offline=True, seq_no=2)
                eight = DAY + timedelta(days=1, hours=8)
                await st.event(
                    "Updated", "a", eight, [register_value(eight, 9000, 0)], offline=True, seq_no=3
                )
                nine = eight + timedelta(hours=1)
                await st.event("Ended", "a", nine, [register_value(nine, 10_000, 0)], seq_no=4)
            late = _balance(field, D)
            assert (late.settled_wh, late.adjusted_wh, late.pending_wh) == (5000, 0, 3200)
            _, _, status = settle_metered(
                platform, D1, SettlePolicy(fee_bps=100), now=DAY + timedelta(days=2), meter_url=meter_url
            )
            assert status == "claimed"
            with platform.sessions() as db:
                adjusted = sorted(
                    (r.interval_start, r.energy_wh)
                    for r in db.scalars(select(SettledTradeRow).where(SettledTradeRow.period_id == D1))
                    if r.interval_start < DAY + timedelta(days=1)
                )
            assert sum(wh for _, wh in adjusted) == 3200  # the original intervals of the settled day
            assert adjusted[0][0] == DAY + timedelta(hours=11)
            day, next_day = _balance(field, D), _balance(field, D1)
            assert (day.settled_wh, day.adjusted_wh, day.pending_wh) == (5000, 3200, 0)
            assert (next_day.settled_wh, next_day.pending_wh) == (1800, 0)
            # settling again sends nothing and pays nothing twice
            settle_metered(platform, D1, SettlePolicy(fee_bps=100), meter_url=meter_url)
            assert _balance(field, D).adjusted_wh == 3200

            # an auditor recomputes the next period's root from a raw-frame export alone
            with platform.sessions() as db:
                export_period(db, D1, tmp_path / "frames.json")
            recomputed = recompute_file(tmp_path / "frames.json", D1)
            assert recomputed.root == platform.period_on_chain(D1) != ""

            # a raw frame edited in the database: the meter refuses to sign anything over it
            with platform.sessions.begin() as db:
                as_schema_owner(db, "UPDATE raw_frames SET frame = replace(frame, '5000', '50000')")
                stored = db.get(Period, D1)
                assert stored is not None
                ask: dict[str, Any] = dict(
                    chain_id=platform.record.chain_id,
                    contract=platform.record.settlement,
                    period_id=D1,
                    root=bytes.fromhex(stored.root[2:]),
                    total_credit=stored.total_credit,
                    total_debit=stored.total_debit,
                    entry_count=stored.entry_count,
                    frame_heads=stored.frame_heads,
                )
            with (
                metering_service(field.database_url, 100) as url,
                pytest.raises(MeterServiceError, match="FrameChainError"),
            ):
                MeterClient(url)(**ask)

    _run(database, case)


def test_the_meters_record_with_its_policy_stays_append_only(database: str) -> None:
    # migration 0010 adds the policy column without copying the table: the guard of 0009 still holds
    from backend.db.models import MeterSignature
    from backend.db.session import migrate, session_factory

    migrate(database)
    sessions = session_factory(database)
    with sessions.begin() as db:
        db.add(
            MeterSignature(
                period_id=20230702,
                chain_id=1,
                contract="0x" + "00" * 20,
                root="0x" + "11" * 32,
                frame_heads={},
                signature="0x" + "22" * 65,
                policy={"fee_bps": 100, "clock_tolerance_s": 900.0},
            )
        )
    for statement in (
        "UPDATE meter_signatures SET policy = NULL",
        "DELETE FROM meter_signatures",
    ):
        with pytest.raises(IntegrityError, match="AppendOnlyError"), sessions.begin() as db:
            db.execute(text(statement))
    with sessions() as db:
        assert db.scalars(select(MeterSignature.policy)).one() == {"fee_bps": 100, "clock_tolerance_s": 900.0}
