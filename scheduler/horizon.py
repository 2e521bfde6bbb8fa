"""Rolling re-optimisation: plan with forecasts, commit the first interval(s), observe, re-plan.

At every step ``k`` (every ``replan_every`` intervals) the plan covers the rest of the horizon:

- sessions that have arrived, or arrive while the committed intervals run, with the energy their
  committed history left them, plus the sessions the availability forecast still expects later;
- the actual price for the intervals being committed now, the forecast price after;
- the actual site limits and DR events (announced ahead, as OpenADR events are).

Only the committed intervals of actual sessions are kept. With perfect forecasts the re-plans follow
the day-ahead optimum (Bellman), which ``tests/scheduler/test_horizon.py`` checks. A session whose
target a surprise made unreachable pays the shortfall penalty instead of making the plan infeasible.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from scheduler.index import build_index
from scheduler.inputs import Horizon, Prices, Problem, Session, Site, Vehicle
from scheduler.schedule import Kpis, Schedule, kpis
from scheduler.solve import solve

logger = logging.getLogger(__name__)

#: Shortfall price used while re-planning when the problem's targets are hard (EUR per kWh missing).
REPLAN_SHORTFALL_EUR_KWH = 10.0


@dataclass(frozen=True)
class RollingResult:
    schedule: Schedule
    kpis: Kpis
    steps: int
    step_seconds: tuple[float, ...]


def rolling_horizon(
    actual: Problem,
    *,
    buy_forecast_eur_mwh: np.ndarray | None = None,
    sell_forecast_eur_mwh: np.ndarray | None = None,
    session_forecast: tuple[Session, ...] | None = None,
    forecast_vehicles: tuple[Vehicle, ...] = (),
    replan_every: int = 1,
    v2g: bool = True,
    mip_gap: float = 1e-4,
    shortfall_value_eur_kwh: float = 0.0,
) -> RollingResult:
    """Simulate rolling re-planning over ``actual`` and return the realised schedule and its KPIs.

    ``buy/sell_forecast_eur_mwh``: per-interval forecasts (default: the actual prices, i.e. perfect).
    ``session_forecast``: sessions expected to arrive (default: the actual ones, i.e. perfect); their
    vehicles must be in ``actual.vehicles`` or ``forecast_vehicles``.
    ``shortfall_value_eur_kwh``: what each kWh an owner leaves without costs in the realised KPIs
    (e.g. what the owner would pay at a public fast charger), so that a strategy cannot look cheaper by
    delivering less.
    """
    if replan_every < 1:
        raise ValueError("replan_every must be >= 1")
    horizon = actual.horizon
    n_t = horizon.intervals
    buy_fc = actual.prices.buy_eur_mwh if buy_forecast_eur_mwh is None else np.asarray(buy_forecast_eur_mwh)
    sell_fc = (
        actual.prices.sell_eur_mwh if sell_forecast_eur_mwh is None else np.asarray(sell_forecast_eur_mwh)
    )
    expected = actual.sessions if session_forecast is None else session_forecast
    full_index = build_index(actual, check_targets=False)
    position = {sid: i for i, sid in enumerate(full_index.session_ids)}
    energy = {s.id: s.arrival_kwh for s in actual.sessions}
    charge = np.zeros((full_index.n_s, n_t))
    discharge = np.zeros((full_index.n_s, n_t))
    soc = np.full((full_index.n_s, n_t), np.nan)
    penalty = actual.shortfall_penalty_eur_kwh or REPLAN_SHORTFALL_EUR_KWH
    known_ids = {v.id for v in actual.vehicles}
    vehicles = actual.vehicles + tuple(v for v in forecast_vehicles if v.id not in known_ids)
    seconds: list[float] = []
    for k in range(0, n_t, replan_every):
        started = time.perf_counter()
        now = horizon.start + k * horizon.step
        sub = Horizon(now, n_t - k, horizon.interval_minutes)
        commit = min(replan_every, n_t - k)
        window_end = now + commit * horizon.step
        # Sessions that arrive while these intervals run are observed as they come: the controller
        # knows them for the committed window (their arrival time still bounds when they can charge).
        arrived = [
            replace(s, arrival=max(s.arrival, now), arrival_kwh=energy[s.id])
            for s in actual.sessions
            if s.arrival < window_end and s.departure > now
        ]
        arrived_ids = {s.id for s in actual.sessions if s.arrival < window_end}
        coming = [s for s in expected if s.arrival >= window_end and s.id not in arrived_ids]
        buy = np.concatenate([actual.prices.buy_eur_mwh[k : k + commit], buy_fc[k + commit :]])
        sell = np.concatenate([actual.prices.sell_eur_mwh[k : k + commit], sell_fc[k + commit :]])
        used_vehicles = {s.vehicle_id for s in arrived} | {s.vehicle_id for s in coming}
        plan_problem = Problem(
            horizon=sub,
            vehicles=tuple(v for v in vehicles if v.id in used_vehicles),
            sessions=tuple(arrived + coming),
            site=Site(
                actual.site.import_limit_kw[k:],
                actual.site.export_limit_kw[k:],
                actual.site.base_load_kw[k:],
                actual.site.pv_kw[k:],
            ),
            prices=Prices.build(sub, buy, sell),
            dr_events=actual.dr_events,
            degradation_eur_kwh=actual.degradation_eur_kwh,
            shortfall_penalty_eur_kwh=penalty,
        )
        if arrived:
            plan = solve(plan_problem, v2g=v2g, mip_gap=mip_gap)
            rows = {sid: i for i, sid in enumerate(plan.session_ids)}
            for s in arrived:
                i = rows.get(s.id)
                if i is None:
                    continue
                vehicle = plan_problem.vehicle_by_id[s.vehicle_id]
                for j in range(commit):
                    ch, dis = plan.charge_kw[i, j], plan.discharge_kw[i, j]
                    if np.isnan(plan.soc_kwh[i, j]):
                        continue
                    energy[s.id] += (vehicle.eta_charge * ch - dis / vehicle.eta_discharge) * horizon.dt_h
                    p = position[s.id]
                    charge[p, k + j], discharge[p, k + j], soc[p, k + j] = ch, dis, energy[s.id]
        seconds.append(time.perf_counter() - started)
    net = charge.sum(axis=0) - discharge.sum(axis=0) + full_index.fixed_load_kw
    final = np.array([energy[sid] for sid in full_index.session_ids])
    realised = Schedule(
        strategy="rolling",
        timestamps=horizon.timestamps,
        dt_h=horizon.dt_h,
        session_ids=full_index.session_ids,
        vehicle_ids=full_index.vehicle_ids,
        owners=full_index.owners,
        charge_kw=charge,
        discharge_kw=discharge,
        soc_kwh=soc,
        import_kw=np.maximum(net, 0.0),
        export_kw=np.maximum(-net, 0.0),
        shortfall_kwh=np.maximum(full_index.target_kwh - final, 0.0) * (full_index.target_kwh - final > 1e-6),
        status="rolling",
        termination="rolling",
        mip_gap=mip_gap,
        objective_eur=0.0,
    )
    valued = full_index
    if shortfall_value_eur_kwh > 0:
        valued = build_index(
            replace(actual, shortfall_penalty_eur_kwh=shortfall_value_eur_kwh), check_targets=False
        )
    figures = kpis(realised, valued)
    realised = replace(realised, objective_eur=-figures.net_cost_eur)
    logger.info("rolling: %d steps, max %.2f s per step", len(seconds), max(seconds, default=0.0))
    return RollingResult(realised, figures, len(seconds), tuple(seconds))
