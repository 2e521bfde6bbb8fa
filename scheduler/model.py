"""The V2G scheduling MILP in Pyomo: the model of record.

``create_model`` is a flat sequence of ``define_*`` calls, one concern each, and
every docstring writes out its equation. Notation: sessions ``s``; intervals
``t`` of length Δt hours; ``(s, t) ∈ PLUGGED`` while the vehicle is plugged in;
``V2G ⊆ PLUGGED`` where it may discharge; ``MODE ⊆ V2G`` where a binary forbids
charging and discharging at once (see
:meth:`~scheduler.index.ModelIndex.binary_candidates`). Prices in EUR/MWh.

The same model is built with numpy for highspy in :mod:`scheduler.matrix`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition
from pyomo.contrib.solver.solvers.highs import Highs

from scheduler.highs import silence_banner
from scheduler.index import IntArray, ModelIndex
from scheduler.matrix import RawSolution

logger = logging.getLogger(__name__)

Model = Any  # pyo.ConcreteModel; Pyomo ships no type information


def create_model(idx: ModelIndex, binaries: IntArray) -> Model:
    """Build the MILP for ``idx`` with a charging-mode binary on ``binaries`` (indices into V2G pairs)."""
    m = pyo.ConcreteModel(name="v2g_schedule")
    define_sets(m, idx, binaries)
    define_power_variables(m, idx)
    define_soc_variables(m, idx)
    define_grid_variables(m, idx)
    define_peak_variables(m, idx)
    define_mode_variables(m, idx)
    define_soc_balance_constraints(m, idx)
    define_departure_constraints(m, idx)
    define_site_balance_constraints(m, idx)
    define_peak_constraints(m, idx)
    define_exclusivity_constraints(m, idx)
    define_site_mode_constraints(m, idx)
    define_objective(m, idx)
    return m


def define_sets(m: Model, idx: ModelIndex, binaries: IntArray) -> None:
    """S (sessions), T (intervals), PLUGGED ⊆ S×T, V2G ⊆ PLUGGED, MODE ⊆ V2G, SITE_MODE ⊆ T."""
    pairs = list(zip(idx.pair_session.tolist(), idx.pair_t.tolist(), strict=True))
    v2g = [pairs[p] for p in idx.v2g_pair.tolist()]
    m.S = pyo.Set(initialize=range(idx.n_s), ordered=True)
    m.T = pyo.Set(initialize=range(idx.n_t), ordered=True)
    m.PLUGGED = pyo.Set(dimen=2, initialize=pairs, ordered=True)
    m.V2G = pyo.Set(dimen=2, within=m.PLUGGED, initialize=v2g, ordered=True)
    m.MODE = pyo.Set(dimen=2, within=m.V2G, initialize=[v2g[k] for k in np.asarray(binaries).tolist()])
    m.SITE_MODE = pyo.Set(within=m.T, initialize=idx.site_binary_intervals().tolist())
    m.first_t = {s: int(idx.pair_t[idx.first_pair[s]]) for s in range(idx.n_s)}
    m.last_t = {s: int(idx.pair_t[idx.last_pair[s]]) for s in range(idx.n_s)}
    m.PLUGGED_AT = {t: [] for t in range(idx.n_t)}
    for s, t in pairs:
        m.PLUGGED_AT[t].append(s)
    m.V2G_AT = {t: [] for t in range(idx.n_t)}
    for s, t in v2g:
        m.V2G_AT[t].append(s)
    # power limits per pair: the vehicle's limit times the plugged share of the interval
    m.max_charge_kw = dict(zip(pairs, idx.pair_charge_kw.tolist(), strict=True))
    m.max_discharge_kw = dict(zip(v2g, idx.v2g_discharge_kw.tolist(), strict=True))


def define_power_variables(m: Model, idx: ModelIndex) -> None:
    """0 ≤ charge_kw[s,t] ≤ P_ch(s,t) on PLUGGED; 0 ≤ discharge_kw[s,t] ≤ P_dis(s,t) on V2G.

    P(s,t) is the vehicle's limit times the share of interval t it is plugged in (1 when it covers t).
    """
    m.charge_kw = pyo.Var(m.PLUGGED, bounds=lambda m, s, t: (0.0, m.max_charge_kw[s, t]))
    m.discharge_kw = pyo.Var(m.V2G, bounds=lambda m, s, t: (0.0, m.max_discharge_kw[s, t]))


def define_soc_variables(m: Model, idx: ModelIndex) -> None:
    """e_min(s) ≤ soc_kwh[s,t] ≤ e_max(s): energy in the battery at the end of interval t."""
    m.soc_kwh = pyo.Var(
        m.PLUGGED, bounds=lambda m, s, t: (float(idx.soc_lo_kwh[s]), float(idx.soc_hi_kwh[s]))
    )


def define_grid_variables(m: Model, idx: ModelIndex) -> None:
    """0 ≤ grid_import_kw[t] ≤ P_import(t) (DR events applied); 0 ≤ grid_export_kw[t] ≤ P_export(t).

    With soft targets: 0 ≤ shortfall_kwh[s] ≤ max(0, target(s) − e_min(s)).
    """
    m.grid_import_kw = pyo.Var(m.T, bounds=lambda m, t: (0.0, float(idx.import_limit_kw[t])))
    m.grid_export_kw = pyo.Var(m.T, bounds=lambda m, t: (0.0, float(idx.export_limit_kw[t])))
    if idx.shortfall_penalty_eur_kwh is not None:
        m.shortfall_kwh = pyo.Var(
            m.S, bounds=lambda m, s: (0.0, max(0.0, float(idx.target_kwh[s] - idx.soc_lo_kwh[s])))
        )


def define_peak_variables(m: Model, idx: ModelIndex) -> None:
    """peak_so_far(b) ≤ peak_import_kw[b] per billing period b of a peak charge (B: empty without one)."""
    m.B = pyo.Set(initialize=range(idx.n_b), ordered=True)
    m.peak_import_kw = pyo.Var(m.B, bounds=lambda m, b: (float(idx.peak_so_far_kw[b]), None))


def define_peak_constraints(m: Model, idx: ModelIndex) -> None:
    """grid_import[t] ≤ peak_import[b(t)] for every interval t of a billing period b."""

    def peak_import_rule(m: Model, t: int) -> Any:
        return m.grid_import_kw[t] <= m.peak_import_kw[int(idx.peak_period[t])]

    m.peak_import = pyo.Constraint(m.T if idx.n_b else [], rule=peak_import_rule)


def define_mode_variables(m: Model, idx: ModelIndex) -> None:
    """charging_mode[s,t] ∈ {0,1} on MODE; site_importing[t] ∈ {0,1} on SITE_MODE."""
    m.charging_mode = pyo.Var(m.MODE, domain=pyo.Binary)
    m.site_importing = pyo.Var(m.SITE_MODE, domain=pyo.Binary)


def define_soc_balance_constraints(m: Model, idx: ModelIndex) -> None:
    """soc[s,t] = soc[s,t−1] + η_ch(s)·charge[s,t]·Δt − discharge[s,t]·Δt/η_dis(s).

    Before the first plugged interval, soc[s, first−1] = e_arrival(s).
    """
    dt = idx.dt_h

    def soc_balance_rule(m: Model, s: int, t: int) -> Any:
        before = float(idx.arrival_kwh[s]) if t == m.first_t[s] else m.soc_kwh[s, t - 1]
        discharged = m.discharge_kw[s, t] * dt / float(idx.eta_discharge[s]) if (s, t) in m.V2G else 0.0
        return m.soc_kwh[s, t] == before + float(idx.eta_charge[s]) * dt * m.charge_kw[s, t] - discharged

    m.soc_balance = pyo.Constraint(m.PLUGGED, rule=soc_balance_rule)


def define_departure_constraints(m: Model, idx: ModelIndex) -> None:
    """soc[s, last(s)] (+ shortfall[s]) ≥ target(s)."""

    def departure_target_rule(m: Model, s: int) -> Any:
        delivered = m.soc_kwh[s, m.last_t[s]]
        if idx.shortfall_penalty_eur_kwh is not None:
            delivered = delivered + m.shortfall_kwh[s]
        return delivered >= float(idx.target_kwh[s])

    m.departure_target = pyo.Constraint(m.S, rule=departure_target_rule)


def define_site_balance_constraints(m: Model, idx: ModelIndex) -> None:
    """grid_import[t] − grid_export[t] = Σ_s charge[s,t] − Σ_s discharge[s,t] + base_load(t) − PV(t).

    One connection: vehicles discharging while others charge net out behind the meter.
    """

    def site_balance_rule(m: Model, t: int) -> Any:
        charging = sum(m.charge_kw[s, t] for s in m.PLUGGED_AT[t])
        discharging = sum(m.discharge_kw[s, t] for s in m.V2G_AT[t])
        return m.grid_import_kw[t] - m.grid_export_kw[t] == charging - discharging + float(
            idx.fixed_load_kw[t]
        )

    m.site_balance = pyo.Constraint(m.T, rule=site_balance_rule)


def define_exclusivity_constraints(m: Model, idx: ModelIndex) -> None:
    """No charging and discharging at once.

    Hull on V2G:  charge[s,t]/P_ch(s,t) + discharge[s,t]/P_dis(s,t) ≤ 1 (the convex hull of the disjunction);
    on MODE:      charge[s,t] ≤ P_ch(s,t)·mode[s,t],  discharge[s,t] ≤ P_dis(s,t)·(1 − mode[s,t]).
    """

    def exclusivity_hull_rule(m: Model, s: int, t: int) -> Any:
        return (
            m.charge_kw[s, t] / m.max_charge_kw[s, t] + m.discharge_kw[s, t] / m.max_discharge_kw[s, t] <= 1.0
        )

    def charge_mode_rule(m: Model, s: int, t: int) -> Any:
        return m.charge_kw[s, t] <= m.max_charge_kw[s, t] * m.charging_mode[s, t]

    def discharge_mode_rule(m: Model, s: int, t: int) -> Any:
        return m.discharge_kw[s, t] <= m.max_discharge_kw[s, t] * (1 - m.charging_mode[s, t])

    m.exclusivity_hull = pyo.Constraint(m.V2G, rule=exclusivity_hull_rule)
    m.charge_mode = pyo.Constraint(m.MODE, rule=charge_mode_rule)
    m.discharge_mode = pyo.Constraint(m.MODE, rule=discharge_mode_rule)


def define_site_mode_constraints(m: Model, idx: ModelIndex) -> None:
    """Where sell(t) > buy(t): grid_import[t] ≤ P_import(t)·y[t], grid_export[t] ≤ P_export(t)·(1 − y[t])."""

    def site_import_mode_rule(m: Model, t: int) -> Any:
        return m.grid_import_kw[t] <= float(idx.import_limit_kw[t]) * m.site_importing[t]

    def site_export_mode_rule(m: Model, t: int) -> Any:
        return m.grid_export_kw[t] <= float(idx.export_limit_kw[t]) * (1 - m.site_importing[t])

    m.site_import_mode = pyo.Constraint(m.SITE_MODE, rule=site_import_mode_rule)
    m.site_export_mode = pyo.Constraint(m.SITE_MODE, rule=site_export_mode_rule)


def define_objective(m: Model, idx: ModelIndex) -> None:
    """max Σ_t Δt/1000·(sell(t)·export[t] − buy(t)·import[t])
    − c_deg·Δt·Σ(charge + discharge) − c_short·Σ shortfall − Σ_b c_peak(b)·(peak_import[b] − peak_so_far(b)).

    With ``degradation_basis = "discharge"`` the wear term is c_deg·Δt·Σ discharge only."""
    dt = idx.dt_h
    grid = sum(
        dt
        / 1000.0
        * (float(idx.sell_eur_mwh[t]) * m.grid_export_kw[t] - float(idx.buy_eur_mwh[t]) * m.grid_import_kw[t])
        for t in m.T
    )
    wear = (
        idx.degradation_eur_kwh
        * dt
        * (
            (sum(m.charge_kw[p] for p in m.PLUGGED) if idx.degradation_basis == "throughput" else 0.0)
            + sum(m.discharge_kw[p] for p in m.V2G)
        )
    )
    profit = grid - wear
    if idx.n_b:
        profit = profit - sum(
            float(idx.peak_eur_per_kw[b]) * (m.peak_import_kw[b] - float(idx.peak_so_far_kw[b])) for b in m.B
        )
    if idx.shortfall_penalty_eur_kwh is not None:
        profit = profit - idx.shortfall_penalty_eur_kwh * sum(m.shortfall_kwh[s] for s in m.S)
    m.profit_eur = pyo.Objective(expr=profit, sense=pyo.maximize)


def solve_pyomo(
    idx: ModelIndex,
    binaries: IntArray,
    *,
    mip_gap: float,
    time_limit: float | None,
    threads: int | None = None,
) -> RawSolution:
    """Build with :func:`create_model`, solve with HiGHS through Pyomo, return arrays (cost = −profit)."""
    started = time.perf_counter()
    m = create_model(idx, binaries)
    built = time.perf_counter()
    silence_banner()
    opt = Highs()
    options: dict[str, Any] = {
        "load_solutions": False,
        "raise_exception_on_nonoptimal_result": False,
        "rel_gap": mip_gap,
    }
    if time_limit is not None:
        options["time_limit"] = time_limit
    if threads is not None:
        options["threads"] = threads
    results = opt.solve(m, **options)
    solved = time.perf_counter()
    status = results.solution_status
    has_solution = status in (SolutionStatus.optimal, SolutionStatus.feasible)
    if has_solution:
        results.solution_loader.load_vars()
    optimal = results.termination_condition == TerminationCondition.convergenceCriteriaSatisfied

    def values(var: Any, keys: list[Any]) -> np.ndarray:
        if not has_solution:
            return np.zeros(len(keys))
        return np.array([pyo.value(var[k]) for k in keys], dtype=np.float64)

    pairs = list(m.PLUGGED)
    incumbent = results.incumbent_objective
    bound = results.objective_bound
    gap = 0.0
    if incumbent is not None and bound is not None and len(m.MODE) + len(m.SITE_MODE) > 0:
        gap = abs(bound - incumbent) / max(abs(incumbent), 1e-10)
    shortfall = (
        values(m.shortfall_kwh, list(m.S)) if idx.shortfall_penalty_eur_kwh is not None else np.zeros(idx.n_s)
    )
    return RawSolution(
        model_status=str(results.termination_condition.name),
        optimal=optimal,
        infeasible=results.termination_condition
        in (TerminationCondition.provenInfeasible, TerminationCondition.infeasibleOrUnbounded),
        has_solution=has_solution,
        objective_cost=-float(incumbent) if incumbent is not None else float("nan"),
        bound_cost=-float(bound) if bound is not None else float("nan"),
        mip_gap=gap,
        charge_kw=values(m.charge_kw, pairs),
        discharge_kw=values(m.discharge_kw, list(m.V2G)),
        soc_kwh=values(m.soc_kwh, pairs),
        import_kw=values(m.grid_import_kw, list(m.T)),
        export_kw=values(m.grid_export_kw, list(m.T)),
        shortfall_kwh=shortfall,
        build_s=built - started,
        solve_s=solved - built,
    )
