"""Metered energy: what the registers say each session took and gave, per interval, in whole Wh.

Between two samples a register is taken to rise linearly in the station's time; at each interval
boundary it is interpolated, and each interval's energy is the difference of the interpolated
registers, rounded so that the intervals of a transaction add up to exactly what its registers moved in
the window asked for (largest remainder): all they moved, for a window that holds the transaction.
Nothing here looks at the plan: the plan is compared with it in :func:`plan_vs_metered`, never
substituted for it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import MeterReading, OcppTransaction, Vehicle
from scheduler.schedule import Direction, Trade


@dataclass(frozen=True)
class MeteredInterval:
    station_id: str
    transaction_id: str
    vehicle_id: str | None
    owner_id: str | None
    session_id: str
    interval_start: datetime
    import_wh: int
    export_wh: int


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` Wh over intervals in proportion to ``weights`` (≥ 0), whole Wh adding up exactly."""
    weight = sum(weights)
    if total == 0 or weight <= 0:
        return [0] * len(weights)
    raw = [total * w / weight for w in weights]
    out = [math.floor(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: out[i] - raw[i])[: total - sum(out)]:
        out[i] += 1
    return out


def _interval_increments(
    times: list[float], values: list[int], starts: list[float], width_s: float
) -> list[float]:
    """The register's rise in each interval ``[start, start + width)`` by linear interpolation."""

    def at(t: float) -> float:
        if t <= times[0]:
            return float(values[0])
        if t >= times[-1]:
            return float(values[-1])
        lo, hi = 0, len(times) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if times[mid] <= t:
                lo = mid
            else:
                hi = mid
        span = times[hi] - times[lo]
        return values[lo] + (values[hi] - values[lo]) * ((t - times[lo]) / span if span else 1.0)

    return [max(at(s + width_s) - at(s), 0.0) for s in starts]


def metered_intervals(
    session: Session, start: datetime, end: datetime, interval_minutes: int = 15
) -> list[MeteredInterval]:
    """Every transaction's metered energy per interval of ``[start, end)``."""
    width = timedelta(minutes=interval_minutes)
    n = int((end - start) / width)
    starts = [start + k * width for k in range(n)]
    owners = {v.id: v.owner_id for v in session.scalars(select(Vehicle))}
    readings: dict[tuple[str, str], list[MeterReading]] = defaultdict(list)
    for r in session.scalars(
        select(MeterReading)
        .where(MeterReading.measured_at >= start - width, MeterReading.measured_at < end + width)
        .order_by(MeterReading.measured_at, MeterReading.seq_no, MeterReading.sample)
    ):
        readings[(r.station_id, r.transaction_id)].append(r)
    txs = {
        (t.station_id, t.transaction_id): t
        for t in session.scalars(select(OcppTransaction).where(OcppTransaction.started_at < end))
    }
    out: list[MeteredInterval] = []
    for key, rows in sorted(readings.items()):
        tx = txs.get(key)
        if tx is None or len(rows) < 2:
            continue
        times = [r.measured_at.timestamp() for r in rows]
        stamps = [s.timestamp() for s in starts]
        # what the registers moved inside the window, never the readings around it: a transaction that
        # runs past ``end`` (or began before ``start``) keeps the rest for the window that holds it
        rises = _interval_increments(times, [r.import_wh for r in rows], stamps, width.total_seconds())
        imports = _split(round(sum(rises)), rises)
        rises = _interval_increments(times, [r.export_wh for r in rows], stamps, width.total_seconds())
        exports = _split(round(sum(rises)), rises)
        owner = owners.get(tx.vehicle_id) if tx.vehicle_id else None
        for k, interval in enumerate(starts):
            if imports[k] or exports[k]:
                out.append(
                    MeteredInterval(
                        station_id=tx.station_id,
                        transaction_id=tx.transaction_id,
                        vehicle_id=tx.vehicle_id,
                        owner_id=owner,
                        session_id=tx.plug_session_id or f"{tx.station_id}/{tx.transaction_id}",
                        interval_start=interval,
                        import_wh=imports[k],
                        export_wh=exports[k],
                    )
                )
    return out


def trades_of(intervals: Sequence[MeteredInterval]) -> list[Trade]:
    """Trades from metered energy of attributed transactions (the callers refuse the rest by name)."""
    trades: list[Trade] = []
    for m in intervals:
        if m.owner_id is None or m.vehicle_id is None:
            continue
        if m.import_wh:
            trades.append(
                Trade(m.owner_id, m.vehicle_id, m.session_id, m.interval_start, Direction.CHARGE, m.import_wh)
            )
        if m.export_wh:
            trades.append(
                Trade(
                    m.owner_id, m.vehicle_id, m.session_id, m.interval_start, Direction.DISCHARGE, m.export_wh
                )
            )
    return trades


@dataclass(frozen=True)
class Deviation:
    owner_id: str
    station_id: str
    interval_start: datetime
    planned_wh: int  # net, charge > 0
    metered_wh: int


def plan_vs_metered(
    planned: Mapping[tuple[str, datetime], int], intervals: Sequence[MeteredInterval]
) -> list[Deviation]:
    """Per vehicle and interval: the net energy last planned (``planned[(vehicle, interval)]``) against
    the metered net energy."""
    metered: dict[tuple[str, datetime], tuple[int, str, str]] = {}
    for m in intervals:
        if m.vehicle_id is None or m.owner_id is None:
            continue
        key = (m.vehicle_id, m.interval_start)
        before = metered.get(key, (0, m.owner_id, m.station_id))[0]
        metered[key] = (before + m.import_wh - m.export_wh, m.owner_id, m.station_id)
    out = []
    for key in sorted(set(planned) | set(metered)):
        net, owner, station = metered.get(key, (0, "", ""))
        out.append(Deviation(owner, station, key[1], planned.get(key, 0), net))
    return out


class PlannedEnergy(MutableMapping[tuple[str, datetime], int]):
    """The net energy last planned per (vehicle, interval start), whole Wh (charge > 0), for the deviation
    report, the metrics and the portal's live plan.

    Each vehicle's latest plan is one row of its intervals (a re-plan replaces it at once, not an entry per
    interval: 10,000 cars over a day were 560,000 dictionary writes a fleet re-plan); the intervals a later
    plan no longer covers (those it starts after) keep what was last planned for them, and what ended more
    than ``keep`` ago is let go, a vehicle's latest plan too (a service that runs for months holds two
    days, not every interval it ever planned). Written by the operations loop, read by the API's threads:
    the readers iterate over snapshots.
    """

    def __init__(self, width: timedelta, keep: timedelta = timedelta(days=2)) -> None:
        self._width = width
        self._keep = keep
        #: vehicle → (its plan's first interval start, Wh per interval)
        self._latest: dict[str, tuple[datetime, np.ndarray]] = {}
        #: interval start → vehicle → Wh: what no latest plan covers any more
        self._past: dict[datetime, dict[str, int]] = {}
        self._pruned = datetime.min.replace(tzinfo=UTC)

    def plan(self, vehicles: Sequence[str], first: datetime, wh: np.ndarray) -> None:
        """New plans (a site's): ``wh[i, k]`` for ``vehicles[i]`` in the interval ``first + k·width``."""
        latest, past, width = self._latest, self._past, self._width
        # per start of the plans replaced (one for a whole site): the intervals to keep of them
        kept: dict[tuple[datetime, int], list[tuple[int, datetime]]] = {}
        for vehicle, row in zip(vehicles, wh, strict=True):
            before = latest.get(vehicle)
            if before is not None:
                start, values = before
                key = (start, len(values))
                keep = kept.get(key)
                if keep is None:
                    begins = int((first - start) / width)  # the old plan's intervals before the new one's
                    ends = begins + len(row)  # and after its last
                    ks = (*range(min(max(begins, 0), len(values))), *range(max(ends, 0), len(values)))
                    keep = kept[key] = [(k, start + k * width) for k in ks]
                for k, at in keep:
                    past.setdefault(at, {})[vehicle] = int(values[k])
            latest[vehicle] = (first, row.copy())  # its own row: not a view that keeps the site's alive
        if first - self._pruned > timedelta(hours=1):
            self._pruned = first
            gone = first - self._keep
            for at in [at for at in past if at < gone]:
                del past[at]
            for vehicle, (start, values) in list(latest.items()):
                if start + len(values) * width < gone:  # a car not planned for two days
                    del latest[vehicle]

    def _index(self, vehicle: str, at: datetime) -> tuple[np.ndarray, int] | None:
        latest = self._latest.get(vehicle)
        if latest is None:
            return None
        first, values = latest
        k, rest = divmod(at - first, self._width)
        return (values, k) if not rest and 0 <= k < len(values) else None

    def __getitem__(self, key: tuple[str, datetime]) -> int:
        vehicle, at = key
        found = self._index(vehicle, at)
        if found is not None:
            return int(found[0][found[1]])
        try:
            return self._past[at][vehicle]
        except KeyError:
            raise KeyError(key) from None

    def __setitem__(self, key: tuple[str, datetime], wh: int) -> None:
        vehicle, at = key
        found = self._index(vehicle, at)
        if found is not None:
            found[0][found[1]] = wh
        else:
            self._past.setdefault(at, {})[vehicle] = int(wh)

    def __delitem__(self, key: tuple[str, datetime]) -> None:
        vehicle, at = key
        if self._index(vehicle, at) is not None:  # its plan as entries, without this one
            first, values = self._latest.pop(vehicle)
            for k, wh in enumerate(values.tolist()):
                self._past.setdefault(first + k * self._width, {})[vehicle] = wh
        row = self._past.get(at)
        if row is None or vehicle not in row:
            raise KeyError(key)
        del row[vehicle]
        if not row:
            del self._past[at]

    def _shadowed_from(self, latest: list[tuple[datetime, np.ndarray]]) -> datetime | None:
        """From when on an entry of the past may be covered by a latest plan."""
        return min((first for first, _ in latest), default=None)

    def __iter__(self) -> Iterator[tuple[str, datetime]]:
        latest = list(self._latest.items())  # snapshots: a re-plan may write meanwhile (another thread)
        for vehicle, (first, values) in latest:
            for k in range(len(values)):
                yield vehicle, first + k * self._width
        shadowed = self._shadowed_from([plan for _, plan in latest])
        for at, row in list(self._past.items()):
            for vehicle in list(row):
                if shadowed is None or at < shadowed or self._index(vehicle, at) is None:
                    yield vehicle, at

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return bool(self._latest or self._past)

    def clear(self) -> None:
        self._latest.clear()
        self._past.clear()

    def totals(self, start: datetime, end: datetime) -> dict[datetime, tuple[int, int]]:
        """Per interval start in [start, end): the Wh planned to charge and to discharge (both ≥ 0), over
        every vehicle."""
        charge: dict[datetime, int] = defaultdict(int)
        discharge: dict[datetime, int] = defaultdict(int)
        by_first: dict[tuple[datetime, int], list[np.ndarray]] = defaultdict(list)
        latest = list(self._latest.values())  # snapshots: a re-plan may write meanwhile (another thread)
        for first, values in latest:  # the rows of one re-plan share their intervals
            by_first[(first, len(values))].append(values)
        for (first, n), rows in by_first.items():
            stacked = np.stack(rows)
            up = np.where(stacked > 0, stacked, 0).sum(axis=0).tolist()
            down = np.where(stacked < 0, -stacked, 0).sum(axis=0).tolist()
            for k in range(n):
                at = first + k * self._width
                if start <= at < end:
                    charge[at] += up[k]
                    discharge[at] += down[k]
        shadowed = self._shadowed_from(latest)
        for at, row in list(self._past.items()):
            if not start <= at < end:
                continue
            for vehicle, wh in list(row.items()):
                if shadowed is None or at < shadowed or self._index(vehicle, at) is None:
                    if wh > 0:
                        charge[at] += wh
                    else:
                        discharge[at] -= wh
        return {at: (charge[at], discharge[at]) for at in sorted(charge.keys() | discharge.keys())}
