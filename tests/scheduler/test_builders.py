"""Pyomo (model of record) and the vectorised highspy builder describe the same model.

Solved to a 1e-9 gap, both reach the same optimum on the same inputs: real fleets
on a negative-price day and an ordinary day, and a small case exercising every
feature (soft targets, DR, base load and PV, sell above buy).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.index import build_index
from scheduler.inputs import DREvent, Problem
from scheduler.matrix import solve_matrix
from scheduler.schedule import check_physics
from scheduler.solve import solve
from tests.scheduler.conftest import hours, session, small_problem, vehicle


@pytest.fixture(scope="module")
def prices():
    return load_prices().eur_mwh


@pytest.mark.parametrize("day", ["2023-07-02", "2023-03-15"])
def test_builders_reach_the_same_optimum_on_a_real_fleet(prices, day: str) -> None:
    problem = fleet_problem(day, prices, FleetConfig(n_evs=60), seed=7)
    a = solve(problem, builder="highspy", mip_gap=1e-9)
    b = solve(problem, builder="pyomo", mip_gap=1e-9)
    assert a.objective_eur == pytest.approx(b.objective_eur, rel=1e-7, abs=1e-7)
    idx = build_index(problem)
    assert check_physics(a, idx) == [] and check_physics(b, idx) == []


def every_feature() -> Problem:
    a = vehicle("A", charge=10, discharge=10, battery=30)
    b = vehicle("B", charge=7, discharge=5, eta=0.92)
    c = vehicle("C", charge=3)
    return small_problem(
        [a, b, c],
        [session(a, 25, 20), session(b, 5, 20, start=1, end=5), session(c, 0, 20, end=4)],
        buy=[40, -60, -450, 120, 200, 90],
        sell=[30, -70, -460, 130, 180, 80],  # sell above buy at hour 3: the site binary matters
        import_kw=15,
        export_kw=[8, 8, 8, 8, 4, 8],
        degradation=0.01,
        penalty=0.3,
        dr=[DREvent("dr-1", hours(3.5), timedelta(hours=1), 4.0)],
        base_load=[1, 2, 1, 3, 2, 1],
        pv=[0, 3, 5, 4, 0, 0],
    )


def test_builders_reach_the_same_optimum_with_every_feature() -> None:
    problem = every_feature()
    a = solve(problem, builder="highspy", mip_gap=1e-9)
    b = solve(problem, builder="pyomo", mip_gap=1e-9)
    assert a.objective_eur == pytest.approx(b.objective_eur, abs=1e-7)
    idx = build_index(problem)
    assert check_physics(a, idx) == [] and check_physics(b, idx) == []
    assert idx.site_binary_intervals().tolist() == [3]
    assert a.shortfall_kwh[2] > 0  # C cannot reach 20 kWh with 3 kW in 4 h: priced shortfall
    # DR event 03:30–04:30 overlaps hours 3 and 4: both limited to 4 kW.
    assert idx.import_limit_kw.tolist() == [15, 15, 15, 4, 4, 15]
    assert (a.import_kw[[3, 4]] <= 4 + 1e-7).all()


def test_sparse_binaries_reach_the_full_milp_optimum(prices) -> None:
    # Binaries only below −θ (plus any round found necessary) versus a binary on every V2G pair.
    problem = fleet_problem("2023-07-02", prices, FleetConfig(n_evs=80, degradation_eur_kwh=0.005), seed=3)
    idx = build_index(problem)
    full = solve_matrix(idx, np.arange(idx.n_d), mip_gap=1e-9, time_limit=None)
    sparse = solve(problem, mip_gap=1e-9)
    assert 0 < len(idx.binary_candidates()) < idx.n_d
    assert sparse.objective_eur == pytest.approx(-full.objective_cost, rel=1e-7)
    features = solve(every_feature(), mip_gap=1e-9)
    every = build_index(every_feature())
    full_small = solve_matrix(every, np.arange(every.n_d), mip_gap=1e-9, time_limit=None)
    assert features.objective_eur == pytest.approx(-full_small.objective_cost, abs=1e-7)
