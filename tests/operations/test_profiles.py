"""A plan's profile: a period only where the rounded value changes, at most the station's periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from backend.operations.profiles import profile_of

T0 = datetime(2023, 9, 12, 9, tzinfo=UTC)


def _reference(
    starts: list[datetime], charge: list[float], discharge: list[float], v2g: bool, n: int
) -> list[Any]:
    """The periods as first written: every interval rounded to 0.1 W, a period where it differs."""
    periods: list[dict[str, Any]] = []
    last = None
    for at, c, d in zip(starts, charge, discharge, strict=True):
        value = round((c - d) * 1000.0, 1) if v2g else round(max(c, 0.0) * 1000.0, 1)
        if value == last:
            continue
        if len(periods) == n:
            break
        period: dict[str, Any] = (
            {
                "operation_mode": "CentralSetpoint",
                "setpoint": value,
                "limit": 11000.0,
                "discharge_limit": -7400.0,
            }
            if v2g
            else {"limit": value}
        )
        period["start_period"] = int((at - starts[0]).total_seconds())
        periods.append(period)
        last = value
    return periods


def test_the_periods_are_those_of_rounding_every_interval() -> None:
    rng = np.random.default_rng(7)
    for case in range(400):
        n_t = int(rng.integers(1, 70))
        starts = [T0 + timedelta(minutes=15 * k) for k in range(n_t)]
        # runs of equal powers, values a hair apart that round alike (5.00004999 / 5.00005), and -0.0
        levels = rng.choice([0.0, -0.0, 11.0, 3.3333333, 5.00004999, 5.00005, 2 / 3, 1e-9], size=n_t)
        charge = np.where(rng.uniform(size=n_t) < 0.7, levels, rng.uniform(0, 11, size=n_t))
        charge = np.repeat(charge, int(rng.integers(1, 4)))[:n_t]
        discharge = np.where(
            rng.uniform(size=n_t) < 0.8, 0.0, rng.choice([11.0, 3.0000000001, 3.0], size=n_t)
        )
        v2g = bool(case % 2)
        n = int(rng.integers(1, 30))
        profile = profile_of(
            profile_id=case,
            transaction_id="tx",
            starts=starts,
            charge_kw=charge,
            discharge_kw=discharge,
            v2g=v2g,
            max_charge_kw=11.0,
            max_discharge_kw=7.4,
            periods_per_schedule=n,
        )
        expected = _reference(starts, charge.tolist(), discharge.tolist(), v2g, n)
        assert profile["charging_schedule"][0]["charging_schedule_period"] == expected, case


def test_powers_and_intervals_must_match() -> None:
    with pytest.raises(ValueError, match="2 intervals, 3 powers, 3 discharges"):
        profile_of(
            profile_id=1,
            transaction_id="tx",
            starts=[T0, T0 + timedelta(minutes=15)],
            charge_kw=[1.0, 2.0, 3.0],
            discharge_kw=[0.0, 0.0, 0.0],
            v2g=False,
            max_charge_kw=11.0,
            max_discharge_kw=0.0,
            periods_per_schedule=24,
        )
