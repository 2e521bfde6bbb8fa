"""Schedule → trades: whole Wh per owner, vehicle, interval and direction, by the one rounding rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.schedule import Direction, kwh_to_wh, to_trades
from scheduler.solve import solve
from tests.scheduler.conftest import hours, session, small_problem, vehicle


def test_kwh_to_wh_rounds_half_up_to_whole_wh() -> None:
    assert kwh_to_wh(2.5 * 0.25) == 625
    assert kwh_to_wh(0.0005) == 1
    assert kwh_to_wh(0.000499) == 0
    assert kwh_to_wh(1.2344999) == 1234
    assert kwh_to_wh(0.0) == 0
    with pytest.raises(ValueError):
        kwh_to_wh(-0.001)
    with pytest.raises(ValueError):
        kwh_to_wh(float("nan"))


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_kwh_to_wh_is_within_half_a_wh(x: float) -> None:
    wh = kwh_to_wh(x)
    assert isinstance(wh, int)
    assert abs(wh - x * 1000) <= 0.5 + 1e-9 * max(1.0, x * 1000)
    assert wh == math.floor(x * 1000 + 0.5)


def test_to_trades_hand_case_names_owner_vehicle_interval_and_direction() -> None:
    a, b = vehicle("A", charge=10, discharge=10), vehicle("B", charge=5)
    problem = small_problem(
        [a, b], [session(a, 20, 20), session(b, 0, 4.5)], buy=[50, 200, 100], import_kw=20, export_kw=10
    )
    trades = to_trades(solve(problem))
    rows = [(t.owner, t.vehicle_id, t.interval_start, t.direction, t.energy_wh) for t in trades]
    assert rows == [
        ("owner-A", "A", hours(0), Direction.CHARGE, 10_000),
        ("owner-B", "B", hours(0), Direction.CHARGE, 5_000),
        ("owner-A", "A", hours(1), Direction.DISCHARGE, 10_000),
        ("owner-A", "A", hours(2), Direction.CHARGE, 2_346),  # 190/81 kWh = 2345.679 Wh
    ]


def test_to_trades_on_a_fleet_settle_every_interval_exactly_once() -> None:
    problem = fleet_problem("2023-07-02", load_prices().eur_mwh, FleetConfig(n_evs=120), seed=2)
    schedule = solve(problem)
    trades = to_trades(schedule)
    keys = [(t.session_id, t.interval_start, t.direction) for t in trades]
    assert len(keys) == len(set(keys))
    assert all(t.energy_wh > 0 for t in trades)
    charged = np.floor(schedule.charge_kw * schedule.dt_h * 1000 + 0.5).sum()
    discharged = np.floor(schedule.discharge_kw * schedule.dt_h * 1000 + 0.5).sum()
    assert sum(t.energy_wh for t in trades if t.direction is Direction.CHARGE) == charged
    assert sum(t.energy_wh for t in trades if t.direction is Direction.DISCHARGE) == discharged
    # Whole-Wh totals stay within half a Wh per trade of the schedule's energy.
    assert abs(charged - schedule.charge_kw.sum() * schedule.dt_h * 1000) <= 0.5 * len(trades)
