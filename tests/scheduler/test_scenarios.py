"""Planning under uncertainty: the sample-average rolling plan (one first-stage decision, recourse per
scenario) and its scenarios (the forecaster's past errors, arrival draws).

Hand-checkable instances: one car that needs 10 kWh within three hours at 10 kW (η = 1), the first
hour's price public (45 EUR/MWh), the next two uncertain. In scenario A they are 10 then 100, in B 100
then 10, in C 100 and 100.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from scheduler.case_study import build_tasks, plan_with_forecasts, plan_with_scenarios
from scheduler.datasets import load_prices
from scheduler.errors import (
    DateOutOfRangeError,
    InvalidParameterError,
    MisalignedIntervalError,
    NonFiniteValueError,
)
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.horizon import Scenario, rolling_horizon, saa_plan, saa_rolling_horizon
from scheduler.index import build_index
from scheduler.inputs import Problem
from scheduler.scenarios import (
    ERROR_WINDOW_DAYS,
    MAX_PERSISTENCE,
    arrival_scenarios,
    error_persistence,
    forecast_errors,
    price_scenarios,
    scenarios_for,
)
from scheduler.schedule import check_physics
from scheduler.solve import solve
from tests.scheduler.conftest import session, small_problem, vehicle

A = (45.0, 10.0, 100.0)
B = (45.0, 100.0, 10.0)
C = (45.0, 100.0, 100.0)


def _prices(path: tuple[float, ...]) -> Scenario:
    return Scenario(np.array(path), np.array(path))


def _one_car(actual: tuple[float, ...] = A) -> Problem:
    car = vehicle("A", charge=10, eta=1.0)
    return small_problem([car], [session(car, 0, 10)], buy=list(actual))


def _two_cars() -> Problem:
    # A V2G car (20 kWh battery, 10 kW both ways) arriving with 10 kWh and leaving with at least 10, and a
    # car that needs 5 kWh; prices 45, 10, 100 EUR/MWh. Optimum: A charges 10 kWh at 10 and sells them at
    # 100 (+0.90 EUR), B charges at 10 (−0.05): net cost −0.85 EUR.
    a = vehicle("A", charge=10, discharge=10, battery=20, eta=1.0)
    b = vehicle("B", charge=10, eta=1.0)
    return small_problem([a, b], [session(a, 10, 10), session(b, 0, 5)], buy=list(A))


def test_saa_with_one_scenario_equal_to_the_truth_is_the_perfect_foresight_plan() -> None:
    problem = _two_cars()
    best = solve(problem, mip_gap=1e-9)
    assert best.objective_eur == pytest.approx(0.85, abs=1e-9)  # the hand-computed optimum
    truth = Scenario(problem.prices.buy_eur_mwh, problem.prices.sell_eur_mwh)  # sessions: the actual ones
    for scenarios in ([truth], [truth, truth, truth]):
        rolled = saa_rolling_horizon(problem, scenarios, mip_gap=1e-9)
        assert rolled.scenarios == len(scenarios)
        assert rolled.kpis.net_cost_eur == pytest.approx(-0.85, abs=1e-9)
        assert check_physics(rolled.schedule, build_index(problem), tol=1e-9) == []


def test_saa_waits_where_the_point_forecast_commits() -> None:
    # The point forecast is the scenarios' mean (55, 55): 45 now is cheaper, so it charges now (0.45 EUR).
    # Over A and B, waiting costs 0.10 in each, so the SAA plan waits, and realises 0.10 when A comes true.
    problem = _one_car(A)
    mean = np.array([45.0, 55.0, 55.0])
    point = rolling_horizon(problem, buy_forecast_eur_mwh=mean, sell_forecast_eur_mwh=mean, mip_gap=1e-9)
    assert point.kpis.net_cost_eur == pytest.approx(0.45, abs=1e-9)
    saa = saa_rolling_horizon(problem, [_prices(A), _prices(B)], mip_gap=1e-9)
    assert saa.kpis.net_cost_eur == pytest.approx(0.10, abs=1e-9)
    assert saa.schedule.charge_kw[0].tolist() == pytest.approx([0.0, 10.0, 0.0], abs=1e-9)


def test_first_stage_is_one_decision_for_every_scenario_and_the_recourse_is_each_ones_own() -> None:
    problem = _one_car(A)
    # A and B: wait in both (first stage 0), then A charges in hour 1 and B in hour 2; 0.10 EUR each
    plan = saa_plan(problem, [_prices(A), _prices(B)], mip_gap=1e-9)
    assert plan.first_stage == (0, 1) and plan.session_ids == ("s-A",)
    np.testing.assert_allclose(plan.charge_kw[:, 0, :], [[0, 10, 0], [0, 0, 10]], atol=1e-9)
    assert plan.expected_cost_eur == pytest.approx(0.10, abs=1e-9)
    assert plan.scenario_cost_eur.tolist() == pytest.approx([0.10, 0.10], abs=1e-9)
    # A and C: alone, A would wait (0.10) and C charge now (0.45); together one first stage is taken for
    # both: charging now costs 0.45 in each, waiting 0.10 and 1.00 (mean 0.55), so both charge now
    plan = saa_plan(problem, [_prices(A), _prices(C)], mip_gap=1e-9)
    assert plan.charge_kw[:, 0, 0].tolist() == pytest.approx([10.0, 10.0], abs=1e-9)
    assert plan.expected_cost_eur == pytest.approx(0.45, abs=1e-9)
    alone = saa_plan(problem, [_prices(A)], mip_gap=1e-9)
    assert alone.charge_kw[0, 0, 0] == pytest.approx(0.0, abs=1e-9)


def test_first_stage_is_shared_on_a_fleet_day_and_later_hours_differ() -> None:
    config = FleetConfig(n_evs=30, interval_minutes=60, clip_to_day=False, horizon_hours=48)
    prices = load_prices().eur_mwh
    problem = fleet_problem("2023-03-15", prices["2023-03-15":"2023-03-16"], config, seed=4)
    rng = np.random.default_rng(0)
    base = problem.prices.buy_eur_mwh
    paths = [base + rng.normal(0.0, 30.0, size=len(base)) for _ in range(4)]
    draws = arrival_scenarios("2023-03-15", config, 4, seed=11)
    scenarios = [Scenario(p, p, s, v) for p, (v, s) in zip(paths, draws, strict=True)]
    # at 18:00 UTC, with the day's arrivals so far plugged in and the evening's still to come
    plan = saa_plan(problem, scenarios, replan_every=2, step=18)
    assert plan.first_stage == (18, 20)
    flows = np.concatenate([plan.charge_kw, plan.discharge_kw], axis=1)  # scenarios × (2·sessions) × t
    first = flows[:, :, 18:20]
    assert np.abs(first).max() > 1.0  # a real decision
    assert np.abs(first - first[0]).max() < 1e-7  # non-anticipativity: one decision in every scenario
    assert np.abs(flows[:, :, :18] - flows[0, :, :18]).max() < 1e-7  # the past, committed
    assert np.abs(flows[:, :, 20:] - flows[0, :, 20:]).max() > 1.0  # each scenario's own recourse
    rolled = saa_rolling_horizon(problem, scenarios, replan_every=2, shortfall_value_eur_kwh=0.6)
    valued = build_index(replace(problem, shortfall_penalty_eur_kwh=0.6))
    assert check_physics(rolled.schedule, valued, tol=1e-5) == []


def _hourly(days: int, start: str = "2023-01-01", seed: int = 0) -> pd.Series:
    stamps = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=24 * days, freq="h")
    rng = np.random.default_rng(seed)
    return pd.Series(
        50.0 + 20.0 * np.sin(np.arange(len(stamps)) / 3.0) + rng.normal(0, 5, len(stamps)), stamps
    )


def test_forecast_errors_read_only_the_days_before_the_plan_day() -> None:
    actual, forecast = _hourly(40), _hourly(40, seed=1)
    day = date(2023, 1, 30)
    errors = forecast_errors(actual, forecast, day, window=14)
    assert errors.shape == (14, 24)
    first = pd.Timestamp("2023-01-16", tz="UTC")
    expected = (actual - forecast)[first : first + pd.Timedelta(hours=14 * 24 - 1)].to_numpy().reshape(14, 24)
    assert errors == pytest.approx(expected)
    later = actual.index >= pd.Timestamp(day, tz="UTC")
    changed_actual = actual.where(~later, actual * 3 + 1000)
    changed_forecast = forecast.where(~later, -forecast)
    assert np.array_equal(forecast_errors(changed_actual, changed_forecast, day, window=14), errors)
    # the same scenarios, whatever happens from the plan day on
    forecast_today = np.full(48, 60.0)
    before = price_scenarios(forecast_today, errors, 5, seed=3)
    after = price_scenarios(
        forecast_today, forecast_errors(changed_actual, changed_forecast, day, 14), 5, seed=3
    )
    assert np.array_equal(before, after)
    # while a change the day before the plan day is seen
    yesterday = (actual.index >= pd.Timestamp(day - timedelta(days=1), tz="UTC")) & ~later
    assert not np.array_equal(forecast_errors(actual.where(~yesterday, 0.0), forecast, day, 14), errors)


def test_price_scenarios_are_the_forecast_plus_whole_consecutive_past_days() -> None:
    errors = np.arange(10 * 24, dtype=np.float64).reshape(10, 24)
    errors[4] = np.nan  # a day with a missing hour: no block may contain it
    forecast = np.full(48, 100.0)
    paths = price_scenarios(forecast, errors, 6, seed=1)
    assert paths.shape == (6, 48)
    starts = (paths[:, 0] - 100.0) / 24
    assert len(set(starts)) == 6  # without replacement while there are enough blocks
    for path, i in zip(paths, starts.astype(int), strict=True):
        assert i not in (3, 4) and i + 1 < 10
        assert np.array_equal(path - 100.0, errors[i : i + 2].ravel())
    assert np.array_equal(paths, price_scenarios(forecast, errors, 6, seed=1))  # reproducible
    one_day = price_scenarios(np.full(24, 0.0), errors, 20, seed=2)  # more scenarios than days
    assert one_day.shape == (20, 24)


def test_bad_scenario_parameters_are_named_errors() -> None:
    errors = np.zeros((10, 24))
    forecast = np.full(24, 50.0)
    for bad in (0, -1, float("nan"), 2.5, "x"):
        with pytest.raises(InvalidParameterError, match="number of scenarios"):
            price_scenarios(forecast, errors, bad, seed=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="number of scenarios"):
        arrival_scenarios("2023-03-15", FleetConfig(n_evs=2), 0, seed=0)
    with pytest.raises(NonFiniteValueError, match="forecast is nan in hour 3"):
        price_scenarios(np.where(np.arange(24) == 3, np.nan, 50.0), errors, 2)
    with pytest.raises(InvalidParameterError, match="rows of 24"):
        price_scenarios(forecast, np.zeros((10, 23)), 2)
    with pytest.raises(DateOutOfRangeError, match="consecutive past days"):
        price_scenarios(
            np.full(48, 50.0), np.where(np.arange(10)[:, None] % 2 == 0, np.nan, 0.0) + np.zeros((10, 24)), 2
        )
    with pytest.raises(InvalidParameterError, match="error window"):
        forecast_errors(_hourly(3), _hourly(3), date(2023, 1, 3), window=0)
    problem = _one_car()
    with pytest.raises(InvalidParameterError, match="at least one scenario"):
        saa_rolling_horizon(problem, [])
    with pytest.raises(NonFiniteValueError, match="scenario 1 buy forecast is nan in interval 2"):
        saa_rolling_horizon(problem, [_prices(A), _prices((45.0, 10.0, float("nan")))])
    with pytest.raises(MisalignedIntervalError, match="has 2 values for 3 intervals"):
        saa_rolling_horizon(problem, [_prices((45.0, 10.0))])
    with pytest.raises(InvalidParameterError, match="same actual sessions in advance"):
        saa_rolling_horizon(problem, [Scenario(np.array(A), np.array(A), ()), _prices(A)])


def test_one_scenario_of_the_point_forecast_is_the_forecast_strategy() -> None:
    # no past error and one arrival draw (the point forecast's own): the SAA strategy is the forecast one
    config = FleetConfig(n_evs=40, interval_minutes=60, clip_to_day=False, horizon_hours=48)
    prices = load_prices().eur_mwh
    problem = fleet_problem("2023-07-02", prices["2023-07-02":"2023-07-03"], config, seed=1)
    forecast = prices["2023-06-25":"2023-06-26"].to_numpy()  # weekly naive, as good as any here
    common = {"seed": 99, "replan_every": 4, "price_knowledge": "interval", "shortfall_value_eur_kwh": 0.6}
    point = plan_with_forecasts(problem, forecast, config, **common)  # type: ignore[arg-type]
    saa = plan_with_scenarios(problem, forecast, np.zeros((7, 24)), config, scenarios=1, **common)  # type: ignore[arg-type]
    assert saa.kpis.net_cost_eur == pytest.approx(point.kpis.net_cost_eur, abs=1e-9)
    scenarios = scenarios_for(problem.horizon, forecast, np.zeros((7, 24)), config, 3, seed=99)
    assert [len(s.sessions or ()) for s in scenarios] == [40, 40, 40]
    assert len({s.sessions[0].arrival for s in scenarios if s.sessions}) > 1  # three different draws


def test_case_study_days_carry_only_past_forecast_errors() -> None:
    prices = load_prices().eur_mwh
    config = FleetConfig(n_evs=5, interval_minutes=60, clip_to_day=False, horizon_hours=48)
    start = date(2023, 3, 1)
    tasks = build_tasks(prices, start, 3, config, scenarios=4)
    day = tasks[2].day
    assert tasks[2].forecast_errors is not None and tasks[2].forecast_errors.shape == (ERROR_WINDOW_DAYS, 24)
    assert np.isfinite(tasks[2].forecast_errors).all()  # out-of-sample errors on the window before the start
    later = prices.index >= pd.Timestamp(day, tz="UTC")
    changed = build_tasks(prices.where(~later, prices + 500.0), start, 3, config, scenarios=4)
    for task, other in zip(tasks, changed, strict=True):
        assert task.forecast_errors is not None and other.forecast_errors is not None
        assert np.array_equal(task.forecast_errors, other.forecast_errors)
    assert build_tasks(prices, start, 3, config)[0].forecast_errors is None  # only when scenarios are asked


def test_tracking_the_last_error_charges_when_the_forecast_proves_too_low() -> None:
    # One car needs 10 kWh within four hours at 10 kW (η = 1); each price is public when its hour
    # starts. Forecast 50, 50, 55, 70; actual 100, 58, 90, 100.
    # Untracked: at hour 0, 100 against 50 → wait; at hour 1, 58 against 55 → wait; at hour 2, 90
    # against 70 → wait; hour 3 pays 100: 1.00 EUR.
    # Tracked with ρ = 0.5: at hour 0 the error is +50, so hours 1-3 are expected at 75, 67.5, 76.25 →
    # wait; at hour 1 the error is +8, so hours 2-3 at 59 and 72: 58 now is cheapest → 0.58 EUR, the
    # perfect-foresight cost.
    car = vehicle("A", charge=10, eta=1.0)
    problem = small_problem([car], [session(car, 0, 10, 0, 4)], buy=[100.0, 58.0, 90.0, 100.0])
    forecast = np.array([50.0, 50.0, 55.0, 70.0])
    plans = {
        rho: rolling_horizon(
            problem,
            buy_forecast_eur_mwh=forecast,
            sell_forecast_eur_mwh=forecast,
            mip_gap=1e-9,
            error_decay_per_hour=rho,
        )
        for rho in (0.0, 0.5)
    }
    assert plans[0.0].kpis.net_cost_eur == pytest.approx(1.00, abs=1e-9)
    assert plans[0.0].schedule.charge_kw[0].tolist() == pytest.approx([0, 0, 0, 10], abs=1e-9)
    assert plans[0.5].kpis.net_cost_eur == pytest.approx(0.58, abs=1e-9)
    assert plans[0.5].schedule.charge_kw[0].tolist() == pytest.approx([0, 10, 0, 0], abs=1e-9)
    # a scenario's own error is tracked: the sample-average plan over the same path agrees
    saa = saa_rolling_horizon(problem, [_prices((50.0, 50.0, 55.0, 70.0))] * 2, error_decay_per_hour=0.5)
    assert saa.kpis.net_cost_eur == pytest.approx(0.58, abs=1e-6)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(InvalidParameterError, match="error decay"):
            rolling_horizon(problem, error_decay_per_hour=bad)


def test_error_persistence_is_the_hourly_ar1_coefficient_of_past_errors() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(0.0, 10.0, 56 * 24)
    errors = np.zeros(56 * 24)
    for h in range(1, len(errors)):
        errors[h] = 0.8 * errors[h - 1] + noise[h]
    table = errors.reshape(56, 24)
    rho = error_persistence(table)
    expected = float(np.sum(errors[:-1] * errors[1:]) / np.sum(errors[:-1] ** 2))  # by hand
    assert rho == pytest.approx(expected, rel=1e-12) and 0.75 < rho < 0.85
    gappy = table.copy()
    gappy[[3, 10]] = np.nan  # a missing day breaks the pairs into and out of it
    series = gappy.ravel()
    ok = np.isfinite(series[:-1]) & np.isfinite(series[1:])
    by_hand = float(np.sum(series[:-1][ok] * series[1:][ok]) / np.sum(series[:-1][ok] ** 2))
    assert error_persistence(gappy) == pytest.approx(by_hand, rel=1e-12)
    assert error_persistence(-np.abs(table) * np.tile([1, -1], 12 * 56).reshape(56, 24)) == 0.0  # clipped
    assert error_persistence(np.full((3, 24), 3.0)) == MAX_PERSISTENCE  # a pure level shift
    assert error_persistence(np.full((2, 24), 3.0)) == 0.0  # 47 pairs: too few
    with pytest.raises(InvalidParameterError):
        error_persistence(np.zeros((3, 23)))
