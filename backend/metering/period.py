"""A day's metered period: from the stored meter registers to the trades, the tariff and the period.

The settler builds the period with it; the metering service builds it again on its own, from the same
raw registers, and signs only when the two agree. Nothing here reads the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Owner, PricePoint
from backend.operations.metered import MeteredInterval, metered_intervals, metered_trades
from backend.settlement.period import PeriodBuild, build_period
from backend.settlement.tariff import Tariff, settle_trades
from scheduler.schedule import Trade


class MeteredPeriodError(ValueError):
    """A metered period that cannot be built (no prices for its day, ...)."""


@dataclass(frozen=True)
class MeteredPeriod:
    period_id: int
    start: datetime
    end: datetime
    intervals: list[MeteredInterval]
    trades: list[Trade]
    tariff: Tariff
    unattributed_wh: int


def period_window(period_id: int) -> tuple[datetime, datetime]:
    """A period id is its UTC day, ``YYYYMMDD``."""
    try:
        day = datetime.strptime(str(period_id), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        raise MeteredPeriodError(f"period {period_id} is not a day (YYYYMMDD)") from None
    return day, day + timedelta(days=1)


def tariff_for(
    session: Session, start: datetime, end: datetime, fee_bps: int, interval_minutes: int = 15
) -> Tariff:
    prices = {
        p.utc: p.eur_mwh
        for p in session.scalars(select(PricePoint).where(PricePoint.utc >= start, PricePoint.utc < end))
    }
    stamps = list(pd.date_range(start, end, freq=f"{interval_minutes}min", inclusive="left").to_pydatetime())
    try:
        hourly = [prices[t.replace(minute=0, second=0, microsecond=0)] for t in stamps]
    except KeyError as exc:
        raise MeteredPeriodError(f"no price for the hour {exc.args[0]}") from None
    return Tariff.from_market(stamps, hourly, hourly, fee_bps)


def metered_period(
    session: Session, period_id: int, fee_bps: int, interval_minutes: int = 15
) -> MeteredPeriod:
    start, end = period_window(period_id)
    intervals = metered_intervals(session, start, end, interval_minutes)
    trades, unattributed = metered_trades(intervals)
    return MeteredPeriod(
        period_id,
        start,
        end,
        intervals,
        trades,
        tariff_for(session, start, end, fee_bps, interval_minutes),
        unattributed,
    )


def build_metered(
    session: Session, period_id: int, fee_bps: int, *, chain_id: int, contract: str
) -> PeriodBuild:
    """The period (entries, root, totals) the meter data gives."""
    metered = metered_period(session, period_id, fee_bps)
    addresses = {o.id: o.address for o in session.scalars(select(Owner))}
    return build_period(
        period_id,
        settle_trades(metered.trades, metered.tariff),
        addresses,
        chain_id=chain_id,
        contract=contract,
    )
