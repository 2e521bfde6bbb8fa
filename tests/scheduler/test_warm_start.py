"""A re-plan started from the last plan: the same optimum, found in fewer simplex iterations."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.index import build_index
from scheduler.inputs import Horizon, Prices, Problem, Site
from scheduler.matrix import AS_PLANNED_KWH, WarmStart, as_planned, build_lp, solve_matrix, start_values
from scheduler.solve import _warm_start, solve


def _fleet(n: int = 60, seed: int = 3) -> Problem:
    day = "2023-03-15"
    prices = load_prices().window(day, "2023-03-17")
    problem = fleet_problem(day, prices, FleetConfig(n_evs=n), seed=seed)
    return replace(problem, shortfall_penalty_eur_kwh=5.0)  # soft targets, as the live re-plan has


def _later(problem: Problem, plan_soc: np.ndarray, steps: int) -> Problem:
    """The same fleet ``steps`` intervals on: the horizon shortened from the front, every car plugged in
    by then starting from the SoC the plan gave it."""
    h = problem.horizon
    later = Horizon(h.start + steps * h.step, h.intervals - steps, h.interval_minutes)
    sessions = []
    for i, s in enumerate(problem.sessions):
        if s.departure <= later.start + later.step:
            continue
        if s.arrival < later.start:
            s = replace(s, arrival=later.start, arrival_kwh=float(plan_soc[i, steps - 1]))
        sessions.append(s)
    k = slice(steps, None)
    return replace(
        problem,
        horizon=later,
        sessions=tuple(sessions),
        site=Site.build(later, problem.site.import_limit_kw[k], problem.site.export_limit_kw[k]),
        prices=Prices.build(later, problem.prices.buy_eur_mwh[k], problem.prices.sell_eur_mwh[k]),
    )


def test_the_start_is_the_plan_column_for_column() -> None:
    problem = _fleet()
    plan = solve(problem, mip_gap=1e-9)
    idx = build_index(problem)
    _, lay = build_lp(idx, np.zeros(0, np.int64))
    raw = solve_matrix(idx, np.zeros(0, np.int64), mip_gap=1e-9, time_limit=None)
    x = start_values(idx, lay, WarmStart(plan, 0))
    np.testing.assert_allclose(x[lay.ch : lay.dis], raw.charge_kw, atol=1e-9)
    np.testing.assert_allclose(x[lay.dis : lay.soc], raw.discharge_kw, atol=1e-9)
    np.testing.assert_allclose(x[lay.soc : lay.imp], raw.soc_kwh[idx.v2g_pair], atol=1e-9)
    np.testing.assert_allclose(x[lay.imp : lay.exp], plan.import_kw, atol=1e-9)
    np.testing.assert_allclose(x[lay.exp : lay.short], plan.export_kw, atol=1e-9)
    np.testing.assert_allclose(x[lay.short : lay.peak], raw.shortfall_kwh, atol=1e-9)
    # shifted: interval t of the later problem is t + 4 of the plan; a session it did not have starts at 0
    later = _later(problem, plan.soc_kwh, 4)
    lidx = build_index(later)
    _, llay = build_lp(lidx, np.zeros(0, np.int64))
    y = start_values(lidx, llay, WarmStart(plan, 4))
    np.testing.assert_allclose(y[llay.imp : llay.exp], plan.import_kw[4:], atol=1e-12)
    row = {sid: i for i, sid in enumerate(plan.session_ids)}
    charge = y[llay.ch : llay.dis]
    for p in range(0, len(lidx.pair_session), 37):
        s, t = row[lidx.session_ids[lidx.pair_session[p]]], lidx.pair_t[p] + 4
        assert charge[p] == plan.charge_kw[s, t]


@pytest.mark.parametrize("steps", [0, 1, 8])
def test_a_warm_re_plan_reaches_the_cold_optimum_in_fewer_iterations(steps: int) -> None:
    problem = _fleet()
    plan = solve(problem, mip_gap=1e-9)
    later = _later(problem, plan.soc_kwh, steps) if steps else problem
    idx = build_index(later)
    none = np.zeros(0, np.int64)
    cold = solve_matrix(idx, none, mip_gap=1e-9, time_limit=None)
    warm = solve_matrix(idx, none, mip_gap=1e-9, time_limit=None, start=WarmStart(plan, steps))
    assert warm.optimal and cold.optimal
    assert warm.warm == ("basis" if steps == 0 else "mapped") and cold.warm == ""
    assert warm.objective_cost == pytest.approx(cold.objective_cost, rel=1e-9, abs=1e-9)
    # the cars did as planned: the last vertex without its first intervals is this model's optimum
    assert warm.iterations * 20 <= cold.iterations, (warm.iterations, cold.iterations)
    # a plan without a basis (a MILP's) starts from its values
    values = solve_matrix(
        idx, none, mip_gap=1e-9, time_limit=None, start=WarmStart(replace(plan, lp_basis=None), steps)
    )
    assert values.warm == "values"
    assert values.objective_cost == pytest.approx(cold.objective_cost, rel=1e-9, abs=1e-9)
    assert values.iterations * 3 < cold.iterations, (values.iterations, cold.iterations)
    # and through solve(): the start is matched by the plans' timestamps
    again = solve(later, mip_gap=1e-9, start=plan)
    assert again.objective_eur == pytest.approx(-cold.objective_cost, rel=1e-9, abs=1e-9)


def test_a_plan_is_a_start_only_on_the_problem_s_interval_grid() -> None:
    problem = _fleet(20)
    plan = solve(problem, mip_gap=1e-9)
    later = _later(problem, plan.soc_kwh, 3)
    assert _warm_start(later, plan) == WarmStart(plan, 3)
    assert _warm_start(problem, plan) == WarmStart(plan, 0)
    off = replace(plan, timestamps=plan.timestamps + timedelta(minutes=5))  # not on this problem's grid
    assert _warm_start(problem, off) is None
    coarse = replace(plan, dt_h=0.5)
    assert _warm_start(problem, coarse) is None
    assert _warm_start(problem, None) is None


def test_the_same_model_restarts_from_its_basis_at_the_same_vertex() -> None:
    # an unchanged site re-planned: no iteration, and the very plan it had (not another of its equal
    # optima, which would send every station a new profile for nothing)
    problem = _fleet()
    plan = solve(problem, mip_gap=1e-9)
    assert plan.lp_basis is not None
    idx = build_index(problem)
    none = np.zeros(0, np.int64)
    again = solve_matrix(idx, none, mip_gap=1e-9, time_limit=None, start=WarmStart(plan, 0))
    assert again.iterations == 0 and again.warm == "basis"
    np.testing.assert_allclose(solve(problem, mip_gap=1e-9, start=plan).charge_kw, plan.charge_kw, atol=1e-9)
    # a schedule sent to another process (pickled) keeps its basis
    copied = pickle.loads(pickle.dumps(plan))
    lp, lay = build_lp(idx, none)
    assert copied.lp_basis is not None and copied.lp_basis.fits(idx, lay.n_col, lp.num_row_)
    assert not copied.lp_basis.fits(idx, lay.n_col, lp.num_row_ + 1)
    again = solve_matrix(idx, none, mip_gap=1e-9, time_limit=None, start=WarmStart(copied, 0))
    assert again.iterations == 0
    # other numbers, the same model (every car 0.4 kWh fuller): from the basis, the cold optimum
    fuller = replace(
        problem, sessions=tuple(replace(s, arrival_kwh=s.arrival_kwh + 0.4) for s in problem.sessions)
    )
    fidx = build_index(fuller)
    cold = solve_matrix(fidx, none, mip_gap=1e-9, time_limit=None)
    warm = solve_matrix(fidx, none, mip_gap=1e-9, time_limit=None, start=WarmStart(plan, 0))
    assert warm.objective_cost == pytest.approx(cold.objective_cost, rel=1e-9, abs=1e-9)
    assert warm.iterations * 3 < cold.iterations


def test_a_car_that_may_discharge_no_more_is_another_model() -> None:
    # the same sessions and pairs, one car's discharge taken away (its owner's V2G opt-out): the basis
    # of the model with its SoC columns is not this model's, the plan's values start it instead
    problem = _fleet()
    plan = solve(problem, mip_gap=1e-9)
    v2g = next(v for v in problem.vehicles if v.discharge_kw > 0)
    fewer = replace(
        problem,
        vehicles=tuple(replace(v, discharge_kw=0.0) if v.id == v2g.id else v for v in problem.vehicles),
    )
    idx = build_index(fewer)
    lp, lay = build_lp(idx, np.zeros(0, np.int64))
    assert plan.lp_basis is not None and not plan.lp_basis.fits(idx, lay.n_col, lp.num_row_)
    raw = solve_matrix(idx, np.zeros(0, np.int64), mip_gap=1e-9, time_limit=None, start=WarmStart(plan, 0))
    cold = solve_matrix(idx, np.zeros(0, np.int64), mip_gap=1e-9, time_limit=None)
    assert raw.warm == "mapped" and raw.objective_cost == pytest.approx(cold.objective_cost, rel=1e-9)


def test_a_later_model_with_other_cars_starts_from_the_basis_carried_over() -> None:
    # four intervals on, every car a little off its plan, five gone and three new: the old statuses by
    # session and interval, HiGHS completes the basis; the cold optimum, in fewer iterations, pickled too
    problem = _fleet()
    plan = solve(problem, mip_gap=1e-9)
    later = _later(problem, plan.soc_kwh, 4)
    rng = np.random.default_rng(7)
    drifted = [replace(s, arrival_kwh=max(s.arrival_kwh + rng.normal(0, 0.2), 0.0)) for s in later.sessions]
    new = [replace(s, id=f"new-{s.id}") for s in drifted[:3]]
    other = replace(later, sessions=(*drifted[5:], *new))
    idx = build_index(other)
    none = np.zeros(0, np.int64)
    cold = solve_matrix(idx, none, mip_gap=1e-9, time_limit=None)
    for start in (plan, pickle.loads(pickle.dumps(plan))):
        warm = solve_matrix(idx, none, mip_gap=1e-9, time_limit=None, start=WarmStart(start, 4))
        assert warm.warm == "mapped" and warm.optimal
        assert warm.objective_cost == pytest.approx(cold.objective_cost, rel=1e-9, abs=1e-9)
        assert warm.iterations * 2 < cold.iterations, (warm.iterations, cold.iterations)


def test_the_primal_simplex_only_when_the_cars_did_as_planned() -> None:
    fleet = _fleet()
    problem = replace(fleet, sessions=tuple(replace(s, arrival=fleet.horizon.start) for s in fleet.sessions))
    plan = solve(problem, mip_gap=1e-9)
    later = _later(problem, plan.soc_kwh, 2)
    assert len(later.sessions) == len(problem.sessions)
    assert as_planned(build_index(later), WarmStart(plan, 2))
    assert not as_planned(build_index(later), WarmStart(plan, 0))  # not a boundary later
    # a few cars off their plan: still about as planned; more than a tenth of them: not
    for off, expected in ((6, True), (7, False)):
        behind = replace(
            later,
            sessions=tuple(
                replace(s, arrival_kwh=s.arrival_kwh - 1.1 * AS_PLANNED_KWH) if k < off else s
                for k, s in enumerate(later.sessions)
            ),
        )
        assert as_planned(build_index(behind), WarmStart(plan, 2)) is expected
    # a car the plan did not have (its session renamed: another car's)
    new = replace(later, sessions=(replace(later.sessions[0], id="new"), *later.sessions[1:]))
    assert not as_planned(build_index(new), WarmStart(plan, 2))
