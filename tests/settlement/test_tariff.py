"""The rounding rule equals the contract's; peer-to-peer matching settles every Wh exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.chain.client import Chain
from backend.chain.contracts import SettlementClient, TokenClient
from backend.settlement.tariff import (
    Tariff,
    TariffError,
    energy_value,
    eur_mwh_to_base_per_kwh,
    fee_of,
    settle_trades,
)
from scheduler.schedule import Direction, Trade

T0 = datetime(2023, 7, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def settlement() -> Iterator[SettlementClient]:
    chain = Chain.eth_tester()
    admin = chain.accounts[0]
    token = TokenClient.deploy(chain, admin)
    client, _ = SettlementClient.deploy(
        chain, admin, token.address, admin.address, admin.address, chain.accounts[1].address, 60
    )
    yield client


def test_energy_value_hand_values() -> None:
    assert energy_value(2_500, 34_940) == 87_350  # 2.5 kWh at 34.94 EUR/MWh = 0.08735 EUR
    assert energy_value(1, 500) == 1  # 0.5 rounds away from zero
    assert energy_value(1, 499) == 0
    assert energy_value(1, -500) == -1
    assert energy_value(3, -500_000) == -1_500
    assert fee_of(12_345, 150) == 185  # 185.175
    assert fee_of(1, 5_000) == 1  # 0.5 up
    assert eur_mwh_to_base_per_kwh(34.94) == 34_940
    assert eur_mwh_to_base_per_kwh(-500.0) == -500_000
    assert eur_mwh_to_base_per_kwh(0.0005) == 1  # half away from zero
    with pytest.raises(TariffError):
        energy_value(-1, 10)


@settings(max_examples=60, deadline=None)
@given(
    wh=st.integers(0, 10**12),
    price=st.integers(-(10**9), 10**9),
    amount=st.integers(0, 2**96),
    bps=st.integers(0, 10_000),
)
def test_rounding_rule_equals_the_contract(
    settlement: SettlementClient, wh: int, price: int, amount: int, bps: int
) -> None:
    assert settlement.chain.call(settlement.contract.functions.energyValue(wh, price)) == energy_value(
        wh, price
    )
    assert settlement.chain.call(settlement.contract.functions.feeOf(amount, bps)) == fee_of(amount, bps)


def trade(owner: str, direction: Direction, wh: int, t: int = 0) -> Trade:
    return Trade(owner, f"v-{owner}", f"s-{owner}", T0 + timedelta(minutes=15 * t), direction, wh)


def tariff(buy: int, sell: int, fee: int = 0, n: int = 2) -> Tariff:
    stamps = [T0 + timedelta(minutes=15 * i) for i in range(n)]
    return Tariff({t: buy for t in stamps}, {t: sell for t in stamps}, fee)


def test_settle_trades_matches_discharge_against_charge_at_the_midpoint() -> None:
    # A discharges 3,000 Wh while B charges 2,000 and C 2,000: 3,000 Wh matched, B and C 1,500 each.
    trades = [
        trade("A", Direction.DISCHARGE, 3_000),
        trade("B", Direction.CHARGE, 2_000),
        trade("C", Direction.CHARGE, 2_000),
    ]
    settled = {s.trade.owner: s for s in settle_trades(trades, tariff(buy=100_000, sell=60_000))}
    a, b, c = settled["A"], settled["B"], settled["C"]
    assert (a.p2p_wh, a.grid_wh, a.amount) == (3_000, 0, 240_000)  # 3 kWh at 80,000/kWh
    assert (b.p2p_wh, b.grid_wh, b.amount) == (1_500, 500, -(120_000 + 50_000))
    assert (c.p2p_wh, c.grid_wh) == (1_500, 500)
    # Owners pay and receive the same for the matched energy: the aggregator keeps nothing of it.
    assert a.amount + b.amount + c.amount == -(2 * 50_000)


def test_settle_trades_takes_the_fee_from_every_trade() -> None:
    settled = settle_trades([trade("A", Direction.CHARGE, 1_000)], tariff(buy=100_000, sell=90_000, fee=250))
    (a,) = settled
    assert (a.value, a.fee, a.amount) == (100_000, 2_500, -102_500)


def test_settle_trades_pays_owners_who_charge_at_negative_prices() -> None:
    (a,) = settle_trades([trade("A", Direction.CHARGE, 2_000)], tariff(buy=-500_000, sell=-500_000, fee=100))
    assert a.value == -1_000_000 and a.fee == 10_000 and a.amount == 990_000


@settings(max_examples=80, deadline=None)
@given(
    flows=st.lists(
        st.tuples(
            st.integers(0, 7), st.sampled_from(list(Direction)), st.integers(1, 50_000), st.integers(0, 3)
        ),
        min_size=1,
        max_size=40,
        unique_by=lambda f: (f[0], f[1], f[3]),
    ),
    buy=st.integers(-600_000, 600_000),
    spread=st.integers(0, 50_000),
)
def test_settle_trades_settles_every_wh_exactly_once(
    flows: list[tuple[int, Direction, int, int]], buy: int, spread: int
) -> None:
    trades = [trade(f"o{o}", d, wh, t) for o, d, wh, t in flows]
    settled = settle_trades(trades, tariff(buy=buy, sell=buy - spread, n=4))
    assert Counter(s.trade for s in settled) == Counter(trades)
    for s in settled:
        assert s.p2p_wh + s.grid_wh == s.trade.energy_wh and s.p2p_wh >= 0 and s.grid_wh >= 0
    for t in {tr.interval_start for tr in trades}:
        here = [s for s in settled if s.trade.interval_start == t]
        charged = sum(s.p2p_wh for s in here if s.trade.direction is Direction.CHARGE)
        discharged = sum(s.p2p_wh for s in here if s.trade.direction is Direction.DISCHARGE)
        total_c = sum(s.trade.energy_wh for s in here if s.trade.direction is Direction.CHARGE)
        total_d = sum(s.trade.energy_wh for s in here if s.trade.direction is Direction.DISCHARGE)
        assert charged == discharged == min(total_c, total_d)
    assert sum(s.p2p_wh + s.grid_wh for s in settled) == sum(tr.energy_wh for tr in trades)


def test_settle_trades_refuses_unpriced_interval() -> None:
    with pytest.raises(TariffError, match="no price"):
        settle_trades([trade("A", Direction.CHARGE, 10, t=5)], tariff(100, 90))
