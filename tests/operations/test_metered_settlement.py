"""An operated day ends in a settlement of metered energy, signed by the metering service (its own process
and key), never of the plan."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.app.settle import SettlePolicy
from backend.audit.energy import energy_balance, recorded_policy
from backend.db.models import Period, PeriodEntry
from backend.metering.period import build_metered
from backend.metering.reach import metering_service
from backend.metering.replay import MeterPolicy
from backend.metering.service import MeterClient, MeterServiceError
from backend.operations.run import operate_simulated_day
from backend.platform import Platform

DAY = "2023-07-02"


def test_an_operated_day_settles_the_metered_energy_signed_by_the_meter(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'v2g.sqlite'}"
    with Platform.open(
        database, "eth-tester", data_dir=tmp_path / "data", deployments_dir=tmp_path / "dep"
    ) as platform:
        result = asyncio.run(
            operate_simulated_day(
                platform, day=DAY, stations=5, seed=3, minutes=0.2, policy=SettlePolicy(fee_bps=100)
            )
        )
        record = platform.record
        assert result.reconciliation_ok and result.status == "claimed", result
        assert result.transactions == 5 and result.meter_readings > 50 and result.replans > 0
        with platform.sessions() as db:
            stored = {(e.owner_id, e.amount) for e in db.scalars(select(PeriodEntry))}
            period = db.get(Period, result.period_id)
            assert period is not None
            assert period.frame_heads
            # the meter recorded the policy it signed under: the clock tolerance of an accelerated day (5
            # simulated minutes of a real second: a loaded CI machine puts a frame's receive time more than
            # 900 simulated seconds after its stamp) and the fee
            policy = recorded_policy(db, result.period_id)
            assert policy == MeterPolicy(clock_tolerance_s=max(900.0, 5.0 * 24 * 3600 / (0.2 * 60)))
            assert energy_balance(db, result.period_id).ok  # an audit replays the day under it by itself
            # rebuilt as the meter built it: at the heads the period committed to, under its policy
            metered = build_metered(
                db,
                result.period_id,
                100,
                chain_id=record.chain_id,
                contract=record.settlement,
                heads=period.frame_heads,
                policy=policy,
            )
            # the entries are the metered energy priced by the tariff
            assert stored == {(e.owner_id, e.amount) for e in metered.entries}
            assert period.root == "0x" + metered.root.hex()
            # ... and not the plan: the plan's own period (last planned energy per interval) differs
            from backend.db.models import Vehicle

            owners = {v.id: v.owner_id for v in db.scalars(select(Vehicle))}
    assert result.abs_deviation_wh > 0
    assert result.metered_wh != result.planned_wh

    # a settler that asks the meter to sign anything else is refused with the reason
    with metering_service(database, 100) as url:
        sign = MeterClient(url)
        with pytest.raises(MeterServiceError, match="MeterMismatchError"):
            sign(
                chain_id=record.chain_id,
                contract=record.settlement,
                period_id=result.period_id,
                root=bytes(32),
                total_credit=period.total_credit,
                total_debit=period.total_debit,
                entry_count=period.entry_count,
                frame_heads=period.frame_heads,
            )
        with pytest.raises(MeterServiceError, match="MeterMismatchError"):
            sign(
                chain_id=record.chain_id + 1,
                contract=record.settlement,
                period_id=result.period_id,
                root=metered.root,
                total_credit=period.total_credit,
                total_debit=period.total_debit,
                entry_count=period.entry_count,
                frame_heads=period.frame_heads,
            )
    assert owners  # the fleet was registered with its owners
