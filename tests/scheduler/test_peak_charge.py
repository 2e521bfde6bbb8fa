"""A capacity charge on the peak import: hand-computed optima where the charge changes the schedule.

Instance (1-hour intervals, η = 1, no wear): A (10 kW) needs 10 kWh before hour 2; B (5 kW) needs
10 kWh before hour 3; prices 50, 100, 80 EUR/MWh. Without a peak charge both charge in hour 0 (import
15, 0, 5 kW: 1.15 EUR). With c EUR/kW on the peak P: hour 2 takes B's 5 kW at most, so hours 0 and 1
carry 15 kWh, and for P in [7.5, 15] the energy costs 0.05·P + 0.10·(15 − P) + 0.40 = 1.90 − 0.05·P;
the bill 1.90 − 0.05·P + c·P is lowest at P = 7.5 when c > 0.05 EUR/kW.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.errors import InvalidParameterError, MisalignedIntervalError
from scheduler.horizon import rolling_horizon
from scheduler.index import build_index
from scheduler.inputs import PeakCharge, Problem
from scheduler.schedule import check_physics, kpis
from scheduler.solve import solve
from tests.scheduler.conftest import session, small_problem, vehicle

C = 0.08  # EUR per kW of the billing period's peak


def _instance(labels: list[str] | None = None, so_far: dict[str, float] | None = None) -> Problem:
    a, b = vehicle("A", charge=10, eta=1.0), vehicle("B", charge=5, eta=1.0)
    problem = small_problem(
        [a, b], [session(a, 0, 10, end=2), session(b, 0, 10, end=3)], buy=[50, 100, 80], import_kw=20
    )
    if labels is None:
        return problem
    return replace(problem, peak_charge=PeakCharge.build(problem.horizon, labels, C, so_far))


def test_without_a_peak_charge_both_charge_in_the_cheapest_hour() -> None:
    schedule = solve(_instance(), mip_gap=1e-9)
    np.testing.assert_allclose(schedule.import_kw, [15, 0, 5], atol=1e-7)
    assert schedule.objective_eur == pytest.approx(-1.15, abs=1e-9)


@pytest.mark.parametrize("builder", ["highspy", "pyomo"])
def test_a_monthly_peak_charge_flattens_the_import_to_the_exact_optimum(builder: str) -> None:
    # P = 7.5 kW: import 7.5, 7.5, 5; energy 0.375 + 0.75 + 0.40 = 1.525 EUR, charge 0.08·7.5 = 0.60 EUR.
    # Charging as without the charge would cost 1.15 + 0.08·15 = 2.35 EUR.
    problem = _instance(["2023-07"] * 3)
    schedule = solve(problem, mip_gap=1e-9, builder=builder)  # type: ignore[arg-type]
    np.testing.assert_allclose(schedule.import_kw, [7.5, 7.5, 5], atol=1e-7)
    assert schedule.objective_eur == pytest.approx(-2.125, abs=1e-9)
    idx = build_index(problem)
    figures = kpis(schedule, idx)
    assert figures.peak_charge_eur == pytest.approx(0.60, abs=1e-9)
    assert figures.net_cost_eur == pytest.approx(2.125, abs=1e-9)
    assert check_physics(schedule, idx) == []


def test_a_peak_reached_earlier_in_the_month_is_free_to_use() -> None:
    # The month already peaked at 10 kW: up to 10 kW costs nothing more, and above it c·(P − 10). For
    # P in [10, 15] the bill is 1.90 − 0.05·P + 0.08·(P − 10), lowest at P = 10: import 10, 5, 5 and
    # 0.50 + 0.50 + 0.40 = 1.40 EUR, no charge added.
    problem = _instance(["2023-07"] * 3, {"2023-07": 10.0, "2023-06": 99.0})
    schedule = solve(problem, mip_gap=1e-9)
    np.testing.assert_allclose(schedule.import_kw, [10, 5, 5], atol=1e-7)
    assert schedule.objective_eur == pytest.approx(-1.40, abs=1e-9)
    assert kpis(schedule, build_index(problem)).peak_charge_eur == pytest.approx(0.0, abs=1e-9)


def test_daily_billing_periods_each_pay_their_own_peak() -> None:
    # Hours 0-1 on one day (peak P1), hour 2 on the next (P2 = its import y ≤ 5). Hours 0 and 1 carry
    # 20 − y kWh, best split evenly (moving a kWh to hour 0 saves 0.05 and costs 0.08 of peak), so the
    # bill is 0.075·(20 − y) + 0.08·(20 − y)/2 + 0.08·y + 0.08·y = 2.30 + 0.045·y: y = 0, import
    # 10, 10, 0 and 0.50 + 1.00 + 0.08·10 = 2.30 EUR.
    problem = _instance(["2023-07-01", "2023-07-01", "2023-07-02"])
    schedule = solve(problem, mip_gap=1e-9)
    np.testing.assert_allclose(schedule.import_kw, [10, 10, 0], atol=1e-7)
    assert schedule.objective_eur == pytest.approx(-2.30, abs=1e-9)


def test_v2g_shaves_a_base_load_peak_when_the_peak_is_charged() -> None:
    # Base load 10, 30, 10 kW at a flat 100 EUR/MWh; A (V2G, 10 kW each way, η = 1) holds 20 kWh and
    # must leave with 20. Discharging 10 kW in hour 1 and recharging 10 kWh in hours 0 and 2 brings the
    # peak from 30 to 20 kW at no energy cost: 5.00 EUR of energy + 0.08·20 = 6.60 EUR.
    a = vehicle("A", charge=10, discharge=10, eta=1.0)
    problem = small_problem([a], [session(a, 20, 20)], buy=[100, 100, 100], base_load=[10, 30, 10])
    problem = replace(problem, peak_charge=PeakCharge.build(problem.horizon, ["m"] * 3, C))
    schedule = solve(problem, mip_gap=1e-9)
    assert schedule.import_kw.max() == pytest.approx(20.0, abs=1e-7)
    assert schedule.discharge_kw[0, 1] == pytest.approx(10.0, abs=1e-7)
    assert schedule.objective_eur == pytest.approx(-6.60, abs=1e-9)
    assert check_physics(schedule, build_index(problem)) == []


def test_the_rolling_planner_carries_the_peak_it_has_committed() -> None:
    # Perfect forecasts: the re-plans keep the peak their committed hours reached (a lower bound the
    # model holds), so the realised bill is the day-ahead optimum, 2.125 EUR.
    problem = _instance(["2023-07"] * 3)
    rolled = rolling_horizon(problem, mip_gap=1e-9)
    np.testing.assert_allclose(rolled.schedule.import_kw, [7.5, 7.5, 5], atol=1e-6)
    assert rolled.kpis.peak_charge_eur == pytest.approx(0.60, abs=1e-9)
    assert rolled.kpis.net_cost_eur == pytest.approx(2.125, abs=1e-6)
    carried = rolling_horizon(_instance(["2023-07"] * 3, {"2023-07": 10.0}), mip_gap=1e-9)
    assert carried.kpis.net_cost_eur == pytest.approx(1.40, abs=1e-6)


def test_peak_charge_refuses_bad_inputs() -> None:
    horizon = _instance().horizon
    with pytest.raises(MisalignedIntervalError, match="2 billing-period labels for 3 intervals"):
        PeakCharge.build(horizon, ["a", "a"], C)
    with pytest.raises(InvalidParameterError, match="must be finite and >= 0"):
        PeakCharge.build(horizon, ["a"] * 3, -1.0)
    with pytest.raises(InvalidParameterError, match="peaks so far"):
        PeakCharge.build(horizon, ["a"] * 3, C, {"a": float("nan")})
    charge = PeakCharge.build(horizon, ["a", "b", "a"], C, {"a": 4.0})
    assert charge.labels == ("a", "b") and charge.period_of.tolist() == [0, 1, 0]
    np.testing.assert_allclose(charge.peaks_kw(np.array([3.0, 2.0, 6.0])), [6.0, 2.0])
    assert charge.cost_eur(np.array([3.0, 2.0, 6.0])) == pytest.approx(C * (2.0 + 2.0))
