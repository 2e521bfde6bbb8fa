"""Rolling re-optimisation: plan with forecasts, commit the first interval(s), observe, re-plan.

At every step ``k`` (every ``replan_every`` intervals) the plan covers the rest of the horizon:

- sessions that have arrived, or arrive while the committed intervals run, with what their committed
  history left them, plus the sessions the availability forecast still expects later;
- the actual price of every interval whose price is public by then (``prices_known_from``, see
  :func:`prices_known_from`: the market's calendar publishes each delivery day's prices at 12:45
  CET/CEST the day before; a stress test reveals each price only when its interval starts), the
  forecast price of the others;
- the actual site limits and DR events (announced ahead, as OpenADR events are).

Only the committed intervals of actual sessions are kept.

Warm start: one highspy model holds every actual and every forecast session for the whole horizon and
lives through all steps. A step changes bounds and costs only: a session that becomes known gets its
power bounds and departure target, a forecast session whose arrival time has passed loses them,
committed intervals are fixed at their values, and revealed prices replace forecasts. HiGHS then
re-solves from the previous optimal basis instead of from scratch, and a step where nothing new was
observed keeps the previous plan without a solve (the same problem has the same optimum).

The model is the LP of :mod:`scheduler.matrix` with the convex-hull cut ``charge/P_ch + discharge/P_dis
≤ 1``. Where the committed intervals of a plan charge and discharge one vehicle at once (only at
prices far below zero), or import and export at once, that step is solved again as a MILP with binaries
on exactly those pairs and intervals, as :func:`scheduler.solve.solve` does.

With perfect forecasts the re-plans follow the day-ahead optimum (Bellman), which
``tests/scheduler/test_horizon.py`` checks. A session whose target a surprise made unreachable pays the
shortfall penalty instead of making the plan infeasible.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import time as clock_time
from typing import Literal

import highspy
import numpy as np
import pandas as pd

from scheduler.errors import SolverFailedError
from scheduler.highs import new_highs, run_with_recovery, status_name, write_instance
from scheduler.index import FLOW_TOL_KW, IntArray, ModelIndex, build_index
from scheduler.inputs import Horizon, Problem, Session, Vehicle
from scheduler.matrix import INF, build_lp
from scheduler.schedule import Kpis, Schedule, kpis
from scheduler.solve import MAX_ROUNDS

logger = logging.getLogger(__name__)

#: Shortfall price used while re-planning when the problem's targets are hard (EUR per kWh missing).
REPLAN_SHORTFALL_EUR_KWH = 10.0

#: What a planner knows of prices: ``day-ahead`` follows the market's calendar (the default);
#: ``interval`` reveals each price only when its interval starts (a stress test).
PriceKnowledge = Literal["day-ahead", "interval"]
#: When the day-ahead auction's results for delivery day D are public: this local time on D−1 (the
#: SDAC/EPEX SPOT results appear at about 12:45 CET/CEST, after the 12:00 gate closure).
DAY_AHEAD_PUBLICATION = clock_time(12, 45)
#: The market's time zone: a delivery day runs from local midnight to local midnight (23 or 25 hours
#: on the days the clocks change).
MARKET_TIME_ZONE = "Europe/Amsterdam"


def prices_known_from(
    horizon: Horizon,
    knowledge: PriceKnowledge = "day-ahead",
    *,
    publication: clock_time = DAY_AHEAD_PUBLICATION,
    market_tz: str = MARKET_TIME_ZONE,
) -> np.ndarray:
    """Per interval of ``horizon``, the first step (interval index; negative = before the start) at which
    its actual price is public, for :func:`rolling_horizon`'s ``prices_known_from``.

    ``day-ahead``: an interval belongs to the delivery day D of its start in ``market_tz``; D's prices are
    public at ``publication`` (local time) on D−1, so the step is the first interval start at or after
    that moment, never one before. ``interval``: each price when its interval starts."""
    if knowledge == "interval":
        return np.arange(horizon.intervals)
    if knowledge != "day-ahead":
        raise ValueError(f"price knowledge {knowledge!r} must be 'day-ahead' or 'interval'")
    local = horizon.timestamps.tz_convert(market_tz).tz_localize(None)  # local wall-clock times
    wall = local.normalize() - pd.Timedelta(days=1)
    wall = wall + pd.Timedelta(hours=publication.hour, minutes=publication.minute, seconds=publication.second)
    # a publication time in the hour the clocks repeat is taken the second time (standard time); one in
    # the hour they skip, at the first moment after it
    published = wall.tz_localize(
        market_tz, ambiguous=np.zeros(len(wall), dtype=bool), nonexistent="shift_forward"
    ).tz_convert("UTC")
    offset = (published - pd.Timestamp(horizon.start)) / horizon.step
    return np.asarray(np.ceil(np.round(offset.to_numpy(dtype=np.float64), 9)), dtype=np.int64)


@dataclass(frozen=True)
class RollingResult:
    schedule: Schedule
    kpis: Kpis
    steps: int  # decision points (one every ``replan_every`` intervals)
    step_seconds: tuple[float, ...]
    solves: int = 0  # steps that re-solved (the others observed nothing new)
    milp_steps: int = 0  # steps whose commitment needed binaries
    #: solver recoveries taken, e.g. ``("Unknown→cold",)``; ``→held`` = a step kept the plan in force
    recoveries: tuple[str, ...] = ()


def _i32(values: IntArray | list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int32)


class _RollingModel:
    """The persistent highspy model of a rolling run and the bookkeeping of what is known."""

    def __init__(self, idx: ModelIndex, site_binaries: IntArray, mip_gap: float) -> None:
        self.idx = idx
        self.mip_gap = mip_gap
        lp, self.lay = build_lp(idx, np.zeros(0, np.int64), site_binaries=site_binaries)
        self.site_binaries = np.asarray(site_binaries, dtype=np.int64)
        self.h = new_highs()
        self.h.passModel(lp)  # the site binaries stay continuous here (their LP relaxation)
        self.ch_upper = np.asarray(lp.col_upper_[self.lay.ch : self.lay.dis], dtype=np.float64)
        self.dis_upper = np.asarray(lp.col_upper_[self.lay.dis : self.lay.soc], dtype=np.float64)
        self.k_of_p = idx.v2g_of_pair
        self.values = np.zeros(self.lay.n_col)
        rows = slice(self.lay.departure_row, self.lay.departure_row + idx.n_s)
        self.departure_lower = np.asarray(lp.row_lower_[rows], dtype=np.float64)
        self.solves = 0
        self.milp_steps = 0
        self.has_plan = False
        self.recoveries: list[str] = []

    # --- bounds -------------------------------------------------------------------
    def _session_columns(self, s: int, from_t: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair indices ``p`` and V2G indices ``k`` of session ``s`` at intervals ``>= from_t``."""
        idx = self.idx
        pairs = np.arange(idx.first_pair[s], idx.last_pair[s] + 1)
        pairs = pairs[idx.pair_t[pairs] >= from_t]
        ks = self.k_of_p[pairs]
        return pairs, ks[ks >= 0]

    def set_active(self, sessions: list[int], active: bool, from_t: int) -> None:
        """Give sessions their power bounds and departure target from ``from_t`` on, or take them away."""
        if not sessions:
            return
        lay = self.lay
        parts = [self._session_columns(s, from_t) for s in sessions]
        pairs = np.concatenate([p for p, _ in parts])
        ks = np.concatenate([k for _, k in parts])
        ch_up = self.ch_upper[pairs] if active else np.zeros(len(pairs))
        dis_up = self.dis_upper[ks] if active else np.zeros(len(ks))
        cols = np.concatenate([lay.ch + pairs, lay.dis + ks])
        upper = np.concatenate([ch_up, dis_up])
        self.h.changeColsBounds(len(cols), _i32(cols), np.zeros(len(cols)), upper)
        rows = lay.departure_row + np.asarray(sessions, dtype=np.int64)
        lower = self.departure_lower[sessions] if active else np.full(len(sessions), -INF)
        # in highspy's core, missing from its type stubs
        self.h.changeRowsBounds(len(rows), _i32(rows), lower, np.full(len(rows), INF))  # type: ignore[attr-defined]

    def fix(self, pairs: np.ndarray, ks: np.ndarray, charge: np.ndarray, discharge: np.ndarray) -> None:
        """Commit: fix these pairs' charge and discharge at the given values."""
        lay = self.lay
        cols = np.concatenate([lay.ch + pairs, lay.dis + ks])
        values = np.concatenate([charge, discharge])
        self.h.changeColsBounds(len(cols), _i32(cols), values, values)

    def set_prices(self, t: np.ndarray, buy: np.ndarray, sell: np.ndarray) -> None:
        if len(t) == 0:
            return
        lay, dt = self.lay, self.idx.dt_h
        cols = np.concatenate([lay.imp + t, lay.exp + t])
        cost = np.concatenate([buy * dt / 1000.0, -sell * dt / 1000.0])
        self.h.changeColsCost(len(cols), _i32(cols), cost)

    # --- solving ------------------------------------------------------------------
    def solve(self, what: str) -> bool:
        """Re-solve this step (recovering as :func:`scheduler.highs.run_with_recovery` does); True when
        ``self.values`` holds the new plan, False when every recovery failed and the plan in force (the
        last optimal one) is held for this step. Raises :class:`SolverFailedError` when there is no plan
        in force yet."""
        run = run_with_recovery(self.h, what, recover_infeasible=True)
        self.solves += 1
        self.recoveries += run.recoveries
        if run.optimal:
            self.values = np.asarray(self.h.getSolution().col_value, dtype=np.float64)
            self.has_plan = True
            return True
        sizes = {"columns": self.lay.n_col, "sessions": self.idx.n_s, "intervals": self.idx.n_t}
        context = {"status": status_name(self.h), "recoveries": run.recoveries, **sizes}
        path = write_instance(self.h, what, context)
        self.h.clearSolver()  # the next step starts cold
        if not self.has_plan:
            raise SolverFailedError(
                f"{what} ({self.idx.n_s} sessions × {self.idx.n_t} intervals): HiGHS ended "
                f"{status_name(self.h, run.status)!r} after recoveries {', '.join(run.recoveries)} and "
                f"there is no plan in force to hold; instance written to {path}"
            )
        self.recoveries.append(f"{status_name(self.h, run.status)}→held")
        logger.warning(
            "%s: no recovery gave an optimum; holding the plan in force (instance: %s)", what, path
        )
        return False

    def net_flows(self, pairs: np.ndarray, values: np.ndarray) -> None:
        """Where a V2G pair among ``pairs`` charges and discharges at once in ``values``, replace both by
        the one flow that leaves the same energy in the battery (SoC, and so every later SoC bound,
        unchanged); used when the commitment's MILP is out of reach."""
        lay, idx = self.lay, self.idx
        ks = self.mode_conflicts(pairs, values)
        if len(ks) == 0:
            return
        p = idx.v2g_pair[ks]
        s = idx.pair_session[p]
        ch, dis = values[lay.ch + p], values[lay.dis + ks]
        stored = idx.eta_charge[s] * ch - dis / idx.eta_discharge[s]  # kWh per hour into the battery
        values[lay.ch + p] = np.where(stored > 0, stored / idx.eta_charge[s], 0.0)
        values[lay.dis + ks] = np.where(stored < 0, -stored * idx.eta_discharge[s], 0.0)

    def mode_conflicts(self, pairs: np.ndarray, values: np.ndarray) -> np.ndarray:
        """V2G indices among ``pairs`` that charge and discharge at once in ``values``."""
        lay = self.lay
        ks = self.k_of_p[pairs]
        v2g = ks >= 0
        both = (values[lay.ch + pairs[v2g]] > FLOW_TOL_KW) & (values[lay.dis + ks[v2g]] > FLOW_TOL_KW)
        return np.asarray(ks[v2g][both], dtype=np.int64)

    def site_conflicts(self, window: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Intervals of ``window`` with a site binary that import and export at once in ``values``."""
        lay = self.lay
        both = (values[lay.imp + window] > FLOW_TOL_KW) & (values[lay.exp + window] > FLOW_TOL_KW)
        return np.intersect1d(window[both], self.site_binaries)

    def solve_commitment_as_milp(self, pairs: np.ndarray, window: np.ndarray, what: str) -> None:
        """Re-solve this step as a MILP with a binary on every committed V2G pair (and on the committed
        intervals that import and export at once), adding more while any remain; ``self.values`` then
        holds that solution, and the LP model is untouched. Binaries on the whole window at once spare
        the rounds that adding only the conflicting pairs would take. When the MILP has no solution
        after every recovery, the LP plan's simultaneous flows are netted instead (:meth:`net_flows`)."""
        lay, idx = self.lay, self.idx
        ks = self.k_of_p[pairs]
        modes = np.asarray(ks[ks >= 0], dtype=np.int64)
        sites = self.site_conflicts(window, self.values)
        # The past and every inactive session are fixed columns: leave them out (HiGHS's MIP presolve
        # would spend longer finding that out than the MILP takes to solve).
        lp, kept, fixed_values = _without_fixed_columns(self.h.getLp())
        col = np.cumsum(kept) - 1  # new index of each kept column
        for _ in range(MAX_ROUNDS):
            m = new_highs(mip_gap=self.mip_gap)
            m.passModel(lp)
            n_col = lp.num_col_
            n = len(modes)
            if n:
                # charging_mode[b]: ch ≤ P_ch·z ; dis ≤ P_dis·(1 − z)
                m.addCols(n, np.zeros(n), np.zeros(n), np.ones(n), 0, _i32([]), _i32([]), np.zeros(0))
                p = idx.v2g_pair[modes]
                pch = self.ch_upper[p]
                pdis = self.dis_upper[modes]
                z = np.arange(n_col, n_col + n)
                starts = _i32(np.arange(0, 2 * n, 2))
                m.addRows(
                    n, np.full(n, -INF), np.zeros(n), 2 * n, starts,
                    _i32(np.column_stack([col[lay.ch + p], z]).ravel()),
                    np.column_stack([np.ones(n), -pch]).ravel(),
                )  # fmt: skip
                m.addRows(
                    n, np.full(n, -INF), pdis, 2 * n, starts,
                    _i32(np.column_stack([col[lay.dis + modes], z]).ravel()),
                    np.column_stack([np.ones(n), pdis]).ravel(),
                )  # fmt: skip
                m.changeColsIntegrality(n, _i32(z), np.ones(n, dtype=np.uint8))
            if len(sites):
                ys = col[lay.y + np.searchsorted(self.site_binaries, sites)]
                m.changeColsIntegrality(len(ys), _i32(ys), np.ones(len(ys), dtype=np.uint8))
            run = run_with_recovery(m, f"{what} MILP", recover_infeasible=True)
            self.recoveries += run.recoveries
            if m.getInfo().primal_solution_status != 2:
                path = write_instance(
                    m, f"{what} MILP", {"status": status_name(m), "recoveries": run.recoveries}
                )
                logger.warning(
                    "%s MILP: no solution after recoveries (instance: %s); netting the LP plan's flows",
                    what,
                    path,
                )
                self.recoveries.append(f"{status_name(m)}→netted")
                self.net_flows(pairs, self.values)
                return
            values = fixed_values.copy()
            values[kept] = np.asarray(m.getSolution().col_value, dtype=np.float64)[:n_col]
            self.values = values
            extra = np.setdiff1d(self.mode_conflicts(pairs, self.values), modes)
            extra_sites = np.setdiff1d(self.site_conflicts(window, self.values), sites)
            if len(extra) == 0 and len(extra_sites) == 0:
                self.milp_steps += 1
                return
            modes, sites = np.union1d(modes, extra), np.union1d(sites, extra_sites)
        logger.warning(
            "%s: simultaneous flows remain after %d rounds of binaries; netting them", what, MAX_ROUNDS
        )
        self.recoveries.append("rounds→netted")
        self.net_flows(pairs, self.values)


def _without_fixed_columns(lp: highspy.HighsLp) -> tuple[highspy.HighsLp, np.ndarray, np.ndarray]:
    """``lp`` without its fixed columns (their values moved into the row bounds) and without the rows
    left empty; returns it, the mask of kept columns, and every column's fixed value (lower bound)."""
    lower = np.asarray(lp.col_lower_, dtype=np.float64)
    upper = np.asarray(lp.col_upper_, dtype=np.float64)
    matrix = lp.a_matrix_
    if matrix.format_ != highspy.MatrixFormat.kColwise:
        raise SolverFailedError("expected a column-wise constraint matrix")
    start = np.asarray(matrix.start_, dtype=np.int64)
    index = np.asarray(matrix.index_, dtype=np.int64)
    value = np.asarray(matrix.value_, dtype=np.float64)
    n_col, n_row = lp.num_col_, lp.num_row_
    fixed = lower == upper
    col_of = np.repeat(np.arange(n_col), np.diff(start))
    from_fixed = fixed[col_of]
    activity = np.bincount(
        index[from_fixed], weights=value[from_fixed] * lower[col_of[from_fixed]], minlength=n_row
    )
    kept_nz = ~from_fixed
    used = np.zeros(n_row, dtype=bool)
    used[index[kept_nz]] = True  # rows that keep a column
    new_row = np.cumsum(used) - 1
    kept_cols = np.flatnonzero(~fixed)

    out = highspy.HighsLp()
    out.num_col_ = len(kept_cols)
    out.num_row_ = int(used.sum())
    out.col_cost_ = np.asarray(lp.col_cost_, dtype=np.float64)[kept_cols]
    out.col_lower_ = lower[kept_cols]
    out.col_upper_ = upper[kept_cols]
    out.row_lower_ = (np.asarray(lp.row_lower_, dtype=np.float64) - activity)[used]
    out.row_upper_ = (np.asarray(lp.row_upper_, dtype=np.float64) - activity)[used]
    out.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    out.a_matrix_.start_ = np.concatenate([[0], np.cumsum(np.diff(start)[kept_cols])]).astype(np.int32)
    out.a_matrix_.index_ = new_row[index[kept_nz]].astype(np.int32)
    out.a_matrix_.value_ = value[kept_nz]
    out.a_matrix_.num_col_ = out.num_col_
    out.a_matrix_.num_row_ = out.num_row_
    out.sense_ = lp.sense_
    return out, ~fixed, lower.copy()


def rolling_horizon(
    actual: Problem,
    *,
    buy_forecast_eur_mwh: np.ndarray | None = None,
    sell_forecast_eur_mwh: np.ndarray | None = None,
    session_forecast: tuple[Session, ...] | None = None,
    forecast_vehicles: tuple[Vehicle, ...] = (),
    prices_known_from: np.ndarray | None = None,
    replan_every: int = 1,
    v2g: bool = True,
    mip_gap: float = 1e-4,
    shortfall_value_eur_kwh: float = 0.0,
    context: str = "",
) -> RollingResult:
    """Simulate rolling re-planning over ``actual`` and return the realised schedule and its KPIs.

    ``buy/sell_forecast_eur_mwh``: per-interval forecasts (default: the actual prices, i.e. perfect).
    ``prices_known_from``: per interval, the step (interval index, may be negative) from which its
    actual price is public; default: each interval's own start.
    ``session_forecast``: sessions expected to arrive (default: the actual ones, i.e. perfect); a
    forecast session with an actual session's id is that session known in advance; the others'
    vehicles must be in ``actual.vehicles`` or ``forecast_vehicles``.
    ``shortfall_value_eur_kwh``: what each kWh an owner leaves without costs in the realised KPIs
    (e.g. what the owner would pay at a public fast charger), so that a strategy cannot look cheaper by
    delivering less.
    ``context`` names the run in logs and in written instances (e.g. the day).

    A step whose solve ends without an optimum recovers as :meth:`_RollingModel.solve` says: cold, then
    another algorithm, then the plan in force for that step (limited to the site's limits); the
    result's ``recoveries`` counts each.
    """
    if replan_every < 1:
        raise ValueError("replan_every must be >= 1")
    if not v2g:
        actual = actual.without_discharge()
    horizon = actual.horizon
    n_t = horizon.intervals
    buy_act, sell_act = actual.prices.buy_eur_mwh, actual.prices.sell_eur_mwh
    buy_fc = buy_act if buy_forecast_eur_mwh is None else np.asarray(buy_forecast_eur_mwh, dtype=np.float64)
    sell_fc = (
        sell_act if sell_forecast_eur_mwh is None else np.asarray(sell_forecast_eur_mwh, dtype=np.float64)
    )
    known_from = np.arange(n_t) if prices_known_from is None else np.asarray(prices_known_from)
    if known_from.shape != (n_t,):
        raise ValueError(f"prices_known_from has {known_from.shape} values for {n_t} intervals")
    expected = actual.sessions if session_forecast is None else session_forecast
    actual_ids = {s.id for s in actual.sessions}
    known_ahead = {s.id for s in expected if s.id in actual_ids}
    extra_sessions = tuple(s for s in expected if s.id not in actual_ids)
    known_vehicles = {v.id for v in actual.vehicles}
    extra_vehicles = tuple(v for v in forecast_vehicles if v.id not in known_vehicles)
    if not v2g:
        extra_vehicles = tuple(replace(v, discharge_kw=0.0) for v in extra_vehicles)

    # One model for every session, actual and expected; prices start as what is known at step 0.
    penalty = actual.shortfall_penalty_eur_kwh or REPLAN_SHORTFALL_EUR_KWH
    price_known = known_from <= 0
    combined = replace(
        actual,
        vehicles=actual.vehicles + extra_vehicles,
        sessions=actual.sessions + extra_sessions,
        prices=replace(
            actual.prices,
            buy_eur_mwh=np.where(price_known, buy_act, buy_fc),
            sell_eur_mwh=np.where(price_known, sell_act, sell_fc),
        ),
        shortfall_penalty_eur_kwh=penalty,
    )
    idx = build_index(combined, check_targets=False)
    # import/export binaries where selling can pay more than buying, by the actual or the forecast prices
    site_binaries = np.flatnonzero((sell_act > buy_act) | (sell_fc > buy_fc))
    model = _RollingModel(idx, site_binaries, mip_gap)

    row_of = {sid: s for s, sid in enumerate(idx.session_ids)}
    by_id = {s.id: s for s in combined.sessions}
    arrival = {sid: horizon.offset(by_id[sid].arrival) for sid in idx.session_ids}
    # Sessions still to be revealed (actual) or to expire (forecast), in arrival order.
    pending_actual = sorted(
        (arrival[sid], row_of[sid]) for sid in idx.session_ids if sid in actual_ids and sid not in known_ahead
    )
    pending_forecast = sorted((arrival[sid], row_of[sid]) for sid in idx.session_ids if sid not in actual_ids)
    model.set_active([s for _, s in pending_actual], False, 0)  # everything else is active as built
    active_actual = np.zeros(idx.n_s, dtype=bool)
    active_actual[[row_of[sid] for sid in idx.session_ids if sid in known_ahead]] = True

    commit_ch = np.zeros(idx.n_p)
    commit_dis = np.zeros(idx.n_d)
    seconds: list[float] = []
    changed = True
    for k in range(0, n_t, replan_every):
        started = time.perf_counter()
        window_end = min(k + replan_every, n_t)
        # Observe: arrivals in the window become known; expected arrivals that did not happen expire.
        revealed = []
        while pending_actual and pending_actual[0][0] < window_end:
            revealed.append(pending_actual.pop(0)[1])
        expired = []
        while pending_forecast and pending_forecast[0][0] < window_end:
            expired.append(pending_forecast.pop(0)[1])
        model.set_active(revealed, True, k)
        model.set_active(expired, False, k)
        active_actual[revealed] = True
        newly = np.flatnonzero((known_from <= k) & ~price_known)
        price_known[newly] = True
        # a revealed price the forecast had right changes nothing
        newly = newly[(buy_act[newly] != buy_fc[newly]) | (sell_act[newly] != sell_fc[newly])]
        model.set_prices(newly, buy_act[newly], sell_act[newly])
        changed = changed or bool(revealed) or bool(expired) or len(newly) > 0
        what = f"{context + ' ' if context else ''}rolling step {k}"
        held = False
        if changed:
            held = not model.solve(what)
            changed = held  # a held step tries again at the next one
        # Commit the window for the sessions that are really plugged in.
        in_window = (idx.pair_t >= k) & (idx.pair_t < window_end) & active_actual[idx.pair_session]
        pairs = np.flatnonzero(in_window)
        window = np.arange(k, window_end)
        values = model.values
        if held:
            values = values.copy()
            model.net_flows(pairs, values)
        elif len(model.mode_conflicts(pairs, values)) or len(model.site_conflicts(window, values)):
            model.solve_commitment_as_milp(pairs, window, what)
            changed = True  # the LP model's own optimum differs from what is committed
            values = model.values
        ks = model.k_of_p[pairs]
        ks = ks[ks >= 0]
        # clipped into the bounds only: zeroing solver noise could push a SoC at its bound outside it
        ch = np.clip(values[model.lay.ch + pairs], 0.0, model.ch_upper[pairs])
        dis = np.clip(values[model.lay.dis + ks], 0.0, model.dis_upper[ks])
        if held:
            ch, dis = _within_site_limits(idx, pairs, ks, ch, dis, window)
        commit_ch[pairs], commit_dis[ks] = ch, dis
        model.fix(pairs, ks, ch, dis)
        seconds.append(time.perf_counter() - started)

    value = shortfall_value_eur_kwh or actual.shortfall_penalty_eur_kwh
    valued = build_index(replace(actual, shortfall_penalty_eur_kwh=value), check_targets=False)
    realised = _realised_schedule(actual, valued, idx, commit_ch, commit_dis, mip_gap)
    figures = kpis(realised, valued)
    realised = replace(realised, objective_eur=-figures.net_cost_eur)
    logger.info(
        "rolling: %d steps, %d solves (%d as MILP), %d recoveries, max %.3f s per step",
        len(seconds),
        model.solves,
        model.milp_steps,
        len(model.recoveries),
        max(seconds, default=0.0),
    )
    return RollingResult(
        realised,
        figures,
        len(seconds),
        tuple(seconds),
        model.solves,
        model.milp_steps,
        tuple(model.recoveries),
    )


def _within_site_limits(
    idx: ModelIndex, pairs: np.ndarray, ks: np.ndarray, ch: np.ndarray, dis: np.ndarray, window: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A held plan's committed flows of the actual sessions, scaled down per interval as a site's load
    balancer would where, without the forecast sessions the plan counted on, they break the import or
    export limit (charging scaled where import is over, discharging where export is)."""
    ch, dis = ch.copy(), dis.copy()
    t_ch = idx.pair_t[pairs]
    t_dis = idx.pair_t[idx.v2g_pair[ks]]
    for t in window:
        on_ch, on_dis = t_ch == t, t_dis == t
        net = ch[on_ch].sum() - dis[on_dis].sum() + idx.fixed_load_kw[t]
        if net > idx.import_limit_kw[t] and ch[on_ch].sum() > 0:
            ch[on_ch] *= max(0.0, 1.0 - (net - idx.import_limit_kw[t]) / ch[on_ch].sum())
        elif -net > idx.export_limit_kw[t] and dis[on_dis].sum() > 0:
            dis[on_dis] *= max(0.0, 1.0 - (-net - idx.export_limit_kw[t]) / dis[on_dis].sum())
    return ch, dis


def _realised_schedule(
    actual: Problem,
    full: ModelIndex,
    idx: ModelIndex,
    charge: np.ndarray,
    discharge: np.ndarray,
    mip_gap: float,
) -> Schedule:
    """The committed flows of the actual sessions (indexed by ``idx``, the rolling model's index) as a
    :class:`Schedule` over ``full``, the index of ``actual``."""
    row_of = {sid: s for s, sid in enumerate(idx.session_ids)}
    n_t, dt = full.n_t, full.dt_h
    ch = np.zeros((full.n_s, n_t))
    dis = np.zeros((full.n_s, n_t))
    soc = np.full((full.n_s, n_t), np.nan)
    dis_of_p = np.zeros(idx.n_p)
    dis_of_p[idx.v2g_pair] = discharge
    soc_of_p = idx.soc_from_flows(charge, discharge)
    for i, sid in enumerate(full.session_ids):
        s = row_of[sid]
        pairs = np.arange(idx.first_pair[s], idx.last_pair[s] + 1)
        t = idx.pair_t[pairs]
        ch[i, t], dis[i, t], soc[i, t] = charge[pairs], dis_of_p[pairs], soc_of_p[pairs]
    net = ch.sum(axis=0) - dis.sum(axis=0) + full.fixed_load_kw
    final = soc[np.arange(full.n_s), full.pair_t[full.last_pair]] if full.n_s else np.zeros(0)
    short = full.target_kwh - final
    return Schedule(
        strategy="rolling",
        timestamps=actual.horizon.timestamps,
        dt_h=dt,
        session_ids=full.session_ids,
        vehicle_ids=full.vehicle_ids,
        owners=full.owners,
        charge_kw=ch,
        discharge_kw=dis,
        soc_kwh=soc,
        import_kw=np.maximum(net, 0.0),
        export_kw=np.maximum(-net, 0.0),
        shortfall_kwh=np.where(short > 1e-6, short, 0.0),
        status="rolling",
        termination="rolling",
        mip_gap=mip_gap,
        objective_eur=0.0,
    )
