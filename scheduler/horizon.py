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

Planning under uncertainty (:func:`saa_rolling_horizon`): instead of one forecast, several
:class:`Scenario` futures (prices where not yet public, expected arrivals), each a block of the same
model with its costs weighted 1/S, so each step minimises the scenarios' average cost (a sample-average
approximation of the two-stage problem). The flows about to be committed are the first stage: rows
added for the step (and dropped once the flows are fixed) make them equal in every block
(non-anticipativity); the rest of each block is that scenario's recourse, planned again at the next
step. The point-forecast plan of :func:`rolling_horizon` is the one-scenario case of the same code.
Scenarios come from :mod:`scheduler.scenarios`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import time as clock_time
from typing import Literal

import highspy
import numpy as np
import pandas as pd

from scheduler.errors import (
    InvalidParameterError,
    MisalignedIntervalError,
    NonFiniteValueError,
    SolverFailedError,
)
from scheduler.highs import Lp, new_highs, pass_model, run_with_recovery, status_name, write_instance
from scheduler.index import FLOW_TOL_KW, IntArray, ModelIndex, build_index
from scheduler.inputs import Horizon, Problem, Session, Vehicle
from scheduler.matrix import INF, Layout, build_lp
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
    scenarios: int = 1  # futures planned over at once (1: a point forecast)


@dataclass(frozen=True)
class Scenario:
    """One future the rolling planner plans for: a price per interval for every interval whose actual
    price is not yet public (EUR/MWh), and the sessions expected to plug in.

    ``sessions`` of ``None`` expects exactly the actual sessions, each known in advance (perfect
    availability); otherwise a session with an actual session's id is that session known in advance,
    and the others are placeholders for arrivals still to come, on vehicles of the actual fleet or of
    ``vehicles``."""

    buy_eur_mwh: np.ndarray
    sell_eur_mwh: np.ndarray
    sessions: tuple[Session, ...] | None = None
    vehicles: tuple[Vehicle, ...] = ()


def _i32(values: IntArray | list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int32)


@dataclass(frozen=True)
class _Block:
    """One scenario's copy of the model inside the rolling model: its index, its columns from ``col``
    and its rows from ``row``."""

    idx: ModelIndex
    lay: Layout
    col: int
    row: int
    ch_upper: np.ndarray
    dis_upper: np.ndarray
    departure_lower: np.ndarray
    k_of_p: np.ndarray  # each pair's V2G index, or −1
    offset: float  # the block's constant cost (EUR, unweighted)


def _block_diagonal(lps: list[Lp], weight: float) -> Lp:
    """One LP of independent blocks (each ``lps[b]``'s columns and rows in turn), every cost and offset
    times ``weight``: the sample average of the blocks' objectives when ``weight`` = 1/len(lps)."""
    if len(lps) == 1 and weight == 1.0:
        return lps[0]
    starts, index, value = [], [], []
    nnz = row = 0
    for lp in lps:
        matrix = lp.a_matrix_
        start = np.asarray(matrix.start_, dtype=np.int64)
        starts.append(start[:-1] + nnz)
        index.append(np.asarray(matrix.index_, dtype=np.int64) + row)
        value.append(np.asarray(matrix.value_, dtype=np.float64))
        nnz += int(start[-1])
        row += lp.num_row_
    return Lp.colwise(
        np.concatenate([lp.col_cost_ for lp in lps]) * weight,
        np.concatenate([lp.col_lower_ for lp in lps]),
        np.concatenate([lp.col_upper_ for lp in lps]),
        np.concatenate([lp.row_lower_ for lp in lps]),
        np.concatenate([lp.row_upper_ for lp in lps]),
        np.concatenate([*starts, [nnz]]),
        np.concatenate(index),
        np.concatenate(value),
        offset=weight * sum(float(lp.offset_) for lp in lps),
    )


class _RollingModel:
    """The persistent highspy model of a rolling run and the bookkeeping of what is known.

    With several scenarios it holds one block per scenario (block-diagonal, each block's costs weighted
    1/S, so the objective is the scenarios' average). The actual sessions are the first sessions, and
    their pairs the first pairs, of every block, so a pair index names the same session-interval in
    each; block 0 starts at column 0 and row 0, and ``idx``, ``lay``, ``ch_upper``, ``dis_upper`` and
    ``site_binaries`` are block 0's. Non-anticipativity rows (:meth:`tie`) make the committed
    intervals' flows the same in every block for one step."""

    def __init__(self, indices: list[ModelIndex], site_binaries: list[IntArray], mip_gap: float) -> None:
        self.mip_gap = mip_gap
        self.weight = 1.0 / len(indices)
        lps, blocks = [], []
        col = row = 0
        for idx, binaries in zip(indices, site_binaries, strict=True):
            lp, lay = build_lp(idx, np.zeros(0, np.int64), site_binaries=binaries)
            rows = slice(lay.departure_row, lay.departure_row + idx.n_s)
            blocks.append(
                _Block(
                    idx, lay, col, row,
                    np.asarray(lp.col_upper_[lay.ch : lay.dis], dtype=np.float64),
                    np.asarray(lp.col_upper_[lay.dis : lay.soc], dtype=np.float64),
                    np.asarray(lp.row_lower_[rows], dtype=np.float64),
                    idx.v2g_of_pair,
                    float(lp.offset_),
                )
            )  # fmt: skip
            lps.append(lp)
            col += lay.n_col
            row += lp.num_row_
        self.blocks = blocks
        self.n_col = col
        self.n_row = row  # rows of the blocks; non-anticipativity rows come after them
        self.idx, self.lay = blocks[0].idx, blocks[0].lay
        self.site_binaries = np.asarray(site_binaries[0], dtype=np.int64)
        self.h = new_highs()
        # No scaling: the matrix is already well scaled (kW, kWh, efficiencies near 1, EUR/kWh), and the
        # warm re-solves of 1,000-EV days took 26 % fewer simplex iterations unscaled (8 days of 2023,
        # both price calendars: 203,706 against 275,124) and the case study's year 16 % less time. The
        # year's 26,463 re-solves had 7 that ended "Unknown" and recovered by a cold re-solve (0 scaled).
        self.h.setOptionValue("simplex_scale_strategy", 0)
        pass_model(self.h, _block_diagonal(lps, self.weight))  # site binaries stay continuous here
        self.ch_upper, self.dis_upper = blocks[0].ch_upper, blocks[0].dis_upper
        self.k_of_p = blocks[0].k_of_p
        self.values = np.zeros(col)
        self.tied = 0
        self.solves = 0
        self.milp_steps = 0
        self.has_plan = False
        self.recoveries: list[str] = []

    # --- bounds -------------------------------------------------------------------
    def set_active(self, sessions: list[int], active: bool, from_t: int, block: int | None = None) -> None:
        """Give sessions (rows of the index) their power bounds and departure target from ``from_t`` on,
        or take them away, in one block or (``None``: actual sessions) in every block."""
        if not sessions:
            return
        chosen = self.blocks if block is None else [self.blocks[block]]
        cols, uppers, rows, lowers = [], [], [], []
        for b in chosen:
            idx = b.idx
            pairs = np.concatenate([np.arange(idx.first_pair[s], idx.last_pair[s] + 1) for s in sessions])
            pairs = pairs[idx.pair_t[pairs] >= from_t]
            ks = b.k_of_p[pairs]
            ks = ks[ks >= 0]
            cols += [b.col + b.lay.ch + pairs, b.col + b.lay.dis + ks]
            uppers += [b.ch_upper[pairs], b.dis_upper[ks]] if active else [np.zeros(len(pairs) + len(ks))]
            rows.append(b.row + b.lay.departure_row + np.asarray(sessions, dtype=np.int64))
            lowers.append(b.departure_lower[sessions] if active else np.full(len(sessions), -INF))
        col = np.concatenate(cols)
        self.h.changeColsBounds(len(col), _i32(col), np.zeros(len(col)), np.concatenate(uppers))
        row = np.concatenate(rows)
        # in highspy's core, missing from its type stubs
        self.h.changeRowsBounds(len(row), _i32(row), np.concatenate(lowers), np.full(len(row), INF))  # type: ignore[attr-defined]

    def _flow_columns(self, pairs: np.ndarray, ks: np.ndarray) -> list[np.ndarray]:
        """Per block, the charge columns of ``pairs`` and the discharge columns of ``ks``."""
        return [np.concatenate([b.col + b.lay.ch + pairs, b.col + b.lay.dis + ks]) for b in self.blocks]

    def fix(self, pairs: np.ndarray, ks: np.ndarray, charge: np.ndarray, discharge: np.ndarray) -> None:
        """Commit: fix these pairs' charge and discharge at the given values (in every block)."""
        cols = np.concatenate(self._flow_columns(pairs, ks))
        values = np.tile(np.concatenate([charge, discharge]), len(self.blocks))
        self.h.changeColsBounds(len(cols), _i32(cols), values, values)

    def set_prices(self, t: np.ndarray, buy: np.ndarray, sell: np.ndarray, block: int | None = None) -> None:
        """Prices of intervals ``t`` in every block (actual prices) or in one (its corrected forecast)."""
        if len(t) == 0:
            return
        dt = self.idx.dt_h
        chosen = self.blocks if block is None else [self.blocks[block]]
        cols = np.concatenate(
            [np.concatenate([b.col + b.lay.imp + t, b.col + b.lay.exp + t]) for b in chosen]
        )
        cost = np.tile(np.concatenate([buy * dt / 1000.0, -sell * dt / 1000.0]), len(chosen))
        self.h.changeColsCost(len(cols), _i32(cols), cost * self.weight)

    # --- non-anticipativity ---------------------------------------------------------
    def tie(self, pairs: np.ndarray, ks: np.ndarray) -> None:
        """Non-anticipativity for the intervals about to be committed: each flow of ``pairs`` and ``ks``
        in every block b ≥ 1 equals block 0's (rows x_b − x_0 = 0, until :meth:`untie`)."""
        columns = self._flow_columns(pairs, ks)
        n = len(columns[0])
        if len(self.blocks) == 1 or n == 0:
            return
        first = columns[0]
        others = np.concatenate(columns[1:])
        m = len(others)
        index = np.column_stack([others, np.tile(first, len(self.blocks) - 1)]).ravel()
        value = np.tile([1.0, -1.0], m)
        self.h.addRows(m, np.zeros(m), np.zeros(m), 2 * m, _i32(np.arange(0, 2 * m, 2)), _i32(index), value)
        self.tied = m

    def untie(self) -> None:
        """Drop the non-anticipativity rows of the step (its flows are fixed now, equal in every block)."""
        if self.tied:
            self.h.deleteRows(self.tied, _i32(np.arange(self.n_row, self.n_row + self.tied)))
            self.tied = 0

    def spread(self, pairs: np.ndarray, ks: np.ndarray) -> float:
        """The largest difference (kW) between any block's flow of ``pairs``/``ks`` in the plan in force
        and block 0's: 0 for one block, and ≤ the solver's tolerance once :meth:`tie` held in the solve."""
        columns = self._flow_columns(pairs, ks)
        if len(self.blocks) == 1 or len(columns[0]) == 0:
            return 0.0
        first = self.values[columns[0]]
        return float(max(np.abs(self.values[c] - first).max() for c in columns[1:]))

    def block_values(self, b: int) -> np.ndarray:
        """The plan in force of block ``b`` (its own columns, laid out as ``blocks[b].lay``)."""
        block = self.blocks[b]
        return self.values[block.col : block.col + block.lay.n_col]

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
        sizes = {
            "columns": len(self.values),
            "scenarios": len(self.blocks),
            "sessions": self.idx.n_s,
            "intervals": self.idx.n_t,
        }
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
            pass_model(m, lp)
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


def _without_fixed_columns(lp: highspy.HighsLp) -> tuple[Lp, np.ndarray, np.ndarray]:
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

    out = Lp.colwise(
        np.asarray(lp.col_cost_, dtype=np.float64)[kept_cols],
        lower[kept_cols],
        upper[kept_cols],
        (np.asarray(lp.row_lower_, dtype=np.float64) - activity)[used],
        (np.asarray(lp.row_upper_, dtype=np.float64) - activity)[used],
        np.concatenate([[0], np.cumsum(np.diff(start)[kept_cols])]),
        new_row[index[kept_nz]],
        value[kept_nz],
    )
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
    error_decay_per_hour: float = 0.0,
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
    ``error_decay_per_hour``: track forecast errors (see :func:`saa_rolling_horizon`); 0 does not.

    A step whose solve ends without an optimum recovers as :meth:`_RollingModel.solve` says: cold, then
    another algorithm, then the plan in force for that step (limited to the site's limits); the
    result's ``recoveries`` counts each.

    This is :func:`saa_rolling_horizon` with one scenario, the point forecast.
    """
    buy, sell = actual.prices.buy_eur_mwh, actual.prices.sell_eur_mwh
    scenario = Scenario(
        buy if buy_forecast_eur_mwh is None else np.asarray(buy_forecast_eur_mwh, dtype=np.float64),
        sell if sell_forecast_eur_mwh is None else np.asarray(sell_forecast_eur_mwh, dtype=np.float64),
        session_forecast,
        forecast_vehicles,
    )
    return saa_rolling_horizon(
        actual,
        [scenario],
        prices_known_from=prices_known_from,
        replan_every=replan_every,
        v2g=v2g,
        mip_gap=mip_gap,
        shortfall_value_eur_kwh=shortfall_value_eur_kwh,
        context=context,
        error_decay_per_hour=error_decay_per_hour,
    )


def saa_rolling_horizon(
    actual: Problem,
    scenarios: Sequence[Scenario],
    *,
    prices_known_from: np.ndarray | None = None,
    replan_every: int = 1,
    v2g: bool = True,
    mip_gap: float = 1e-4,
    shortfall_value_eur_kwh: float = 0.0,
    context: str = "",
    error_decay_per_hour: float = 0.0,
) -> RollingResult:
    """Rolling re-planning over ``actual`` as a sample-average approximation of a two-stage problem.

    At every step the plan covers the same rest of the horizon in each of ``scenarios`` (one model
    block per scenario, with that scenario's prices where the actual ones are not yet public and its
    expected arrivals), minimising the average of the scenarios' costs. The first stage is the flows of
    the sessions really plugged in during the intervals about to be committed: non-anticipativity rows
    make them the same in every scenario. Everything after is each scenario's own recourse, and is
    planned again at the next step with what has been observed by then. Actual prices replace every
    scenario's as they become public; an arrival makes the session known in every scenario; a
    scenario's expected arrival expires when its time has passed.

    With one scenario this is the point-forecast plan of :func:`rolling_horizon`; with one scenario
    that is the truth (its prices the actual ones, ``sessions`` of ``None``), the realised schedule is
    the perfect-foresight optimum. Raises :class:`~scheduler.errors.InvalidParameterError` for no
    scenario or scenarios that know different sessions in advance,
    :class:`~scheduler.errors.NonFiniteValueError` for a price that is not finite and
    :class:`~scheduler.errors.MisalignedIntervalError` for a price path of the wrong length.

    ``error_decay_per_hour`` ρ > 0 tracks forecast errors: whenever a price becomes public, each
    scenario's prices not yet public become its forecast plus ρ^h times its error on the last public
    interval, h hours before (see :func:`scheduler.scenarios.error_persistence` for ρ)."""
    planner = _Planner(
        actual, scenarios, prices_known_from, replan_every, v2g, mip_gap, shortfall_value_eur_kwh, context,
        error_decay_per_hour,
    )  # fmt: skip
    for k in range(0, planner.n_t, replan_every):
        planner.step(k)
    return planner.result()


@dataclass(frozen=True)
class ScenarioPlan:
    """The plan of a sample-average rolling planner at one step, per scenario: the actual sessions'
    charge and discharge (kW, ``scenarios × sessions × intervals``) over the horizon. Intervals in
    ``first_stage`` (start, end) are about to be committed (the same in every scenario), those before
    were committed by earlier steps, those after are each scenario's recourse."""

    session_ids: tuple[str, ...]
    first_stage: tuple[int, int]
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    expected_cost_eur: float  # the objective: the scenarios' average cost
    scenario_cost_eur: np.ndarray  # each scenario's own cost of its plan


def saa_plan(
    actual: Problem,
    scenarios: Sequence[Scenario],
    *,
    prices_known_from: np.ndarray | None = None,
    replan_every: int = 1,
    v2g: bool = True,
    mip_gap: float = 1e-4,
    step: int = 0,
) -> ScenarioPlan:
    """The plan :func:`saa_rolling_horizon` makes at ``step`` (a multiple of ``replan_every``; the steps
    before it run and commit as they do there), before it commits the intervals from ``step`` to the
    next step: that first stage and every scenario's recourse (to inspect and test). Raises
    :class:`~scheduler.errors.SolverFailedError` when that step has no optimum."""
    planner = _Planner(actual, scenarios, prices_known_from, replan_every, v2g, mip_gap, 0.0, "")
    if step % replan_every or not 0 <= step < planner.n_t:
        raise InvalidParameterError(
            f"step {step} is not a step of {planner.n_t} intervals every {replan_every}"
        )
    for k in range(0, step, replan_every):
        planner.step(k)
    pairs, ks = planner.observe(step)
    model = planner.model
    model.tie(pairs, ks)
    if not model.solve(f"saa plan step {step}"):
        raise SolverFailedError(f"saa plan step {step}: no optimum after every recovery")
    idx = model.idx
    n_a = int(planner.actual_rows.sum())
    sessions = np.flatnonzero(planner.actual_rows)
    shape = (len(model.blocks), n_a, idx.n_t)
    charge, discharge = np.zeros(shape), np.zeros(shape)
    own = np.zeros(len(model.blocks))
    lp = model.h.getLp()
    cost = np.asarray(lp.col_cost_, dtype=np.float64)[: model.n_col] / model.weight
    for b, block in enumerate(model.blocks):
        values = model.block_values(b)
        own[b] = float(cost[block.col : block.col + block.lay.n_col] @ values) + block.offset
        for i, s in enumerate(sessions):  # the actual sessions' pairs have the same indices in every block
            p = np.arange(idx.first_pair[s], idx.last_pair[s] + 1)
            charge[b, i, idx.pair_t[p]] = values[block.lay.ch + p]
            ks = model.k_of_p[p]
            discharge[b, i, idx.pair_t[p[ks >= 0]]] = values[block.lay.dis + ks[ks >= 0]]
    return ScenarioPlan(
        tuple(idx.session_ids[s] for s in sessions),
        (step, min(step + replan_every, idx.n_t)),
        charge,
        discharge,
        float(model.h.getInfo().objective_function_value),
        own,
    )


def _price_path(values: np.ndarray, n_t: int, what: str) -> np.ndarray:
    path = np.asarray(values, dtype=np.float64)
    if path.shape != (n_t,):
        raise MisalignedIntervalError(f"{what} has {path.size} values for {n_t} intervals")
    if not np.isfinite(path).all():
        t = int(np.flatnonzero(~np.isfinite(path))[0])
        raise NonFiniteValueError(f"{what} is {path[t]} in interval {t}")
    return path


class _Planner:
    """One rolling run: what is known, what is pending, the model, and what has been committed."""

    def __init__(
        self,
        actual: Problem,
        scenarios: Sequence[Scenario],
        prices_known_from: np.ndarray | None,
        replan_every: int,
        v2g: bool,
        mip_gap: float,
        shortfall_value_eur_kwh: float,
        context: str,
        error_decay_per_hour: float = 0.0,
    ) -> None:
        if replan_every < 1:
            raise ValueError("replan_every must be >= 1")
        if not 0.0 <= error_decay_per_hour < 1.0:  # False for NaN too
            raise InvalidParameterError(f"error decay per hour {error_decay_per_hour} must be in [0, 1)")
        self.error_decay = error_decay_per_hour
        self.tracked_from = -1  # the last known interval the forecasts were corrected from
        if len(scenarios) == 0:
            raise InvalidParameterError("a rolling plan needs at least one scenario")
        if not v2g:
            actual = actual.without_discharge()
        self.actual, self.replan_every, self.mip_gap = actual, replan_every, mip_gap
        self.shortfall_value, self.context = shortfall_value_eur_kwh, context
        horizon = actual.horizon
        n_t = self.n_t = horizon.intervals
        buy_act, sell_act = actual.prices.buy_eur_mwh, actual.prices.sell_eur_mwh
        self.buy_act, self.sell_act = buy_act, sell_act
        several = len(scenarios) > 1
        names = [f"scenario {b} " if several else "" for b in range(len(scenarios))]
        self.buy_fc = np.vstack(
            [
                _price_path(s.buy_eur_mwh, n_t, f"{n}buy forecast")
                for n, s in zip(names, scenarios, strict=True)
            ]
        )
        self.sell_fc = np.vstack(
            [
                _price_path(s.sell_eur_mwh, n_t, f"{n}sell forecast")
                for n, s in zip(names, scenarios, strict=True)
            ]
        )
        known_from = np.arange(n_t) if prices_known_from is None else np.asarray(prices_known_from)
        if known_from.shape != (n_t,):
            raise ValueError(f"prices_known_from has {known_from.shape} values for {n_t} intervals")
        self.known_from = known_from
        actual_ids = {s.id for s in actual.sessions}
        known_vehicles = {v.id for v in actual.vehicles}
        ahead = [
            actual_ids if s.sessions is None else {x.id for x in s.sessions if x.id in actual_ids}
            for s in scenarios
        ]
        if any(a != ahead[0] for a in ahead):
            raise InvalidParameterError(
                "scenarios must know the same actual sessions in advance (what is known is not a scenario)"
            )
        known_ahead = ahead[0]

        # One block per scenario, each for every actual session and the scenario's expected ones; prices
        # start as what is known at step 0.
        penalty = actual.shortfall_penalty_eur_kwh or REPLAN_SHORTFALL_EUR_KWH
        self.price_known = known_from <= 0
        indices, site_binaries = [], []
        self.pending_forecast: list[list[tuple[float, int]]] = []
        for b, scenario in enumerate(scenarios):
            expected = actual.sessions if scenario.sessions is None else scenario.sessions
            extra_sessions = tuple(s for s in expected if s.id not in actual_ids)
            extra_vehicles = tuple(v for v in scenario.vehicles if v.id not in known_vehicles)
            if not v2g:
                extra_vehicles = tuple(replace(v, discharge_kw=0.0) for v in extra_vehicles)
            combined = replace(
                actual,
                vehicles=actual.vehicles + extra_vehicles,
                sessions=actual.sessions + extra_sessions,
                prices=replace(
                    actual.prices,
                    buy_eur_mwh=np.where(self.price_known, buy_act, self.buy_fc[b]),
                    sell_eur_mwh=np.where(self.price_known, sell_act, self.sell_fc[b]),
                ),
                shortfall_penalty_eur_kwh=penalty,
            )
            idx = build_index(combined, check_targets=False)
            indices.append(idx)
            # import/export binaries where selling can pay more than buying, by the actual or the
            # scenario's prices
            site_binaries.append(np.flatnonzero((sell_act > buy_act) | (self.sell_fc[b] > self.buy_fc[b])))
            by_id = {s.id: s for s in combined.sessions}
            # the scenario's expected arrivals, in arrival order, to expire when their time has passed
            self.pending_forecast.append(
                sorted(
                    (horizon.offset(by_id[sid].arrival), s)
                    for s, sid in enumerate(idx.session_ids)
                    if sid not in actual_ids
                )
            )
        self.model = _RollingModel(indices, site_binaries, mip_gap)
        idx = self.model.idx
        # the actual sessions are the first rows of every block, in the same order
        self.actual_rows = np.array([sid in actual_ids for sid in idx.session_ids], dtype=bool)
        n_actual = int(self.actual_rows.sum())
        for other in indices[1:]:
            if other.session_ids[:n_actual] != idx.session_ids[:n_actual]:
                raise SolverFailedError("scenario blocks disagree on the actual sessions")  # never expected
        by_id = {s.id: s for s in actual.sessions}
        # actual sessions still to be revealed, in arrival order
        self.pending_actual = sorted(
            (horizon.offset(by_id[sid].arrival), s)
            for s, sid in enumerate(idx.session_ids)
            if self.actual_rows[s] and sid not in known_ahead
        )
        self.model.set_active([s for _, s in self.pending_actual], False, 0)  # the rest active as built
        self.active_actual = np.zeros(idx.n_s, dtype=bool)
        self.active_actual[[s for s, sid in enumerate(idx.session_ids) if sid in known_ahead]] = True
        self.commit_ch = np.zeros(idx.n_p)
        self.commit_dis = np.zeros(idx.n_d)
        self.seconds: list[float] = []
        self.changed = True

    def observe(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """What step ``k`` learns: arrivals in its window become known, expected arrivals that did not
        happen expire, prices public by ``k`` replace the forecasts. Returns the pairs (and their V2G
        indices) the step commits: the actual sessions plugged in during its window."""
        model, idx = self.model, self.model.idx
        window_end = min(k + self.replan_every, self.n_t)
        revealed = []
        while self.pending_actual and self.pending_actual[0][0] < window_end:
            revealed.append(self.pending_actual.pop(0)[1])
        model.set_active(revealed, True, k)
        self.active_actual[revealed] = True
        expired_any = False
        for b, pending in enumerate(self.pending_forecast):
            expired = []
            while pending and pending[0][0] < window_end:
                expired.append(pending.pop(0)[1])
            model.set_active(expired, False, k, block=b)
            expired_any = expired_any or bool(expired)
        newly = np.flatnonzero((self.known_from <= k) & ~self.price_known)
        self.price_known[newly] = True
        if self.error_decay == 0.0:  # (with tracking the model may hold a corrected forecast there)
            # a revealed price that every scenario had right changes nothing
            wrong = (self.buy_fc[:, newly] != self.buy_act[newly]) | (
                self.sell_fc[:, newly] != self.sell_act[newly]
            )
            newly = newly[wrong.any(axis=0)]
        model.set_prices(newly, self.buy_act[newly], self.sell_act[newly])
        self.changed = self.changed or bool(revealed) or expired_any or len(newly) > 0
        if self.error_decay > 0.0:
            self.track_errors()
        in_window = (idx.pair_t >= k) & (idx.pair_t < window_end) & self.active_actual[idx.pair_session]
        pairs = np.flatnonzero(in_window)
        ks = model.k_of_p[pairs]
        return pairs, ks[ks >= 0]

    def track_errors(self) -> None:
        """Correct every scenario's forecast of the prices not yet public by its error on the last public
        interval, decayed with the hours between: ``f(t) + ρ^h·(actual − f)(last)`` (forecast errors
        persist: the validated ensemble's lag-one autocorrelation was 0.85 per hour in 2023)."""
        known = np.flatnonzero(self.price_known)
        unknown = np.flatnonzero(~self.price_known)
        if len(known) == 0 or len(unknown) == 0 or known[-1] == self.tracked_from:
            return
        last = self.tracked_from = int(known[-1])
        hours = np.abs(unknown - last) * self.model.idx.dt_h
        weight = self.error_decay**hours
        for b in range(len(self.model.blocks)):
            buy = self.buy_fc[b, unknown] + weight * (self.buy_act[last] - self.buy_fc[b, last])
            sell = self.sell_fc[b, unknown] + weight * (self.sell_act[last] - self.sell_fc[b, last])
            self.model.set_prices(unknown, buy, sell, block=b)
        self.changed = True

    def step(self, k: int) -> None:
        """Observe, re-plan where something new was observed, and commit the window of step ``k``."""
        started = time.perf_counter()
        model, idx = self.model, self.model.idx
        window_end = min(k + self.replan_every, self.n_t)
        pairs, ks = self.observe(k)
        model.tie(pairs, ks)
        # a plan whose first stage already agrees across scenarios stays optimal with the new ties
        self.changed = self.changed or model.spread(pairs, ks) > FLOW_TOL_KW
        what = f"{self.context + ' ' if self.context else ''}rolling step {k}"
        held = False
        if self.changed:
            held = not model.solve(what)
            self.changed = held  # a held step tries again at the next one
        window = np.arange(k, window_end)
        values = model.values
        if held:
            values = values.copy()
            model.net_flows(pairs, values)
        elif len(model.mode_conflicts(pairs, values)) or len(model.site_conflicts(window, values)):
            model.solve_commitment_as_milp(pairs, window, what)
            self.changed = True  # the LP model's own optimum differs from what is committed
            values = model.values
        # clipped into the bounds only: zeroing solver noise could push a SoC at its bound outside it
        ch = np.clip(values[model.lay.ch + pairs], 0.0, model.ch_upper[pairs])
        dis = np.clip(values[model.lay.dis + ks], 0.0, model.dis_upper[ks])
        if held:
            ch, dis = _within_site_limits(idx, pairs, ks, ch, dis, window)
        self.commit_ch[pairs], self.commit_dis[ks] = ch, dis
        model.fix(pairs, ks, ch, dis)
        model.untie()
        self.seconds.append(time.perf_counter() - started)

    def result(self) -> RollingResult:
        actual, model = self.actual, self.model
        value = self.shortfall_value or actual.shortfall_penalty_eur_kwh
        valued = build_index(replace(actual, shortfall_penalty_eur_kwh=value), check_targets=False)
        realised = _realised_schedule(
            actual, valued, model.idx, self.commit_ch, self.commit_dis, self.mip_gap
        )
        figures = kpis(realised, valued)
        realised = replace(realised, objective_eur=-figures.net_cost_eur)
        logger.info(
            "rolling over %d scenario(s): %d steps, %d solves (%d as MILP), %d recoveries, "
            "max %.3f s per step",
            len(model.blocks),
            len(self.seconds),
            model.solves,
            model.milp_steps,
            len(model.recoveries),
            max(self.seconds, default=0.0),
        )
        return RollingResult(
            realised,
            figures,
            len(self.seconds),
            tuple(self.seconds),
            model.solves,
            model.milp_steps,
            tuple(model.recoveries),
            len(model.blocks),
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
