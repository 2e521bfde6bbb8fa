"""Conservation of energy, to the Wh: where every Wh a meter register advanced on a day went.

``metered = settled + adjusted + refused + pending`` for a UTC day, every term from a different place:

- *metered*: the register advances the raw frames report for the day (the replay of the verified frames
  up to every station's last frame, :mod:`backend.metering.replay`): accepted segments' Wh in the day's
  intervals plus the refusals counted on the day;
- *settled*: the Wh of the day's intervals in the day's own period (``settled_trades``);
- *adjusted*: the Wh of the day's intervals in later periods (late data);
- *refused*: named refusals (station, transaction, time, Wh, reason);
- *pending*: accepted energy not yet in any period (the day not settled yet, or late data that the next
  period will carry).

The day balances when, for every session, interval and direction, what the periods paid is at most what
the meters measured (pending is never negative): a Wh paid twice, or paid without a meter behind it, is
an overpayment and the day does not balance.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Period, SettledTradeRow
from backend.metering import frames as raw
from backend.metering.period import day_of, period_window, signed_policy
from backend.metering.replay import Ledger, MeterPolicy, Refusal, Registry, replay


@dataclass(frozen=True)
class Overpayment:
    session_id: str
    interval_start: datetime
    direction: str
    paid_wh: int
    metered_wh: int


@dataclass
class EnergyBalance:
    day: int
    metered_wh: int
    settled_wh: int
    adjusted_wh: int
    refused_wh: int
    pending_wh: int
    refused_by_reason: dict[str, int]
    refusals: list[Refusal]
    overpaid: list[Overpayment] = field(default_factory=list)
    #: Of the settled and adjusted energy, what came from meters that do not sign.
    unsigned_wh: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.overpaid
            and self.pending_wh >= 0
            and self.metered_wh == self.settled_wh + self.adjusted_wh + self.refused_wh + self.pending_wh
        )

    def equation(self) -> str:
        return (
            f"{self.day}: metered {self.metered_wh:,} Wh = settled {self.settled_wh:,} + adjusted "
            f"{self.adjusted_wh:,} + refused {self.refused_wh:,} + pending {self.pending_wh:,}"
        )


def current_ledger(session: Session, policy: MeterPolicy | None = None) -> Ledger:
    """Everything the stored raw frames say now (every chain verified to its last frame)."""
    return replay(raw.load_verified(session, raw.heads(session)), Registry.load(session), policy)


def recorded_policy(session: Session, period_id: int) -> MeterPolicy | None:
    """The policy the metering service signed ``period_id`` under (None: not signed, or signed before
    migration 0010)."""
    signed = signed_policy(session, period_id)
    return None if signed is None else signed[1]


def energy_balance(
    session: Session, day: int, policy: MeterPolicy | None = None, ledger: Ledger | None = None
) -> EnergyBalance:
    """``policy``: the metering rules to replay the day under; by default those the meter signed the
    day's period under (:func:`recorded_policy`), else the defaults."""
    start, end = period_window(day)
    if ledger is None:
        ledger = current_ledger(session, policy or recorded_policy(session, day))
    signing = {seg.station_id: seg.signed for seg in ledger.segments}
    accepted: dict[tuple[str, datetime, str], int] = defaultdict(int)
    for (station, tx, interval), (imp, exp) in ledger.accepted().items():
        if not start <= interval < end:
            continue
        info = ledger.transactions[(station, tx)]
        if info.owner_id is None:
            continue  # counted among the refusals (UnattributedEnergyError)
        if imp:
            accepted[(info.session_id, interval, "charge")] += imp
        if exp:
            accepted[(info.session_id, interval, "discharge")] += exp
    refusals = [r for r in ledger.refusals if day_of(r.at) == day]
    by_reason: dict[str, int] = defaultdict(int)
    for r in refusals:
        by_reason[r.reason] += r.wh
    paid: dict[tuple[str, datetime, str], int] = defaultdict(int)
    settled = adjusted = unsigned = 0
    metered_periods = {p.id for p in session.scalars(select(Period).where(Period.frame_heads.is_not(None)))}
    for row in session.scalars(
        select(SettledTradeRow).where(
            SettledTradeRow.interval_start >= start, SettledTradeRow.interval_start < end
        )
    ):
        if row.period_id not in metered_periods:
            continue  # a period settled from a simulated schedule: no meter behind it
        key = (row.session_id, row.interval_start, str(row.direction))
        paid[key] += row.energy_wh
        if row.period_id == day:
            settled += row.energy_wh
        else:
            adjusted += row.energy_wh
        if not signing.get(row.session_id.split("/", 1)[0], False):  # session id: station/transaction
            unsigned += row.energy_wh
    overpaid = [
        Overpayment(k[0], k[1], k[2], wh, accepted.get(k, 0))
        for k, wh in sorted(paid.items())
        if wh > accepted.get(k, 0)
    ]
    metered = sum(accepted.values()) + sum(by_reason.values())
    refused = sum(by_reason.values())
    return EnergyBalance(
        day,
        metered,
        settled,
        adjusted,
        refused,
        metered - settled - adjusted - refused,
        dict(sorted(by_reason.items())),
        refusals,
        overpaid,
        unsigned,
    )
