"""Rolling re-planning: with perfect forecasts it reaches the day-ahead optimum; its schedule is physical."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.horizon import rolling_horizon
from scheduler.index import build_index
from scheduler.inputs import Problem, Session, Vehicle
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


def _overnight(n_evs: int, seed: int, site_kw_per_ev: float = 3.0) -> Problem:
    config = FleetConfig(
        n_evs=n_evs, clip_to_day=False, horizon_hours=48, interval_minutes=60, site_kw_per_ev=site_kw_per_ev
    )
    return fleet_problem("2023-03-15", load_prices().eur_mwh, config, seed=seed)


def _copies(problem: Problem) -> tuple[tuple[Session, ...], tuple[Vehicle, ...]]:
    """A perfect availability forecast under other ids: each expected session is a real one's twin."""
    vehicles = tuple(replace(v, id="fc-" + v.id) for v in problem.vehicles)
    sessions = tuple(replace(s, id="fc-" + s.id, vehicle_id="fc-" + s.vehicle_id) for s in problem.sessions)
    return sessions, vehicles


def test_rolling_with_a_perfect_availability_forecast_under_other_ids_reaches_the_optimum() -> None:
    # Sessions are revealed one by one as they arrive while their forecast twins expire; prices are
    # revealed hour by hour (perfect forecasts). The site limit binds (1.5 kW per EV), so arrivals
    # interact, and every re-plan starts from the previous basis.
    problem = _overnight(30, seed=2, site_kw_per_ev=1.5)
    idx = build_index(problem)
    day_ahead = kpis(solve(problem, mip_gap=1e-9), idx)
    assert day_ahead.peak_import_kw == pytest.approx(45.0, abs=1e-6)  # the limit binds
    sessions, vehicles = _copies(problem)
    rolled = rolling_horizon(problem, session_forecast=sessions, forecast_vehicles=vehicles, mip_gap=1e-9)
    assert rolled.steps == problem.horizon.intervals
    assert 1 < rolled.solves < rolled.steps  # re-planned at arrivals only: nothing else was new
    assert rolled.kpis.net_cost_eur == pytest.approx(day_ahead.net_cost_eur, rel=1e-6, abs=1e-6)
    assert check_physics(rolled.schedule, idx, tol=1e-5) == []


def test_rolling_with_no_availability_forecast_pays_for_surprises_at_a_binding_site_limit() -> None:
    problem = _overnight(30, seed=2, site_kw_per_ev=1.5)
    idx = build_index(problem)
    best = kpis(solve(problem, mip_gap=1e-9), idx).net_cost_eur
    rolled = rolling_horizon(problem, session_forecast=(), shortfall_value_eur_kwh=0.6)
    assert rolled.kpis.net_cost_eur > best + 1e-3
    assert check_physics(rolled.schedule, idx, tol=1e-5) == []
    assert np.all(rolled.schedule.import_kw <= idx.import_limit_kw + 1e-6)


def test_rolling_with_every_price_public_ahead_ignores_a_wrong_price_forecast() -> None:
    problem = _overnight(20, seed=3)
    idx = build_index(problem)
    best = kpis(solve(problem, mip_gap=1e-9), idx).net_cost_eur
    wrong = -problem.prices.buy_eur_mwh
    rolled = rolling_horizon(
        problem,
        buy_forecast_eur_mwh=wrong,
        sell_forecast_eur_mwh=wrong,
        prices_known_from=np.full(problem.horizon.intervals, -1),
        mip_gap=1e-9,
    )
    assert rolled.solves == 1  # nothing is ever new: one plan, committed hour by hour
    assert rolled.kpis.net_cost_eur == pytest.approx(best, rel=1e-6, abs=1e-6)


def test_rolling_refuses_price_release_times_of_the_wrong_length() -> None:
    problem = _overnight(2, seed=3)
    with pytest.raises(ValueError, match="prices_known_from has"):
        rolling_horizon(problem, prices_known_from=np.zeros(3, dtype=np.int64))


def test_rolling_commits_no_simultaneous_flows_at_prices_far_below_zero() -> None:
    # The hand-computed case of test_solve: at −500 EUR/MWh the LP would charge and discharge car A at
    # once; the committed hour is re-solved as a MILP (binaries on the window), so the realised plan
    # earns what the MILP optimum earns (5 EUR) and never runs both ways.
    from tests.scheduler.conftest import session, small_problem, vehicle

    a, b = vehicle("A", charge=10, discharge=10, battery=20), vehicle("B", charge=10)
    problem = small_problem([a, b], [session(a, 20, 20), session(b, 0, 9)], buy=[-500, 0, 0])
    rolled = rolling_horizon(problem, mip_gap=1e-9)
    assert rolled.milp_steps == 1
    assert -rolled.kpis.net_cost_eur == pytest.approx(5.0, abs=1e-6)
    assert not ((rolled.schedule.charge_kw > 1e-6) & (rolled.schedule.discharge_kw > 1e-6)).any()
    assert check_physics(rolled.schedule, build_index(problem), tol=1e-6) == []
