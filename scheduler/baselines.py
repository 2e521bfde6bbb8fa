"""Baselines on the same inputs: uncontrolled charging and smart charging without V2G.

- ``uncontrolled``: every vehicle charges at full power from arrival until it
  holds what its owner asked for, as a plain charge point does. When the site
  cannot take every request, the site's load balancer scales all requests in
  that interval down by the same factor. Targets it cannot meet are reported as
  shortfall, never hidden.
- ``smart``: the optimisation model with discharge forbidden (an LP).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scheduler.index import build_index
from scheduler.inputs import Problem
from scheduler.schedule import SHORTFALL_VALUE_EUR_KWH, Kpis, Schedule, kpis
from scheduler.solve import solve

STRATEGIES = ("uncontrolled", "smart", "v2g")


def uncontrolled(problem: Problem) -> Schedule:
    """Simulate charge-on-arrival at full power, capped by the site import limit."""
    idx = build_index(problem, check_targets=False)
    dt = idx.dt_h
    n_s, n_t = idx.n_s, idx.n_t
    charge = np.zeros((n_s, n_t))
    soc = np.full((n_s, n_t), np.nan)
    level = idx.arrival_kwh.copy()
    wanted = idx.requested_kwh
    plugged = np.zeros((n_s, n_t), dtype=bool)
    plugged[idx.pair_session, idx.pair_t] = True
    limit = np.zeros((n_s, n_t))  # full power times the plugged share of each interval
    limit[idx.pair_session, idx.pair_t] = idx.pair_charge_kw
    for t in range(n_t):
        here = plugged[:, t]
        request = np.where(
            here, np.minimum(limit[:, t], np.maximum(wanted - level, 0.0) / (idx.eta_charge * dt)), 0.0
        )
        room = max(0.0, idx.import_limit_kw[t] - idx.fixed_load_kw[t])
        total = request.sum()
        if total > room:
            request *= room / total
        charge[:, t] = request
        level = level + idx.eta_charge * request * dt
        soc[here, t] = level[here]
    net = charge.sum(axis=0) + idx.fixed_load_kw
    final = soc[np.arange(n_s), idx.pair_t[idx.last_pair]] if n_s else np.zeros(0)
    shortfall = np.maximum(idx.target_kwh - final, 0.0)
    shortfall[shortfall < 1e-9] = 0.0
    schedule = Schedule(
        strategy="uncontrolled",
        timestamps=problem.horizon.timestamps,
        dt_h=dt,
        session_ids=idx.session_ids,
        vehicle_ids=idx.vehicle_ids,
        owners=idx.owners,
        charge_kw=charge,
        discharge_kw=np.zeros((n_s, n_t)),
        soc_kwh=soc,
        import_kw=np.maximum(net, 0.0),
        export_kw=np.maximum(-net, 0.0),
        shortfall_kwh=shortfall,
        status="simulated",
        termination="simulated",
        mip_gap=0.0,
        objective_eur=0.0,
    )
    objective = -kpis(schedule, idx).net_cost_eur
    return replace(schedule, objective_eur=objective)


def run_strategies(
    problem: Problem,
    *,
    mip_gap: float = 1e-4,
    time_limit: float | None = None,
    shortfall_value_eur_kwh: float = SHORTFALL_VALUE_EUR_KWH,
) -> dict[str, tuple[Schedule, Kpis]]:
    """Uncontrolled, smart and V2G schedules of ``problem`` with their KPIs; energy an owner leaves
    without is valued at ``shortfall_value_eur_kwh`` in every strategy's net cost."""
    idx = build_index(
        replace(problem, shortfall_penalty_eur_kwh=shortfall_value_eur_kwh), check_targets=False
    )
    mask = np.zeros(problem.horizon.intervals, dtype=bool)
    for event in problem.dr_events:
        mask |= event.mask(problem.horizon)
    out: dict[str, tuple[Schedule, Kpis]] = {}
    base = uncontrolled(problem)
    out["uncontrolled"] = (base, kpis(base, idx, mask))
    smart = solve(problem, v2g=False, mip_gap=mip_gap, time_limit=time_limit)
    out["smart"] = (smart, kpis(smart, idx, mask))
    v2g = solve(problem, v2g=True, mip_gap=mip_gap, time_limit=time_limit)
    out["v2g"] = (v2g, kpis(v2g, idx, mask))
    return out
