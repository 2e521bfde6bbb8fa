"""Charging profiles from the plan: per EVSE an Absolute TxProfile in W.

- OCPP 2.1 station that can discharge: ``operationMode`` CentralSetpoint with ``setpoint`` (W, negative
  = discharge) within ``limit`` (W) and ``dischargeLimit`` (W, ≤ 0, as 2.1 wants it).
- OCPP 2.0.1 station (or a 2.1 one that cannot discharge): ``limit`` only, a charge cap; the vehicle is
  planned charge-only.

Consecutive intervals with the same values are one period; a schedule never carries more periods than
the station's ``PeriodsPerSchedule`` (the last period then holds until the next profile, which the
operations loop sends at the next re-plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np


def _w(kw: float) -> float:
    return round(kw * 1000.0, 1)


class Timing(NamedTuple):
    """What every profile of one plan shares: its start as the station reads it, and each interval's
    start in seconds after it (computed once for a site's profiles, not once per period of each)."""

    start: str
    offsets: list[int]


def timing_of(starts: Sequence[datetime]) -> Timing:
    start = starts[0]
    return Timing(
        start.isoformat().replace("+00:00", "Z"), [int((s - start).total_seconds()) for s in starts]
    )


def profile_of(
    *,
    profile_id: int,
    transaction_id: str,
    starts: Sequence[datetime],
    charge_kw: Sequence[float] | np.ndarray,
    discharge_kw: Sequence[float] | np.ndarray,
    v2g: bool,
    max_charge_kw: float,
    max_discharge_kw: float,
    periods_per_schedule: int,
    timing: Timing | None = None,
) -> dict[str, Any]:
    """The ``chargingProfile`` (snake_case, as the ``ocpp`` package takes it) for a plan given as its
    intervals' starts and grid-side charge and discharge powers (kW): a period only where the value
    changes. ``timing``: :func:`timing_of` the starts, given by a caller that makes many profiles of one
    plan."""
    if not starts:
        raise ValueError("an empty plan has no profile")
    if timing is None:
        timing = timing_of(starts)
    elif len(timing.offsets) != len(starts):
        raise ValueError(f"{len(starts)} intervals, a timing of {len(timing.offsets)}")
    offsets = timing.offsets
    charge = np.asarray(charge_kw, dtype=np.float64)
    discharge = np.asarray(discharge_kw, dtype=np.float64)
    if not len(charge) == len(discharge) == len(starts):
        raise ValueError(f"{len(starts)} intervals, {len(charge)} powers, {len(discharge)} discharges")
    net = charge - discharge if v2g else np.maximum(charge, 0.0)
    # a value can change only where the power does: rounded there alone (the same periods as rounding
    # every interval, as runs of equal powers round alike)
    moves = np.flatnonzero(np.concatenate(([True], net[1:] != net[:-1]))).tolist()
    powers = net[moves].tolist()
    limit, discharge_limit = _w(max_charge_kw), -_w(max_discharge_kw)
    periods: list[dict[str, Any]] = []
    last: float | None = None
    for k, kw in zip(moves, powers, strict=True):
        value = _w(kw)
        if value == last:
            continue
        if len(periods) == periods_per_schedule:
            break
        if v2g:
            period: dict[str, Any] = {
                "operation_mode": "CentralSetpoint",
                "setpoint": value,
                "limit": limit,
                "discharge_limit": discharge_limit,
            }
        else:
            period = {"limit": value}
        period["start_period"] = offsets[k]
        periods.append(period)
        last = value
    return {
        "id": profile_id,
        "stack_level": 1,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Absolute",
        "transaction_id": transaction_id,
        "charging_schedule": [
            {
                "id": profile_id,
                "start_schedule": timing.start,
                "charging_rate_unit": "W",
                "charging_schedule_period": periods,
            }
        ],
    }


def power_at(profile: dict[str, Any], at: datetime) -> tuple[float, float | None, float | None]:
    """What a profile asks at ``at``: (setpoint or limit W, limit W, discharge limit W); setpoint is None
    for a limits-only profile. Used by the station simulator to follow a profile."""
    schedule = profile["charging_schedule"][0]
    start = datetime.fromisoformat(str(schedule["start_schedule"]).replace("Z", "+00:00"))
    offset = (at - start).total_seconds()
    chosen = schedule["charging_schedule_period"][0]
    for period in schedule["charging_schedule_period"]:
        if period["start_period"] <= offset:
            chosen = period
    limit = chosen.get("limit")
    return (
        chosen.get("setpoint", limit),
        limit,
        chosen.get("discharge_limit"),
    )
