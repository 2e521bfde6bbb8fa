"""Sessions covering part of an interval, and the two bases of battery wear, against hand-computed optima."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.baselines import uncontrolled
from scheduler.index import build_index
from scheduler.inputs import Horizon, Prices, Problem, Session, Site
from scheduler.schedule import check_physics, kpis
from scheduler.solve import solve
from tests.scheduler.conftest import START, hours, session, small_problem, vehicle


def _partial(interval_minutes: int) -> Problem:
    # One car, 10 kW, η 1, plugged 10:15–12:30 (relative hours 0.25–2.5), needs 12 kWh; hourly prices.
    car = vehicle("A", charge=10, eta=1.0)
    horizon = Horizon(START, 3 * 60 // interval_minutes, interval_minutes)
    hourly = np.array([10.0, 50.0, 20.0])
    return Problem(
        horizon=horizon,
        vehicles=(car,),
        sessions=(Session("s-A", "A", hours(0.25), hours(2.5), 0.0, 12.0),),
        site=Site.build(horizon, 100.0, 100.0),
        prices=Prices.build(horizon, np.repeat(hourly, 60 // interval_minutes)),
    )


def test_build_index_gives_partly_covered_intervals_their_plugged_share() -> None:
    idx = build_index(_partial(60))
    assert idx.pair_t.tolist() == [0, 1, 2]
    np.testing.assert_allclose(idx.pair_frac, [0.75, 1.0, 0.5])
    np.testing.assert_allclose(idx.pair_charge_kw, [7.5, 10.0, 5.0])
    assert build_index(_partial(15)).pair_frac.tolist() == [1.0] * 9  # aligned at 15 min: all whole


def test_solve_partial_intervals_case_buys_each_hour_up_to_its_plugged_share() -> None:
    # Hour 0 holds 7.5 kWh at 10 EUR/MWh, hour 2 holds 5 kWh at 20: 7.5 + 4.5 kWh = 0.075 + 0.09 EUR.
    problem = _partial(60)
    schedule = solve(problem, mip_gap=1e-9)
    assert schedule.objective_eur == pytest.approx(-0.165, abs=1e-9)
    np.testing.assert_allclose(schedule.charge_kw[0], [7.5, 0.0, 4.5], atol=1e-7)
    assert check_physics(schedule, build_index(problem)) == []
    # the same car in 15-min intervals, where it covers whole intervals, costs the same
    assert solve(_partial(15), mip_gap=1e-9).objective_eur == pytest.approx(-0.165, abs=1e-9)


def test_uncontrolled_partial_intervals_case_charges_from_arrival_at_the_plugged_share() -> None:
    problem = _partial(60)
    schedule = uncontrolled(problem)
    np.testing.assert_allclose(schedule.charge_kw[0], [7.5, 4.5, 0.0], atol=1e-9)
    assert kpis(schedule, build_index(problem)).import_cost_eur == pytest.approx(0.075 + 0.225, abs=1e-9)


def _cycle(basis: str) -> Problem:
    # V2G car, η 1, arrives with 20 kWh and must leave with 20: charge 10 kWh at 100, sell 10 at 300.
    car = vehicle("A", charge=10, discharge=10, eta=1.0)
    problem = small_problem([car], [session(car, 20, 20, 0, 2)], buy=[100, 300], degradation=0.02)
    return replace(problem, degradation_basis=basis)  # type: ignore[arg-type]


@pytest.mark.parametrize("basis, wear", [("throughput", 0.4), ("discharge", 0.2)])
def test_solve_degradation_basis_case_charges_wear_on_its_basis(basis: str, wear: float) -> None:
    problem = _cycle(basis)
    idx = build_index(problem)
    for builder in ("highspy", "pyomo"):
        schedule = solve(problem, mip_gap=1e-9, builder=builder)
        assert schedule.objective_eur == pytest.approx(3.0 - 1.0 - wear, abs=1e-9)
        figures = kpis(schedule, idx)
        assert figures.degradation_eur == pytest.approx(wear, abs=1e-9)
        assert figures.net_cost_eur == pytest.approx(-(2.0 - wear), abs=1e-9)


def test_simultaneity_threshold_follows_the_degradation_basis() -> None:
    car = vehicle("A", charge=10, discharge=10, eta=0.95)
    problem = small_problem([car], [session(car, 20, 20)], buy=[0, 0, 0], degradation=0.02)
    rt = 0.95 * 0.95
    throughput = build_index(problem).simultaneity_threshold_eur_mwh()
    discharge = build_index(replace(problem, degradation_basis="discharge")).simultaneity_threshold_eur_mwh()
    np.testing.assert_allclose(throughput, 1000 * 0.02 * (1 + rt) / (1 - rt))
    np.testing.assert_allclose(discharge, 1000 * 0.02 * rt / (1 - rt))


def test_problem_refuses_an_unknown_degradation_basis() -> None:
    from scheduler.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="degradation basis 'cycles'"):
        replace(_cycle("throughput"), degradation_basis="cycles")  # type: ignore[arg-type]
