"""A simulated day is signed by the metering service from the registers it implies, never in the settler's
process: the registers round-trip to the same trades, a register that runs backwards or a root that is not
the registers' is refused by name, and a whole simulated settlement succeeds with this process unable to
produce a meter signature."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from backend.app.settle import SettlePolicy, settle_simulated
from backend.db.models import MeterSignature, Period, PeriodStatus
from backend.metering.reach import metering_service
from backend.metering.service import MeterClient, MeterServiceError
from backend.metering.simulated import SimulatedRegisterError, digest, read, registers_of
from backend.platform import MeterKeyOutsideMeterError, Platform
from backend.settlement.tariff import Tariff
from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.schedule import Direction, Trade, to_trades
from scheduler.solve import solve

T0 = datetime(2024, 3, 5, tzinfo=UTC)
STAMPS = [T0 + timedelta(minutes=15 * k) for k in range(4)]
END = T0 + timedelta(hours=1)
TARIFF = Tariff(dict.fromkeys(STAMPS, 100_000), dict.fromkeys(STAMPS, 90_000), 100)


def _trade(session: str, k: int, direction: Direction, wh: int) -> Trade:
    return Trade(f"owner-{session}", f"ev-{session}", session, STAMPS[k], direction, wh)


def test_registers_give_back_exactly_the_trades() -> None:
    trades = [
        _trade("a", 0, Direction.CHARGE, 2_750),
        _trade("a", 1, Direction.CHARGE, 1),
        _trade("a", 3, Direction.DISCHARGE, 900),
        _trade("b", 2, Direction.CHARGE, 11_000),
        _trade("b", 2, Direction.DISCHARGE, 5),
    ]
    payload = registers_of(trades, STAMPS, END, TARIFF)
    a = next(s for s in payload["sessions"] if s["session_id"] == "a")
    # cumulative registers at the boundaries where they change, from 0 Wh
    assert a["readings"] == [[0, 0, 0], [1, 2_750, 0], [2, 2_751, 0], [3, 2_751, 0], [4, 2_751, 900]]
    back, tariff, start, end = read(payload)
    key = lambda t: (t.session_id, t.interval_start, t.direction)  # noqa: E731
    assert sorted(back, key=key) == sorted(trades, key=key)
    assert (tariff, start, end) == (TARIFF, T0, END)
    assert digest(payload) == digest(copy.deepcopy(payload))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["sessions"][0]["readings"].__setitem__(2, [2, 2_000, 0]), "a register runs backwards"),
        (lambda p: p["sessions"][0]["readings"].__setitem__(0, [0, 5, 0]), "registers start at 0 Wh"),
        (lambda p: p["sessions"][0]["readings"].pop(0), "is not in one interval"),
        (lambda p: p["sessions"][0]["readings"].append([9, 9_999, 0]), "outside 0..4"),
        (lambda p: p["sessions"][0]["readings"][1].__setitem__(1, 2.5), "is not a whole number"),
        (lambda p: p["sessions"].append(copy.deepcopy(p["sessions"][0])), "registers given twice"),
        (lambda p: p["tariff"]["buy"].pop(), "one buy and one sell price per interval"),
        (lambda p: p.pop("end"), "KeyError"),
        (lambda p: p.__setitem__("end", "2024-03-05T01:00:00"), "times need their UTC offset"),
    ],
)
def test_registers_the_meter_cannot_read_are_named(edit: Any, message: str) -> None:
    payload = registers_of(
        [_trade("a", 0, Direction.CHARGE, 2_750), _trade("a", 1, Direction.CHARGE, 1)], STAMPS, END, TARIFF
    )
    edit(payload)
    with pytest.raises(SimulatedRegisterError, match=message):
        read(payload)


def test_a_simulated_day_is_signed_by_the_metering_service_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = fleet_problem("2023-07-03", load_prices().eur_mwh, FleetConfig(n_evs=12, v2g_share=0.5), seed=4)
    schedule = solve(problem)

    def no_key_here(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("a meter signature was produced in the settler's process")

    # this process cannot sign a message (a period root is one; transactions are signed otherwise), nor
    # load the meter key: the settlement still completes
    monkeypatch.setattr("eth_account.signers.local.LocalAccount.sign_message", no_key_here)
    monkeypatch.setattr("eth_account.Account.sign_message", no_key_here)
    database = f"sqlite:///{tmp_path / 'v2g.sqlite'}"
    with Platform.open(database, "eth-tester", data_dir=tmp_path / "data") as platform:
        with pytest.raises(MeterKeyOutsideMeterError, match="metering service alone"):
            platform.actors(("settler", "meter"))
        result = settle_simulated(problem, schedule, platform, SettlePolicy(fee_bps=100))
        assert result.status is PeriodStatus.CLAIMED and result.reconciliation.ok
        with platform.sessions() as session:
            (signature,) = session.scalars(select(MeterSignature))
            period = session.get_one(Period, result.period_id)
            assert signature.root == period.root and signature.signature == period.meter_signature
            assert signature.frame_heads == {}
            trades = to_trades(schedule)
            stamps = list(problem.horizon.timestamps.to_pydatetime())
            tariff = Tariff.from_market(
                stamps, list(problem.prices.buy_eur_mwh), list(problem.prices.sell_eur_mwh), 100
            )
            registers = registers_of(trades, stamps, problem.horizon.end, tariff)
            assert signature.policy == {
                "simulated": True,
                "fee_bps": 100,
                "registers_sha256": digest(registers),
            }

        # the meter signs only what the registers give: a root with one more base unit for someone is
        # refused, and so is a register that runs backwards
        with metering_service(database, 100) as url:
            sign = MeterClient(url).simulated(registers)
            header = {
                "chain_id": platform.record.chain_id,
                "contract": platform.record.settlement,
                "period_id": result.period_id + 1,
                "root": bytes.fromhex(period.root[2:]),
                "total_credit": period.total_credit + 1,
                "total_debit": period.total_debit,
                "entry_count": period.entry_count,
            }
            with pytest.raises(
                MeterServiceError, match=r"MeterMismatchError: .* the simulated registers give"
            ):
                sign(**header)
            backwards = copy.deepcopy(registers)
            session_ = next(s for s in backwards["sessions"] if len(s["readings"]) > 1)
            session_["readings"][-1][1] = -1
            with pytest.raises(MeterServiceError, match=r"SimulatedRegisterError: .* runs backwards"):
                MeterClient(url).simulated(backwards)(**header)
            with pytest.raises(MeterServiceError, match="priced with a fee of 0 bps; the meter's is 100"):
                zero_fee = copy.deepcopy(registers)
                zero_fee["tariff"]["fee_bps"] = 0
                MeterClient(url).simulated(zero_fee)(**header)
        with platform.sessions() as session:
            assert len(list(session.scalars(select(MeterSignature)))) == 1
