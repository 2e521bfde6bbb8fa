"""Baselines and the V2G model on real days: physics holds, V2G ≥ smart ≥ uncontrolled in profit."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.baselines import run_strategies, uncontrolled
from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem, generate_fleet
from scheduler.index import build_index
from scheduler.schedule import check_physics
from tests.scheduler.conftest import session, small_problem, vehicle


@pytest.fixture(scope="module")
def prices():
    return load_prices().eur_mwh


@pytest.mark.parametrize("day", ["2023-07-02", "2023-01-10", "2022-08-29"])
def test_run_strategies_orders_profit_and_every_schedule_is_physical(prices, day: str) -> None:
    problem = fleet_problem(day, prices, FleetConfig(n_evs=150), seed=11)
    results = run_strategies(problem, mip_gap=1e-6)
    idx = build_index(problem)
    smart_idx = build_index(problem.without_discharge())
    for name, (schedule, _) in results.items():
        assert check_physics(schedule, smart_idx if name == "smart" else idx) == [], name
    net = {name: k.net_cost_eur for name, (_, k) in results.items()}
    assert net["v2g"] <= net["smart"] + 1e-6 <= net["uncontrolled"] + 2e-6
    assert results["uncontrolled"][1].shortfall_kwh == 0.0
    assert results["smart"][1].discharged_kwh == 0.0
    # Peak import of the optimised schedules stays within the site limit (±3 kW per EV).
    assert results["v2g"][1].peak_import_kw <= 3 * 150 + 1e-6


def test_uncontrolled_charges_at_full_power_from_arrival_and_shares_the_site_limit() -> None:
    a, b = vehicle("A", charge=10), vehicle("B", charge=10)
    problem = small_problem([a, b], [session(a, 0, 13.5), session(b, 0, 9)], buy=[10, 10, 10], import_kw=15)
    schedule = uncontrolled(problem)
    # Hour 0: both ask 10 kW, the site has 15: each gets 7.5 (6.75 kWh stored). Hour 1: A asks
    # 6.75/0.9 = 7.5 kW, B 2.25/0.9 = 2.5 kW: 10 kW fits. Hour 2: both are done.
    np.testing.assert_allclose(schedule.charge_kw[0], [7.5, 7.5, 0])
    np.testing.assert_allclose(schedule.charge_kw[1], [7.5, 2.5, 0])
    np.testing.assert_allclose(schedule.import_kw, [15, 10, 0])
    assert check_physics(schedule, build_index(problem)) == []


def test_uncontrolled_reports_shortfall_when_the_site_cannot_deliver() -> None:
    a = vehicle("A", charge=10)
    problem = small_problem([a], [session(a, 0, 18)], buy=[10, 10, 10], import_kw=5)
    schedule = uncontrolled(problem)
    assert schedule.shortfall_kwh[0] == pytest.approx(18 - 3 * 5 * 0.9)


def test_generate_fleet_is_reproducible_and_feasible() -> None:
    config = FleetConfig(n_evs=300, v2g_share=0.3)
    v1, s1 = generate_fleet("2023-07-03", config, seed=5)
    v2, s2 = generate_fleet("2023-07-03", config, seed=5)
    _, s3 = generate_fleet("2023-07-03", config, seed=6)
    assert (v1, s1) == (v2, s2)
    assert s1 != s3
    share = np.mean([v.v2g for v in v1])
    assert 0.2 < share < 0.4
    assert all(v.charge_kw <= 11 and v.discharge_kw <= 11 for v in v1)
    by_id = {v.id: v for v in v1}
    for s in s1:
        vehicle_ = by_id[s.vehicle_id]
        hours_ = (s.departure - s.arrival).total_seconds() / 3600
        assert s.arrival.minute % 15 == 0 and s.departure.minute % 15 == 0
        assert s.target_kwh <= s.arrival_kwh + vehicle_.eta_charge * vehicle_.charge_kw * hours_ + 1e-9
        assert s.target_kwh <= vehicle_.max_kwh + 1e-9
        assert s.departure.date() == s.arrival.date() or s.departure.hour == 0


def test_energy_left_undelivered_is_valued_alike_in_every_strategy(prices) -> None:
    """Uncontrolled charging leaves 1.123 kWh undelivered on this day (sessions cut at midnight); it is
    valued at 0.60 EUR/kWh in its net cost, as the optimised strategies' shortfall would be."""
    problem = fleet_problem("2023-07-02", prices, FleetConfig(n_evs=20), seed=0)
    results = run_strategies(problem)
    base = results["uncontrolled"][1]
    assert base.shortfall_kwh == pytest.approx(1.123, abs=5e-4)
    assert base.shortfall_penalty_eur == pytest.approx(0.60 * base.shortfall_kwh, rel=1e-12)
    for _, k in results.values():
        assert k.net_cost_eur == pytest.approx(
            k.import_cost_eur - k.export_revenue_eur + k.degradation_eur + k.shortfall_penalty_eur, abs=1e-12
        )
