"""Hand-computed optima, infeasibility, physics, and the V2G ≥ smart ≥ uncontrolled ordering."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.errors import SiteLimitInfeasibleError, TargetUnreachableError
from scheduler.index import build_index
from scheduler.matrix import solve_matrix
from scheduler.schedule import check_physics, kpis
from scheduler.solve import solve
from tests.scheduler.conftest import session, small_problem, vehicle


def test_solve_charge_case_fills_cheapest_hour_to_the_site_limit() -> None:
    # A needs 9 kWh stored (10 kWh from the grid at η 0.9), B 9 kWh stored (10 kWh grid, 5 kW charger).
    a, b = vehicle("A", charge=10), vehicle("B", charge=5)
    problem = small_problem([a, b], [session(a, 10, 19), session(b, 0, 9)], buy=[100, 50, 80], import_kw=12)
    schedule = solve(problem)
    # 12 kWh at 50 EUR/MWh, the remaining 8 kWh at 80: cost 0.60 + 0.64.
    assert schedule.objective_eur == pytest.approx(-1.24, abs=1e-9)
    np.testing.assert_allclose(schedule.import_kw, [0, 12, 8], atol=1e-7)
    assert check_physics(schedule, build_index(problem)) == []


def test_solve_discharge_case_cycles_through_the_peak_and_nets_behind_the_meter() -> None:
    # A (V2G) arrives at its target of 20 kWh; B needs 4.5 kWh stored.
    a, b = vehicle("A", charge=10, discharge=10), vehicle("B", charge=5)
    problem = small_problem(
        [a, b], [session(a, 20, 20), session(b, 0, 4.5)], buy=[50, 200, 100], import_kw=20, export_kw=10
    )
    schedule = solve(problem)
    # A: charge 10 kWh at 50, discharge 10 kWh at 200 (11.11 kWh from the battery), and buy back
    # (100/9 − 9)/0.9 = 190/81 kWh at 100 to end at 20 kWh. B: 5 kWh at 50.
    expected = 10 * 0.2 - 10 * 0.05 - (190 / 81) * 0.1 - 5 * 0.05
    assert schedule.objective_eur == pytest.approx(expected, abs=1e-9)
    np.testing.assert_allclose(schedule.discharge_kw[0], [0, 10, 0], atol=1e-7)
    np.testing.assert_allclose(schedule.export_kw, [0, 10, 0], atol=1e-7)
    idx = build_index(problem)
    assert check_physics(schedule, idx) == []
    assert kpis(schedule, idx).v2g_revenue_eur == pytest.approx(2.0, abs=1e-9)


def test_solve_negative_price_case_binaries_forbid_burning_energy() -> None:
    # A (V2G) arrives full at −500 EUR/MWh: without the binary the LP charges and discharges at once
    # (ch = 1/0.181 kW, absorbing 0.19·ch kWh); the MILP cannot, so only B earns: 10 kWh × 0.5 EUR.
    a, b = vehicle("A", charge=10, discharge=10, battery=20), vehicle("B", charge=10)
    problem = small_problem([a, b], [session(a, 20, 20), session(b, 0, 9)], buy=[-500, 0, 0])
    idx = build_index(problem)
    assert idx.binary_candidates().tolist() == [0]  # θ = 0 without degradation: only hour 0

    relaxed = solve_matrix(idx, np.zeros(0, np.int64), mip_gap=1e-9, time_limit=None)
    assert -relaxed.objective_cost == pytest.approx(5.0 + 0.5 * 0.19 / 0.181, abs=1e-7)

    schedule = solve(problem, mip_gap=1e-9)
    assert schedule.objective_eur == pytest.approx(5.0, abs=1e-7)
    assert not ((schedule.charge_kw > 1e-6) & (schedule.discharge_kw > 1e-6)).any()
    assert check_physics(schedule, idx) == []


def test_binary_candidates_use_the_degradation_threshold() -> None:
    # θ = c_deg·(1 + η²)/(1 − η²) = 0.02·1.9025/0.0975 EUR/kWh = 390.256... EUR/MWh at η = 0.95.
    a = vehicle("A", charge=10, discharge=10, eta=0.95)
    problem = small_problem([a], [session(a, 20, 20)], buy=[-390, -391, 10], degradation=0.02)
    idx = build_index(problem)
    assert idx.simultaneity_threshold_eur_mwh() == pytest.approx(np.full(3, 20 * 1.9025 / 0.0975))
    assert idx.binary_candidates().tolist() == [1]


def test_solve_raises_target_unreachable_naming_the_session() -> None:
    a = vehicle("A", charge=3)
    problem = small_problem([a], [session(a, 0, 9)], buy=[10, 10, 10])
    with pytest.raises(TargetUnreachableError) as err:
        solve(problem)
    assert err.value.session_id == "s-A" and err.value.vehicle_id == "A"
    assert err.value.reachable_kwh == pytest.approx(3 * 3 * 0.9)


def test_solve_raises_site_limit_infeasible_naming_the_intervals() -> None:
    a, b = vehicle("A"), vehicle("B")
    problem = small_problem(
        [a, b], [session(a, 0, 18), session(b, 0, 18)], buy=[10, 10, 10], import_kw=[10, 10, 10]
    )
    with pytest.raises(SiteLimitInfeasibleError) as err:
        solve(problem)
    assert err.value.limit == "import"
    # 40 kWh from the grid in 3 h under a 10 kW limit: 10 kWh too many in total.
    assert sum(err.value.excess_kw) == pytest.approx(10.0, abs=1e-6)


def test_solve_soft_target_prices_the_shortfall() -> None:
    a = vehicle("A", charge=3)
    problem = small_problem([a], [session(a, 0, 9)], buy=[10, 10, 10], penalty=1.0)
    schedule = solve(problem)
    assert schedule.shortfall_kwh[0] == pytest.approx(9 - 8.1, abs=1e-9)
    assert schedule.objective_eur == pytest.approx(-(9 * 0.01) - 0.9, abs=1e-9)
