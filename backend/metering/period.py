"""A day's metered period, from the raw frames: its own day's energy and the adjustments of late data.

A metered period is computed at the stations' raw-frame heads when it is built (:mod:`frames`): its
day's accepted energy (:mod:`replay`) and, for every earlier-settled day, the energy that arrived since
the last period the metering service signed (accepted at these heads minus accepted at those), each as
a trade of its *original* interval priced at that interval's price. So a Wh of a day already proposed or
settled lands in the next period, once, and no settled period is ever reopened.

The settler builds the period with this module; the metering service builds it again on its own, from
the verified raw frames and its own record of what it signed, and signs only when the two agree.
Nothing here reads the plan, nor the tables derived from the frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import MeterSignature, Owner, PricePoint, RawFrame
from backend.metering import frames as raw
from backend.metering.replay import Ledger, MeterPolicy, Refusal, Registry, replay
from backend.operations.metered import MeteredInterval, trades_of
from backend.settlement.period import PeriodBuild, build_period
from backend.settlement.tariff import Tariff, settle_trades
from scheduler.schedule import Trade


class MeteredPeriodError(ValueError):
    """A metered period that cannot be built (named subclasses)."""


class NoPricesError(MeteredPeriodError):
    pass


class NoFieldDataError(MeteredPeriodError):
    pass


class DayNotEndedError(MeteredPeriodError):
    pass


class NotADayError(MeteredPeriodError):
    pass


class MeteredEnergyShrankError(MeteredPeriodError):
    """Energy accepted for a settled interval is less than when it was settled (the registry changed)."""


@dataclass(frozen=True)
class MeteredPeriod:
    period_id: int
    start: datetime
    end: datetime
    heads: raw.Heads
    #: The heads of the last period the metering service signed before this one (``None``: the first).
    prev_heads: raw.Heads | None
    #: The day's own accepted energy per transaction and interval.
    intervals: list[MeteredInterval]
    #: Late energy of earlier-settled days, per transaction and original interval.
    adjustments: list[MeteredInterval]
    trades: list[Trade]
    tariff: Tariff
    ledger: Ledger

    @property
    def refusals(self) -> list[Refusal]:
        return [r for r in self.ledger.refusals if self.start <= r.at < self.end]

    @property
    def unattributed_wh(self) -> int:
        return sum(r.wh for r in self.refusals if r.reason == "UnattributedEnergyError")

    @property
    def adjusted_wh(self) -> int:
        return sum(m.import_wh + m.export_wh for m in self.adjustments)


def period_window(period_id: int) -> tuple[datetime, datetime]:
    """A period id is its UTC day, ``YYYYMMDD``, from 1970 (a chain's clock starts there) to 9999-12-30
    (the last whose end a date can hold); :class:`NotADayError` otherwise."""
    year, rest = divmod(int(period_id), 10_000)
    month, day_of_month = divmod(rest, 100)
    try:
        if year < 1970:
            raise ValueError(year)
        day = datetime(year, month, day_of_month, tzinfo=UTC)
        return day, day + timedelta(days=1)
    except (ValueError, OverflowError):
        raise NotADayError(f"period {period_id} is not a day (YYYYMMDD, 1970 to 9999-12-30)") from None


def day_of(at: datetime) -> int:
    return int(at.astimezone(UTC).strftime("%Y%m%d"))


def tariff_for(session: Session, days: list[int], fee_bps: int, interval_minutes: int = 15) -> Tariff:
    """The tariff over the intervals of ``days`` (the period's own and those it adjusts)."""
    stamps = interval_stamps(days, interval_minutes)
    lo, hi = min(stamps), max(stamps) + timedelta(hours=1)
    prices = {
        p.utc: p.eur_mwh
        for p in session.scalars(select(PricePoint).where(PricePoint.utc >= lo, PricePoint.utc < hi))
    }
    return tariff_from(prices, stamps, fee_bps)


def interval_stamps(days: list[int], interval_minutes: int = 15) -> list[datetime]:
    stamps: list[datetime] = []
    for day in sorted(set(days)):
        start, end = period_window(day)
        stamps.extend(
            pd.date_range(start, end, freq=f"{interval_minutes}min", inclusive="left").to_pydatetime()
        )
    return stamps


def tariff_from(prices: Mapping[datetime, float], stamps: list[datetime], fee_bps: int) -> Tariff:
    """The tariff of ``stamps`` from hourly prices (EUR/MWh by UTC hour)."""
    try:
        hourly = [prices[t.replace(minute=0, second=0, microsecond=0)] for t in stamps]
    except KeyError as exc:
        raise NoPricesError(
            f"no price stored for the hour {exc.args[0].isoformat()} (store the day's prices first)"
        ) from None
    return Tariff.from_market(stamps, hourly, hourly, fee_bps)


@dataclass(frozen=True)
class SignedBefore:
    """What the metering service signed before a period: its last heads and the days it settled."""

    heads: raw.Heads | None
    days: frozenset[int]


def is_simulated(signature: MeterSignature) -> bool:
    """A signature over simulated registers (a simulated schedule on a local chain), not raw frames."""
    return bool(signature.policy and signature.policy.get("simulated"))


def signed_policy(session: Session, period_id: int) -> tuple[int, MeterPolicy] | None:
    """The fee and the policy the metering service signed ``period_id`` under (None: not signed, or signed
    before migration 0010 recorded them)."""
    row = session.scalar(select(MeterSignature).where(MeterSignature.period_id == period_id))
    if row is None or row.policy is None or is_simulated(row):
        return None
    return int(row.policy["fee_bps"]), MeterPolicy.from_json(row.policy)


def signed_before(session: Session, period_id: int) -> SignedBefore:
    """The metering service's own record (``meter_signatures``), up to the period's own signature if it
    has one (a resumed period is recomputed as it was signed)."""
    # a simulated day's signature covers no raw frames: metered adjustments are counted from the last
    # metered signature's heads
    rows = [
        r for r in session.scalars(select(MeterSignature).order_by(MeterSignature.id)) if not is_simulated(r)
    ]
    mine = next((r.id for r in rows if r.period_id == period_id), None)
    before = [r for r in rows if mine is None or r.id < mine]
    if not before:
        return SignedBefore(None, frozenset())
    return SignedBefore(dict(before[-1].frame_heads), frozenset(r.period_id for r in before))


def _intervals(
    ledger: Ledger, accepted: Mapping[tuple[str, str, datetime], tuple[int, int]]
) -> list[MeteredInterval]:
    out = []
    for (station, tx, interval), (imp, exp) in sorted(accepted.items()):
        info = ledger.transactions[(station, tx)]
        if info.owner_id is None:
            continue
        out.append(
            MeteredInterval(station, tx, info.vehicle_id, info.owner_id, info.session_id, interval, imp, exp)
        )
    return out


def compose(
    period_id: int,
    ledger: Ledger,
    previous: Ledger | None,
    signed_days: frozenset[int],
) -> tuple[list[MeteredInterval], list[MeteredInterval]]:
    """A period's own day's energy and its adjustments: for every day the metering service signed before
    (``signed_days``), what ``ledger`` accepts beyond what ``previous`` (the ledger at the heads of the last
    signature) accepted."""
    start, end = period_window(period_id)
    accepted = ledger.accepted()
    own = {k: v for k, v in accepted.items() if start <= k[2] < end}
    adjust: dict[tuple[str, str, datetime], tuple[int, int]] = {}
    if previous is not None:
        was_accepted = previous.accepted()
        for k, (imp, exp) in accepted.items():
            if day_of(k[2]) not in signed_days or start <= k[2] < end:
                continue
            was = was_accepted.get(k, (0, 0))
            d_imp, d_exp = imp - was[0], exp - was[1]
            if d_imp < 0 or d_exp < 0:
                raise MeteredEnergyShrankError(
                    f"transaction {k[1]} at station {k[0]}, interval {k[2].isoformat()}: "
                    f"{imp}/{exp} Wh now, {was[0]}/{was[1]} Wh when it was settled"
                )
            if d_imp or d_exp:
                adjust[k] = (d_imp, d_exp)
    return _intervals(ledger, own), _intervals(ledger, adjust)


def settleable(session: Session, period_id: int, now: datetime) -> None:
    """What can be refused before a metering service is asked: the day has not ended
    (:class:`DayNotEndedError`), its prices are not stored (:class:`NoPricesError`), no station ever sent
    a frame (:class:`NoFieldDataError`)."""
    _, end = period_window(period_id)
    if now < end:
        raise DayNotEndedError(
            f"period {period_id}: the day ends at {end.isoformat()}; a day is settled once it has ended"
        )
    tariff_for(session, [period_id], 0)
    if session.scalar(select(RawFrame.id).limit(1)) is None:
        raise NoFieldDataError(f"period {period_id}: no station has sent any field data")


def metered_period(
    session: Session,
    period_id: int,
    fee_bps: int,
    *,
    heads: Mapping[str, list[Any]] | None = None,
    policy: MeterPolicy | None = None,
    now: datetime | None = None,
) -> MeteredPeriod:
    """The period at ``heads`` (default: every station's last frame now), from verified raw frames."""
    start, end = period_window(period_id)
    if now is not None and now < end:
        raise DayNotEndedError(
            f"period {period_id}: the day ends at {end.isoformat()}; a day is settled once it has ended"
        )
    heads_ = dict(heads) if heads is not None else raw.heads(session)
    before = signed_before(session, period_id)
    registry = Registry.load(session)
    ledger = replay(raw.load_verified(session, heads_), registry, policy)
    previous = None
    if before.heads is not None:
        raw.extends(before.heads, heads_, session)
        previous = replay(raw.load_verified(session, before.heads), registry, policy)
    intervals, adjustments = compose(period_id, ledger, previous, before.days)
    if not intervals and not adjustments and not any(start <= r.at < end for r in ledger.refusals):
        raise NoFieldDataError(f"period {period_id}: no metered energy for the day in the field data")
    days = [period_id, *sorted({day_of(m.interval_start) for m in adjustments})]
    return MeteredPeriod(
        period_id,
        start,
        end,
        heads_,
        before.heads,
        intervals,
        adjustments,
        trades_of(intervals) + trades_of(adjustments),
        tariff_for(session, days, fee_bps),
        ledger,
    )


def build_metered(
    session: Session,
    period_id: int,
    fee_bps: int,
    *,
    chain_id: int,
    contract: str,
    heads: Mapping[str, list[Any]] | None = None,
    policy: MeterPolicy | None = None,
) -> PeriodBuild:
    """The period (entries, root, totals) the raw frames give."""
    metered = metered_period(session, period_id, fee_bps, heads=heads, policy=policy)
    return build_from(session, metered, chain_id=chain_id, contract=contract)


def build_from(session: Session, metered: MeteredPeriod, *, chain_id: int, contract: str) -> PeriodBuild:
    addresses = {o.id: o.address for o in session.scalars(select(Owner))}
    return build_period(
        metered.period_id,
        settle_trades(metered.trades, metered.tariff),
        addresses,
        chain_id=chain_id,
        contract=contract,
    )
