"""Solver recoveries: a solve that HiGHS ends without a proven optimum is recovered, counted and logged,
and only when every recovery fails is a named error raised, with the instance written to a file.

Failures are real HiGHS outcomes, not mocks: the warm-started re-plan that ends ``Unknown`` on a real day
of 2023, and iteration limits set on the real solver (the scheduler sets none itself, so reaching one is
a path that went wrong and is recovered like any other).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import highspy
import numpy as np
import pytest

import scheduler.horizon as horizon_module
from scheduler.case_study import plan_with_forecasts
from scheduler.datasets import load_prices
from scheduler.errors import SolverFailedError
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.forecast import LearForecaster
from scheduler.highs import new_highs, pass_model, run_with_recovery, status_name
from scheduler.index import build_index
from scheduler.matrix import build_lp
from scheduler.schedule import check_physics
from scheduler.solve import solve

CASE = FleetConfig(n_evs=300, interval_minutes=60, clip_to_day=False, horizon_hours=48)


def _starve(h: highspy.Highs) -> None:
    """Limits no algorithm of HiGHS can reach an optimum within."""
    h.setOptionValue("simplex_iteration_limit", 1)
    h.setOptionValue("ipm_iteration_limit", 1)


def test_lp_that_simplex_cannot_finish_is_recovered_by_interior_point(
    caplog: pytest.LogCaptureFixture,
) -> None:
    problem = fleet_problem("2023-07-02", load_prices().eur_mwh, FleetConfig(n_evs=20), seed=0)
    lp, _ = build_lp(build_index(problem), np.zeros(0, np.int64))
    reference = new_highs()
    pass_model(reference, lp)
    reference.run()
    h = new_highs()
    pass_model(h, lp)
    h.setOptionValue("simplex_iteration_limit", 1)  # the simplex stops at once, warm or cold
    with caplog.at_level(logging.WARNING, logger="scheduler.highs"):
        run = run_with_recovery(h, "test LP")
    assert run.optimal
    assert run.recoveries == ["Iteration limit reached→cold", "Iteration limit reached→ipm"]
    assert h.getInfo().objective_function_value == pytest.approx(
        reference.getInfo().objective_function_value, rel=1e-9
    )
    assert "recovered by a ipm re-solve" in caplog.text
    assert h.getOptionValue("solver")[1] == "choose"  # options as they were


def test_warm_start_that_ends_unknown_on_2023_05_23_is_recovered_cold() -> None:
    """The day that stopped the 2023 day-ahead year: step 14's warm start ends ``Unknown``."""
    prices = load_prices().eur_mwh
    day = date(2023, 5, 23)
    forecaster = LearForecaster.fit(prices, date(2022, 12, 31))
    forecast = forecaster.predict_series(prices, day, 2)
    problem = fleet_problem(day.isoformat(), prices[str(day) : str(day + timedelta(days=1))], CASE, seed=0)
    rolled = plan_with_forecasts(
        problem,
        forecast.to_numpy(),
        CASE,
        seed=7_919,
        replan_every=1,
        price_knowledge="day-ahead",
        shortfall_value_eur_kwh=0.6,
        context=str(day),
    )
    assert rolled.recoveries == ("Unknown→cold",)
    valued = build_index(replace(problem, shortfall_penalty_eur_kwh=0.6), check_targets=False)
    assert check_physics(rolled.schedule, valued) == []


def _starved_at(steps: set[int]) -> Any:
    """A ``_RollingModel.solve`` that starves HiGHS during the given steps (real solver, real failure)."""
    real = horizon_module._RollingModel.solve

    def solve(self: Any, what: str) -> bool:
        if int(what.rsplit(" ", 1)[1]) in steps:
            _starve(self.h)
            try:
                return bool(real(self, what))
            finally:
                self.h.setOptionValue("simplex_iteration_limit", highspy.kHighsIInf)
                self.h.setOptionValue("ipm_iteration_limit", highspy.kHighsIInf)
        return bool(real(self, what))

    return solve


def _day_problem(n_evs: int = 60) -> Any:
    config = replace(CASE, n_evs=n_evs, site_kw_per_ev=1.5)  # a site limit that binds
    return fleet_problem("2023-03-14", load_prices().eur_mwh["2023-03-14":"2023-03-15"], config, seed=3)


def _rolling(problem: Any, context: str) -> horizon_module.RollingResult:
    """Re-planning on a price forecast that is off by a fifth: each step reveals a price and re-solves."""
    forecast = problem.prices.buy_eur_mwh * 0.8 + 5.0
    return horizon_module.rolling_horizon(
        problem,
        buy_forecast_eur_mwh=forecast,
        sell_forecast_eur_mwh=forecast,
        shortfall_value_eur_kwh=0.6,
        context=context,
    )


def test_rolling_step_without_any_optimum_holds_the_plan_in_force(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("V2G_REPRO_DIR", str(tmp_path))
    problem = _day_problem()
    monkeypatch.setattr(horizon_module._RollingModel, "solve", _starved_at({1, 2}))
    rolled = _rolling(problem, context="held")
    held = [r for r in rolled.recoveries if r.endswith("→held")]
    assert len(held) == 2 and rolled.recoveries.count("Iteration limit reached→cold") == 2
    valued = build_index(replace(problem, shortfall_penalty_eur_kwh=0.6), check_targets=False)
    assert check_physics(rolled.schedule, valued) == []  # limits, SoC and balance hold on held steps
    assert sorted(p.name for p in tmp_path.glob("*.mps")) == [
        "held_rolling_step_1.mps",
        "held_rolling_step_2.mps",
    ]
    # the written instance reproduces the step's model: it solves to an optimum once the limits are gone
    again = new_highs()
    again.readModel(str(tmp_path / "held_rolling_step_2.mps"))
    again.run()
    assert status_name(again) == "Optimal"


def test_rolling_first_step_without_any_optimum_names_the_instance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("V2G_REPRO_DIR", str(tmp_path))
    monkeypatch.setattr(horizon_module._RollingModel, "solve", _starved_at({0}))
    with pytest.raises(SolverFailedError) as failure:
        _rolling(_day_problem(), context="2023-03-14")
    message = str(failure.value)
    assert message.startswith("2023-03-14 rolling step 0 (")
    assert "no plan in force to hold" in message and "Iteration limit reached→cold" in message
    assert str(tmp_path / "2023-03-14_rolling_step_0.mps") in message
    assert (tmp_path / "2023-03-14_rolling_step_0.json").exists()


def test_day_ahead_solve_fails_only_after_every_recovery_and_writes_the_instance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("V2G_REPRO_DIR", str(tmp_path))
    real_new = new_highs

    def starved(**options: Any) -> highspy.Highs:
        h = real_new(**options)
        _starve(h)
        return h

    monkeypatch.setattr("scheduler.matrix.new_highs", starved)
    problem = fleet_problem("2023-07-02", load_prices().eur_mwh, FleetConfig(n_evs=10), seed=0)
    with pytest.raises(SolverFailedError) as failure:
        solve(problem, v2g=False, context="2023-07-02")
    message = str(failure.value)
    assert message.startswith("2023-07-02 smart round 1 (10 sessions × 96 intervals, 0 binaries)")
    assert "Iteration limit reached→cold, Iteration limit reached→ipm" in message
    assert (tmp_path / "2023-07-02_smart_round_1.mps").exists()


def test_recoveries_are_carried_on_the_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    real_new = new_highs

    def simplex_starved(**options: Any) -> highspy.Highs:
        h = real_new(**options)
        h.setOptionValue("simplex_iteration_limit", 1)
        return h

    monkeypatch.setattr("scheduler.matrix.new_highs", simplex_starved)
    problem = fleet_problem("2023-07-02", load_prices().eur_mwh, FleetConfig(n_evs=10), seed=0)
    schedule = solve(problem, v2g=False)
    assert schedule.status == "optimal"
    assert schedule.recoveries == ("Iteration limit reached→cold", "Iteration limit reached→ipm")
    assert check_physics(schedule, build_index(problem.without_discharge())) == []
