"""Trades → money: the tariff, peer-to-peer matching and the one rounding rule.

Units: energy in whole Wh, prices in token base units per kWh (6-decimal token:
1 EUR/MWh = 1,000 base units per kWh), money in base units; all ``int``.

The rounding rule, identical to ``contracts/SettlementMath.sol`` (tested equal on
random inputs): value = wh × price / 1000 rounded to the nearest unit, halves
away from zero; fee = amount × bps / 10,000 rounded half up. Market prices in
EUR/MWh convert to base units per kWh by the same rule.

Peer to peer: in each interval, energy that some owners' vehicles discharge
while others charge at the same site is matched (M = min(charged, discharged))
and settled owner to owner at the local price, the midpoint of buy and sell
(rounded by the rule); only the remainder is bought from or sold to the grid
through the aggregator. M is shared among the interval's trades in proportion
to their energy (largest remainder, ties by trade key), so every Wh of every
trade is settled exactly once, either peer to peer or against the grid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from scheduler.schedule import Direction, Trade

WH_PER_KWH = 1000
BPS = 10_000
TOKEN_DECIMALS = 6


class TariffError(ValueError):
    """A tariff that cannot price a trade (unknown interval, negative fee, ...)."""


def _div_half_away(numerator: int, denominator: int) -> int:
    magnitude = (abs(numerator) + denominator // 2) // denominator
    return -magnitude if numerator < 0 else magnitude


def energy_value(wh: int, price_per_kwh: int) -> int:
    """Base units for ``wh`` at ``price_per_kwh``: wh × price / 1000, halves away from zero."""
    if wh < 0:
        raise TariffError(f"energy {wh} Wh must be >= 0")
    return _div_half_away(wh * price_per_kwh, WH_PER_KWH)


def fee_of(amount: int, fee_bps: int) -> int:
    """``fee_bps`` basis points of ``amount`` (>= 0), rounded half up."""
    if amount < 0 or fee_bps < 0:
        raise TariffError("fee_of takes a non-negative amount and fee")
    return (amount * fee_bps + BPS // 2) // BPS


def eur_mwh_to_base_per_kwh(eur_mwh: float, decimals: int = TOKEN_DECIMALS) -> int:
    """A market price in EUR/MWh as token base units per kWh (exact for prices with ≤ 3 decimals)."""
    units = Decimal(repr(float(eur_mwh))) * (Decimal(10) ** decimals) / WH_PER_KWH
    return int(units.quantize(Decimal(1), rounding=ROUND_HALF_UP))  # ROUND_HALF_UP is away from zero


@dataclass(frozen=True)
class Tariff:
    """Buy and sell prices per interval (base units per kWh) and the aggregator's fee (basis points)."""

    buy_per_kwh: dict[datetime, int]
    sell_per_kwh: dict[datetime, int]
    fee_bps: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fee_bps <= BPS:
            raise TariffError(f"fee {self.fee_bps} bps must be within 0..10000")
        if self.buy_per_kwh.keys() != self.sell_per_kwh.keys():
            raise TariffError("buy and sell prices cover different intervals")

    @classmethod
    def from_market(
        cls,
        timestamps: Sequence[datetime],
        buy_eur_mwh: Sequence[float],
        sell_eur_mwh: Sequence[float],
        fee_bps: int = 0,
    ) -> Tariff:
        return cls(
            {t: eur_mwh_to_base_per_kwh(p) for t, p in zip(timestamps, buy_eur_mwh, strict=True)},
            {t: eur_mwh_to_base_per_kwh(p) for t, p in zip(timestamps, sell_eur_mwh, strict=True)},
            fee_bps,
        )

    def local_per_kwh(self, t: datetime) -> int:
        """The peer-to-peer price: midpoint of buy and sell, halves away from zero."""
        return _div_half_away(self.buy_per_kwh[t] + self.sell_per_kwh[t], 2)

    def prices(self, t: datetime) -> tuple[int, int, int]:
        if t not in self.buy_per_kwh:
            raise TariffError(f"no price for interval {t.isoformat()}")
        return self.buy_per_kwh[t], self.sell_per_kwh[t], self.local_per_kwh(t)


@dataclass(frozen=True)
class SettledTrade:
    """One trade priced: its energy split into peer-to-peer and grid parts, and the owner's amount.

    ``amount`` is from the owner's side: negative when the owner pays (charging at a
    positive price), positive when the owner is paid (discharging, or charging at a
    negative price). ``fee`` (≥ 0) is already taken out of ``amount``.
    """

    trade: Trade
    p2p_wh: int
    grid_wh: int
    p2p_price: int
    grid_price: int
    value: int
    fee: int
    amount: int


def _share(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` in whole units (largest remainder, stable ties)."""
    whole = sum(weights)
    if whole == 0:
        return [0] * len(weights)
    base = [total * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in remainders[: total - sum(base)]:
        base[i] += 1
    return base


def settle_trades(trades: Sequence[Trade], tariff: Tariff) -> list[SettledTrade]:
    """Price every trade (see the module docstring); the result is in the trades' key order."""
    by_interval: dict[datetime, list[Trade]] = defaultdict(list)
    for trade in trades:
        if trade.energy_wh <= 0:
            raise TariffError(f"trade {trade.session_id} at {trade.interval_start}: energy must be positive")
        by_interval[trade.interval_start].append(trade)
    out: list[SettledTrade] = []
    for t in sorted(by_interval):
        buy, sell, local = tariff.prices(t)
        group = sorted(by_interval[t], key=lambda tr: (tr.direction, tr.session_id))
        charges = [tr for tr in group if tr.direction is Direction.CHARGE]
        discharges = [tr for tr in group if tr.direction is Direction.DISCHARGE]
        matched = min(sum(tr.energy_wh for tr in charges), sum(tr.energy_wh for tr in discharges))
        for side, grid_price, sign in ((charges, buy, -1), (discharges, sell, 1)):
            p2p = _share(matched, [tr.energy_wh for tr in side])
            for tr, p2p_wh in zip(side, p2p, strict=True):
                grid_wh = tr.energy_wh - p2p_wh
                value = energy_value(p2p_wh, local) + energy_value(grid_wh, grid_price)
                fee = fee_of(abs(value), tariff.fee_bps)
                out.append(
                    SettledTrade(tr, p2p_wh, grid_wh, local, grid_price, value, fee, sign * value - fee)
                )
    out.sort(key=lambda st: (st.trade.interval_start, st.trade.session_id, st.trade.direction))
    return out
