"""Rolling re-planning: with perfect forecasts it reaches the day-ahead optimum; its schedule is physical."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.horizon import rolling_horizon
from scheduler.index import build_index
from scheduler.schedule import check_physics, kpis
from scheduler.solve import solve


@pytest.mark.parametrize("day", ["2023-03-15", "2023-07-02"])
def test_rolling_with_perfect_forecasts_reaches_the_day_ahead_optimum(day: str) -> None:
    problem = fleet_problem(day, load_prices().eur_mwh, FleetConfig(n_evs=25), seed=5)
    idx = build_index(problem)
    day_ahead = kpis(solve(problem, mip_gap=1e-9), idx)
    rolled = rolling_horizon(problem, replan_every=4, mip_gap=1e-9)
    assert rolled.steps == 24
    assert rolled.kpis.net_cost_eur == pytest.approx(day_ahead.net_cost_eur, rel=1e-6, abs=1e-6)
    assert rolled.kpis.shortfall_kwh == pytest.approx(0.0, abs=1e-6)
    assert check_physics(rolled.schedule, idx, tol=1e-5) == []


def test_rolling_with_a_bad_price_forecast_costs_more_but_stays_physical() -> None:
    problem = fleet_problem("2023-03-15", load_prices().eur_mwh, FleetConfig(n_evs=25), seed=5)
    idx = build_index(problem)
    best = kpis(solve(problem, mip_gap=1e-9), idx).net_cost_eur
    upside_down = (
        problem.prices.buy_eur_mwh.max() + problem.prices.buy_eur_mwh.min() - problem.prices.buy_eur_mwh
    )
    rolled = rolling_horizon(
        problem, buy_forecast_eur_mwh=upside_down, sell_forecast_eur_mwh=upside_down, replan_every=8
    )
    assert rolled.kpis.net_cost_eur > best + 1e-6
    assert rolled.kpis.shortfall_kwh == pytest.approx(0.0, abs=1e-6)
    assert check_physics(rolled.schedule, idx, tol=1e-5) == []
    assert np.all(rolled.schedule.import_kw <= idx.import_limit_kw + 1e-6)
