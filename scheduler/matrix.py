"""Vectorised builder: the model of :mod:`scheduler.model` as sparse matrices handed to highspy.

Pyomo is the model of record; at fleet scale its build and hand-over dominate
(tens of seconds at 5,000 EVs), so this module writes the very same columns and
rows with numpy over the arrays of :class:`~scheduler.index.ModelIndex`.
``tests/scheduler/test_builders.py`` proves both builders reach the same optimum.

Columns, in order: charge_kw[p], discharge_kw[k], soc_kwh[k], grid_import_kw[t],
grid_export_kw[t], shortfall_kwh[s] (soft targets only), peak_import_kw[b] (one per billing
period of a peak charge), charging_mode[b] (binary, V2G pairs in ``binaries``),
site_importing[t] (binary, intervals where sell > buy). The objective is written as a
cost to minimise (−profit).

One exact reduction: a session that cannot discharge only ever fills its battery,
so its SoC is monotone and its window holds everywhere once it holds at departure.
Such a session gets no SoC columns and no SoC balance rows, only
``e0 + η·Δt·Σ charge ≥ target`` (its departure row) and ``e0 + η·Δt·Σ charge ≤ e_max``
(its cap row); SoC columns and balances exist for V2G sessions only (their pairs
are exactly the V2G pairs ``k``). The SoC of every pair is rebuilt after the solve.
Smart charging thus solves a far smaller LP, and the V2G LP shrinks by the share of
sessions that cannot discharge.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import highspy
import numpy as np

from scheduler.highs import Lp, new_highs, pass_model, run_with_recovery, status_name, write_instance
from scheduler.index import FloatArray, IntArray, ModelIndex

if TYPE_CHECKING:
    from scheduler.schedule import Schedule

logger = logging.getLogger(__name__)

INF = highspy.kHighsInf


@dataclass(frozen=True)
class Layout:
    """Column offsets of each variable block, and where each block of rows starts: SoC balances (one per
    V2G pair, from row 0), departures (one per session), caps (one per session that cannot discharge),
    site balances and peaks (one per interval), exclusivity hulls (one per V2G pair), then the rows of
    binaries."""

    ch: int
    dis: int
    soc: int
    imp: int
    exp: int
    short: int
    peak: int
    z: int
    y: int
    n_col: int
    departure_row: int
    cap_row: int
    site_row: int
    peak_row: int
    hull_row: int


@dataclass(frozen=True)
class RawSolution:
    """Solver output as arrays over the index, whatever the builder."""

    model_status: str
    optimal: bool
    infeasible: bool
    has_solution: bool
    objective_cost: float
    bound_cost: float
    mip_gap: float
    charge_kw: FloatArray
    discharge_kw: FloatArray
    soc_kwh: FloatArray
    import_kw: FloatArray
    export_kw: FloatArray
    shortfall_kwh: FloatArray
    build_s: float
    solve_s: float
    #: recoveries the solve took, e.g. ``("Unknown→cold",)`` (see :mod:`scheduler.highs`)
    recoveries: tuple[str, ...] = ()
    #: where the instance was written when no recovery gave an answer
    instance_path: str | None = None
    #: simplex iterations of the last run (what a warm start saves)
    iterations: int = 0
    #: an LP's optimal basis (None for a MILP or without an optimum)
    basis: LpBasis | None = None
    #: how the solve started: "basis" (the same model's), "values" (a plan's), "" (cold)
    warm: str = ""


def layout(idx: ModelIndex, n_binaries: int, n_site_binaries: int) -> Layout:
    soft = idx.shortfall_penalty_eur_kwh is not None
    ch = 0
    dis = ch + idx.n_p
    soc = dis + idx.n_d
    imp = soc + idx.n_d
    exp = imp + idx.n_t
    short = exp + idx.n_t
    peak = short + (idx.n_s if soft else 0)
    z = peak + idx.n_b
    y = z + n_binaries
    departure_row = idx.n_d
    cap_row = departure_row + idx.n_s
    site_row = cap_row + int(np.count_nonzero(idx.discharge_kw <= 0))
    peak_row = site_row + idx.n_t
    hull_row = peak_row + (idx.n_t if idx.n_b else 0)
    return Layout(
        ch, dis, soc, imp, exp, short, peak, z, y, y + n_site_binaries,
        departure_row=departure_row, cap_row=cap_row, site_row=site_row, peak_row=peak_row, hull_row=hull_row,
    )  # fmt: skip


class _Rows:
    """Accumulates rows as COO triplets with their bounds."""

    def __init__(self) -> None:
        self.rows: list[IntArray] = []
        self.cols: list[IntArray] = []
        self.vals: list[FloatArray] = []
        self.lower: list[FloatArray] = []
        self.upper: list[FloatArray] = []
        self.n = 0

    def add(
        self,
        n_rows: int,
        entries: list[tuple[Any, Any, Any]],
        lower: FloatArray | float,
        upper: FloatArray | float,
    ) -> None:
        for r, c, v in entries:
            self.rows.append(np.asarray(r, dtype=np.int64) + self.n)
            self.cols.append(np.asarray(c, dtype=np.int64))
            self.vals.append(np.broadcast_to(np.asarray(v, dtype=np.float64), np.shape(r)).copy())
        self.lower.append(np.broadcast_to(np.asarray(lower, dtype=np.float64), (n_rows,)).copy())
        self.upper.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (n_rows,)).copy())
        self.n += n_rows


def build_lp(
    idx: ModelIndex,
    binaries: IntArray,
    *,
    elastic_site: bool = False,
    site_binaries: IntArray | None = None,
) -> tuple[Lp, Layout]:
    """Build the model as an :class:`~scheduler.highs.Lp`.

    ``binaries``: indices into ``idx.v2g_pair`` that get a charging-mode binary.
    ``elastic_site``: drop the site limits' bounds and price any excess, for
    diagnosing an infeasible site (see :func:`scheduler.solve.solve`).
    ``site_binaries``: intervals with an import/export binary (default: where sell > buy).
    """
    if site_binaries is not None:
        site_bin = np.asarray(site_binaries, dtype=np.int64)
    else:
        site_bin = np.zeros(0, np.int64) if elastic_site else idx.site_binary_intervals()
    lay = layout(idx, len(binaries), len(site_bin))
    n_p, n_d, n_t, n_s = idx.n_p, idx.n_d, idx.n_t, idx.n_s
    dt = idx.dt_h
    p_all = np.arange(n_p)
    k_all = np.arange(n_d)
    s_of_p = idx.pair_session
    s_of_k = s_of_p[idx.v2g_pair]
    soft = idx.shortfall_penalty_eur_kwh is not None

    # --- columns: bounds and cost ------------------------------------------------
    lower = np.zeros(lay.n_col)
    upper = np.zeros(lay.n_col)
    cost = np.zeros(lay.n_col)
    pch_p = idx.pair_charge_kw
    pdis_k = idx.v2g_discharge_kw
    upper[lay.ch : lay.dis] = pch_p
    upper[lay.dis : lay.soc] = pdis_k
    lower[lay.soc : lay.imp] = idx.soc_lo_kwh[s_of_k]
    upper[lay.soc : lay.imp] = idx.soc_hi_kwh[s_of_k]
    upper[lay.imp : lay.exp] = INF if elastic_site else idx.import_limit_kw
    upper[lay.exp : lay.short] = INF if elastic_site else idx.export_limit_kw
    worn_from = lay.ch if idx.degradation_basis == "throughput" else lay.dis
    cost[worn_from : lay.soc] = idx.degradation_eur_kwh * dt
    cost[lay.imp : lay.exp] = idx.buy_eur_mwh * dt / 1000.0
    cost[lay.exp : lay.short] = -idx.sell_eur_mwh * dt / 1000.0
    if soft:
        upper[lay.short : lay.peak] = np.maximum(idx.target_kwh - idx.soc_lo_kwh, 0.0)
        cost[lay.short : lay.peak] = float(idx.shortfall_penalty_eur_kwh or 0.0)
    # peak_import_kw[b]: from the peak so far up to the highest import limit of the period
    n_b = idx.n_b
    offset = 0.0
    if n_b:
        top = np.zeros(n_b)
        np.maximum.at(top, idx.peak_period, idx.import_limit_kw)
        lower[lay.peak : lay.z] = idx.peak_so_far_kw
        upper[lay.peak : lay.z] = INF if elastic_site else np.maximum(top, idx.peak_so_far_kw)
        cost[lay.peak : lay.z] = idx.peak_eur_per_kw
        offset = -float(np.dot(idx.peak_eur_per_kw, idx.peak_so_far_kw))  # pay only for raising it
    upper[lay.z : lay.n_col] = 1.0

    rows = _Rows()
    # soc_balance (V2G sessions): soc[k] − soc[k−1] − η_c·Δt·ch[p(k)] + Δt/η_d·dis[k] = e0 (first) | 0
    v2g_p = idx.v2g_pair
    first_k = idx.pair_is_first[v2g_p]
    not_first = np.flatnonzero(~first_k)
    rhs = np.where(first_k, idx.arrival_kwh[s_of_k], 0.0)
    rows.add(
        n_d,
        [
            (k_all, lay.soc + k_all, 1.0),
            (not_first, lay.soc + not_first - 1, -1.0),
            (k_all, lay.ch + v2g_p, -idx.eta_charge[s_of_k] * dt),
            (k_all, lay.dis + k_all, dt / idx.eta_discharge[s_of_k]),
        ],
        rhs,
        rhs,
    )
    assert rows.n == lay.departure_row
    # departure: soc[last] + shortfall[s] ≥ target (V2G sessions);
    #            η_c·Δt·Σ_p ch[p] + shortfall[s] ≥ target − e0 (sessions that cannot discharge)
    s_all = np.arange(n_s)
    can_discharge = idx.discharge_kw > 0
    k_of_p = idx.v2g_of_pair
    v2g_s = np.flatnonzero(can_discharge)
    only_p = np.flatnonzero(~can_discharge[s_of_p])
    entries = [
        (v2g_s, lay.soc + k_of_p[idx.last_pair[v2g_s]], 1.0),
        (s_of_p[only_p], lay.ch + only_p, idx.eta_charge[s_of_p[only_p]] * dt),
    ]
    if soft:
        entries.append((s_all, lay.short + s_all, 1.0))
    rows.add(n_s, entries, np.where(can_discharge, idx.target_kwh, idx.target_kwh - idx.arrival_kwh), INF)
    assert rows.n == lay.cap_row
    # cap (sessions that cannot discharge): η_c·Δt·Σ_p ch[p] ≤ e_max − e0
    only_s = np.flatnonzero(~can_discharge)
    row_of_s = np.full(n_s, -1, dtype=np.int64)
    row_of_s[only_s] = np.arange(len(only_s))
    rows.add(
        len(only_s),
        [(row_of_s[s_of_p[only_p]], lay.ch + only_p, idx.eta_charge[s_of_p[only_p]] * dt)],
        -INF,
        idx.soc_hi_kwh[only_s] - idx.arrival_kwh[only_s],
    )
    assert rows.n == lay.site_row
    # site balance: import − export − Σ ch + Σ dis = base − pv
    t_all = np.arange(n_t)
    rows.add(
        n_t,
        [
            (t_all, lay.imp + t_all, 1.0),
            (t_all, lay.exp + t_all, -1.0),
            (idx.pair_t, lay.ch + p_all, -1.0),
            (idx.pair_t[v2g_p], lay.dis + k_all, 1.0),
        ],
        idx.fixed_load_kw,
        idx.fixed_load_kw,
    )
    assert rows.n == lay.peak_row
    # peak: grid_import[t] − peak_import[b(t)] ≤ 0
    if n_b:
        rows.add(n_t, [(t_all, lay.imp + t_all, 1.0), (t_all, lay.peak + idx.peak_period, -1.0)], -INF, 0.0)
    assert rows.n == lay.hull_row
    # exclusivity hull: ch/P_ch + dis/P_dis ≤ 1 (convex hull of the binary disjunction)
    rows.add(
        n_d,
        [
            (k_all, lay.ch + v2g_p, 1.0 / pch_p[v2g_p]),
            (k_all, lay.dis + k_all, 1.0 / pdis_k),
        ],
        -INF,
        1.0,
    )
    # binaries: ch ≤ P_ch·z ; dis ≤ P_dis·(1 − z)
    n_z = len(binaries)
    z_all = np.arange(n_z)
    if n_z:
        pch = pch_p[v2g_p[binaries]]
        pdis = pdis_k[binaries]
        rows.add(n_z, [(z_all, lay.ch + v2g_p[binaries], 1.0), (z_all, lay.z + z_all, -pch)], -INF, 0.0)
        rows.add(n_z, [(z_all, lay.dis + binaries, 1.0), (z_all, lay.z + z_all, pdis)], -INF, pdis)
    n_y = len(site_bin)
    if n_y:
        y_all = np.arange(n_y)
        rows.add(
            n_y,
            [(y_all, lay.imp + site_bin, 1.0), (y_all, lay.y + y_all, -idx.import_limit_kw[site_bin])],
            -INF,
            0.0,
        )
        rows.add(
            n_y,
            [(y_all, lay.exp + site_bin, 1.0), (y_all, lay.y + y_all, idx.export_limit_kw[site_bin])],
            -INF,
            idx.export_limit_kw[site_bin],
        )

    n_col = lay.n_col
    if elastic_site:
        # excess_import[t], excess_export[t] priced far above any energy value
        penalty = 1e6
        lower = np.concatenate([lower, np.zeros(2 * n_t)])
        upper = np.concatenate([upper, np.full(2 * n_t, INF)])
        cost = np.concatenate([cost, np.full(2 * n_t, penalty)])
        rows.add(
            n_t, [(t_all, lay.imp + t_all, 1.0), (t_all, n_col + t_all, -1.0)], -INF, idx.import_limit_kw
        )
        rows.add(
            n_t,
            [(t_all, lay.exp + t_all, 1.0), (t_all, n_col + n_t + t_all, -1.0)],
            -INF,
            idx.export_limit_kw,
        )
        n_col += 2 * n_t

    r = np.concatenate(rows.rows)
    c = np.concatenate(rows.cols)
    v = np.concatenate(rows.vals)
    order = np.lexsort((r, c))
    r, c, v = r[order], c[order], v[order]
    start = np.searchsorted(c, np.arange(n_col + 1))

    lp = Lp.colwise(
        cost, lower, upper, np.concatenate(rows.lower), np.concatenate(rows.upper), start, r, v, offset
    )
    return lp, lay


def pair_soc(idx: ModelIndex, charge_kw: FloatArray, v2g_soc_kwh: FloatArray) -> FloatArray:
    """SoC at the end of every pair: the V2G pairs' SoC columns, and for sessions that cannot
    discharge, the arrival energy plus what they have charged so far."""
    soc = idx.soc_from_flows(charge_kw, np.zeros(idx.n_d))
    soc[idx.v2g_pair] = v2g_soc_kwh
    return soc


#: HiGHS's basis statuses by their number
_STATUS = [highspy.HighsBasisStatus(i) for i in range(5)]
_LOWER, _BASIC, _UPPER, _ZERO = (int(s) for s in _STATUS[:4])


@dataclass(frozen=True, eq=False)
class LpBasis:
    """An LP's optimal basis and the model it is a basis of: a model with the same pairs and rows starts
    from it exactly (no iteration when nothing else changed, and the same vertex: an unchanged site's plan
    does not move to another of its equal optima); another model of the same site (a boundary later, a car
    more or fewer) from its statuses carried over (:func:`mapped_basis`)."""

    basis: highspy.HighsBasis
    session_ids: tuple[str, ...]
    pair_session: IntArray
    pair_t: IntArray
    v2g_pair: IntArray
    n_col: int
    n_row: int
    layout: Layout
    n_t: int
    #: each session's: whether it may discharge (its pairs have SoC columns, it has no cap row)
    can_discharge: np.ndarray
    #: the columns' and rows' statuses as numbers (int8), for a basis carried over and a pickled one
    statuses: tuple[np.ndarray, np.ndarray]

    @classmethod
    def of(
        cls, h: highspy.Highs, idx: ModelIndex, lay: Layout, lp: Lp, solution: highspy.HighsSolution
    ) -> LpBasis | None:
        """``h``'s optimal basis (None without a valid one): HiGHS's own object (set again as it is), and
        its statuses as numbers from the basic variables and the bound each other one sits at (HiGHS's
        lists of statuses are built one Python object an entry: 4 ms of a 100-car site's 16 ms re-plan,
        0.5 ms this way)."""
        found, basic = h.getBasicVariables()  # type: ignore[attr-defined]  # not in highspy's stubs
        if found != highspy.HighsStatus.kOk or len(basic) != lp.num_row_:
            return None
        basic = np.asarray(basic, dtype=np.int64)
        col = _at_nearer_bound(np.asarray(solution.col_value), lp.col_lower_, lp.col_upper_)
        row = _at_nearer_bound(np.asarray(solution.row_value), lp.row_lower_, lp.row_upper_)
        col[basic[basic >= 0]] = _BASIC
        row[-1 - basic[basic < 0]] = _BASIC
        return cls(
            h.getBasis(), idx.session_ids, idx.pair_session, idx.pair_t, idx.v2g_pair, lay.n_col,
            lp.num_row_, lay, idx.n_t, idx.discharge_kw > 0, (col, row),
        )  # fmt: skip

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # HiGHS's basis does not pickle (a schedule sent between processes, deep-copied): its statuses do
        fields = (
            self.session_ids, self.pair_session, self.pair_t, self.v2g_pair, self.n_col, self.n_row,
            self.layout, self.n_t, self.can_discharge, self.statuses,
        )  # fmt: skip
        return (_basis_of, fields)

    def fits(self, idx: ModelIndex, n_col: int, n_row: int) -> bool:
        return (
            self.n_col == n_col
            and self.n_row == n_row
            and self.session_ids == idx.session_ids
            and np.array_equal(self.pair_session, idx.pair_session)
            and np.array_equal(self.pair_t, idx.pair_t)
            and np.array_equal(self.v2g_pair, idx.v2g_pair)
        )


def _highs_basis(col: np.ndarray, row: np.ndarray) -> highspy.HighsBasis:
    basis = highspy.HighsBasis()
    basis.col_status = [_STATUS[v] for v in col.tolist()]
    basis.row_status = [_STATUS[v] for v in row.tolist()]
    basis.valid = True
    return basis


def _basis_of(*fields: Any) -> LpBasis:
    return LpBasis(_highs_basis(*fields[-1]), *fields)


def _at_nearer_bound(value: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The status of a nonbasic variable at ``value``: at the bound it is nearer, zero without one."""
    status = np.where(np.abs(value - lower) <= np.abs(upper - value), _LOWER, _UPPER).astype(np.int8)
    return _at_a_bound_it_has(status, lower, upper)


def _at_a_bound_it_has(status: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``status`` with each nonbasic variable at a bound it has: the other one, or zero when it has none."""
    lo, up = np.isfinite(lower), np.isfinite(upper)
    at_lower, at_upper = status == _LOWER, status == _UPPER
    status[at_lower & ~lo] = np.where(up[at_lower & ~lo], _UPPER, _ZERO)
    status[at_upper & ~up] = np.where(lo[at_upper & ~up], _LOWER, _ZERO)
    return status


def session_rows(before: tuple[str, ...], now: tuple[str, ...]) -> IntArray:
    """For each session of ``now``, its row in ``before`` (matched by id); −1 for a session it had not."""
    row_of = {sid: i for i, sid in enumerate(before)}
    return np.fromiter((row_of.get(sid, -1) for sid in now), np.int64, len(now))


def mapped_basis(old: LpBasis, idx: ModelIndex, lay: Layout, lp: Lp, shift: int) -> highspy.HighsBasis:
    """``old``'s statuses carried over to another model of the same site: interval ``t`` here is
    ``t + shift`` there, sessions are matched by id. A column ``old`` does not have starts at its lower
    bound, a row it does not have is basic. Its count of basic variables may be off (the first interval
    dropped, a car gone): HiGHS completes it (an alien basis).

    When the cars did what the old plan said, the old vertex without its first interval is optimal for the
    later model and this basis is primal feasible: the primal simplex ends in a few iterations, where a
    start from the plan's values takes a fifth of a cold solve's iterations (half its time)."""
    col_old, row_old = old.statuses
    was = old.layout
    s_old = session_rows(old.session_ids, idx.session_ids)
    grid = np.full((len(old.session_ids), old.n_t), -1, np.int64)
    grid[old.pair_session, old.pair_t] = np.arange(len(old.pair_session))
    ps, pt = s_old[idx.pair_session], idx.pair_t + shift
    known = (ps >= 0) & (pt >= 0) & (pt < old.n_t)
    p_old = np.full(idx.n_p, -1, np.int64)
    p_old[known] = grid[ps[known], pt[known]]
    k_of = np.full(len(old.pair_session) + 1, -1, np.int64)  # [-1]: a pair the old model has not
    k_of[old.v2g_pair] = np.arange(len(old.v2g_pair))
    k_old = k_of[p_old[idx.v2g_pair]]
    t_old = np.arange(idx.n_t) + shift
    t_old[(t_old < 0) | (t_old >= old.n_t)] = -1
    cap_of = np.full(len(old.session_ids) + 1, -1, np.int64)  # [-1]: a session the old model has not
    only_old = np.flatnonzero(~old.can_discharge)
    cap_of[only_old] = np.arange(len(only_old))
    cap_old = cap_of[s_old[idx.discharge_kw <= 0]]

    col = np.full(lay.n_col, _LOWER, np.int8)
    row = np.full(lp.num_row_, _BASIC, np.int8)

    def carry(to: np.ndarray, at: int, source: np.ndarray, source_at: int, old_index: IntArray) -> None:
        known = old_index >= 0
        to[at : at + len(old_index)][known] = source[source_at + old_index[known]]

    carry(col, lay.ch, col_old, was.ch, p_old)
    carry(col, lay.dis, col_old, was.dis, k_old)
    carry(col, lay.soc, col_old, was.soc, k_old)
    carry(col, lay.imp, col_old, was.imp, t_old)
    carry(col, lay.exp, col_old, was.exp, t_old)
    if lay.peak > lay.short and was.peak > was.short:
        carry(col, lay.short, col_old, was.short, s_old)
    if lay.z - lay.peak == was.z - was.peak:  # the same billing periods
        col[lay.peak : lay.z] = col_old[was.peak : was.z]
    carry(row, 0, row_old, 0, k_old)
    carry(row, lay.departure_row, row_old, was.departure_row, s_old)
    carry(row, lay.cap_row, row_old, was.cap_row, cap_old)
    carry(row, lay.site_row, row_old, was.site_row, t_old)
    if lay.hull_row > lay.peak_row and was.hull_row > was.peak_row:
        carry(row, lay.peak_row, row_old, was.peak_row, t_old)
    carry(row, lay.hull_row, row_old, was.hull_row, k_old)
    basis = _highs_basis(
        _at_a_bound_it_has(col, lp.col_lower_, lp.col_upper_),
        _at_a_bound_it_has(row, lp.row_lower_, lp.row_upper_),
    )
    basis.alien = True
    return basis


@dataclass(frozen=True)
class WarmStart:
    """A plan to start the solver from: interval ``t`` of the problem being solved is interval
    ``t + shift`` of ``plan``'s, sessions are matched by id. What the plan does not cover (a session
    it did not have, an interval past its horizon) starts at zero."""

    plan: Schedule
    shift: int


def start_values(idx: ModelIndex, lay: Layout, start: WarmStart) -> FloatArray:
    """The model's columns (without binaries) filled from ``start``'s plan."""
    plan = start.plan
    x = np.zeros(lay.z)
    s_prev = session_rows(plan.session_ids, idx.session_ids)
    t_prev = np.arange(idx.n_t) + start.shift
    t_prev[(t_prev < 0) | (t_prev >= len(plan.timestamps))] = -1
    ps, pt = s_prev[idx.pair_session], t_prev[idx.pair_t]
    known = (ps >= 0) & (pt >= 0)
    charge = np.zeros(len(ps))
    charge[known] = plan.charge_kw[ps[known], pt[known]]
    x[lay.ch : lay.dis] = charge
    k = idx.v2g_pair
    known_k = known[k]
    for offset, array in ((lay.dis, plan.discharge_kw), (lay.soc, plan.soc_kwh)):
        values = np.zeros(len(k))
        values[known_k] = array[ps[k][known_k], pt[k][known_k]]
        x[offset : offset + len(k)] = np.nan_to_num(values)
    known_t = t_prev >= 0
    x[lay.imp : lay.exp][known_t] = plan.import_kw[t_prev[known_t]]
    x[lay.exp : lay.short][known_t] = plan.export_kw[t_prev[known_t]]
    if lay.peak > lay.short:
        known_s = s_prev >= 0
        x[lay.short : lay.peak][known_s] = plan.shortfall_kwh[s_prev[known_s]]
    if lay.z > lay.peak:  # each billing period's peak: the highest import the start has in it
        peak = idx.peak_so_far_kw.copy()
        np.maximum.at(peak, idx.peak_period, x[lay.imp : lay.exp])
        x[lay.peak : lay.z] = peak
    return x


#: how far a car may be from its plan's energy and still count as having done what it was asked (kWh)
AS_PLANNED_KWH = 0.5
#: the share of cars that may be farther, for a basis carried over to be about primal feasible
AS_PLANNED_SHARE = 0.1


def as_planned(idx: ModelIndex, start: WarmStart) -> bool:
    """Whether the cars plugged in now did about what ``start``'s plan had them do until now: the same
    cars (none new), a boundary or more later, and at most :data:`AS_PLANNED_SHARE` of them more than
    :data:`AS_PLANNED_KWH` from the energy the plan gave them by now. Then the last vertex without its
    past intervals is about this model's optimum: the primal simplex from it takes a few iterations (the
    dual simplex hundreds); a car far behind its plan or a new one takes the dual simplex fewer."""
    plan = start.plan
    if start.shift < 1 or start.shift > len(plan.timestamps):
        return False
    s_old = session_rows(plan.session_ids, idx.session_ids)
    if np.any(s_old < 0):
        return False
    here = np.flatnonzero(idx.pair_t[idx.first_pair] == 0)  # plugged in now (not expected later)
    if len(here) == 0:
        return True
    rows = s_old[here]
    planned = plan.soc_kwh[rows, start.shift - 1]
    off = ~(np.abs(idx.arrival_kwh[here] - planned) <= AS_PLANNED_KWH)  # NaN (not plugged in then): off
    return bool(np.count_nonzero(off) <= AS_PLANNED_SHARE * len(here))


def solve_matrix(
    idx: ModelIndex,
    binaries: IntArray,
    *,
    mip_gap: float,
    time_limit: float | None,
    threads: int | None = None,
    elastic_site: bool = False,
    what: str = "schedule",
    start: WarmStart | None = None,
) -> RawSolution:
    """Build and solve with highspy (through the recovery chain of :mod:`scheduler.highs`); return the
    arrays whatever the status. ``what`` names the instance in logs and in a written reproduction.
    ``start`` (an LP's only): a plan the simplex starts from, e.g. the last re-plan's."""
    started = time.perf_counter()
    lp, lay = build_lp(idx, binaries, elastic_site=elastic_site)
    is_mip = lay.n_col > lay.z
    h = new_highs(mip_gap=mip_gap, time_limit=time_limit, threads=threads, presolve=is_mip)
    pass_model(h, lp)
    warm = ""
    if is_mip:
        integer = np.arange(lay.z, lay.n_col, dtype=np.int32)
        h.changeColsIntegrality(len(integer), integer, np.full(len(integer), 1, dtype=np.uint8))
    elif start is not None and not elastic_site:
        basis = start.plan.lp_basis
        if start.shift == 0 and basis is not None and basis.fits(idx, lay.n_col, lp.num_row_):
            # the same model with other numbers (the same cars and intervals): its last basis
            taken, warm = h.setBasis(basis.basis), "basis"
        elif basis is not None:
            # another model of the same cars (a boundary later, a car more or fewer): the last basis
            # carried over; the primal simplex when the cars did about as planned (it is about primal
            # feasible), else the dual
            if as_planned(idx, start):
                h.setOptionValue("simplex_strategy", 4)
            taken, warm = h.setBasis(mapped_basis(basis, idx, lay, lp, start.shift)), "mapped"
        else:
            # a plan without a basis (a MILP's): HiGHS builds one from its values
            solution = highspy.HighsSolution()
            solution.col_value = start_values(idx, lay, start)
            solution.value_valid = True
            taken, warm = h.setSolution(solution), "values"
        if taken != highspy.HighsStatus.kOk:
            logger.info("%s: HiGHS did not take the start's %s (%s): solved cold", what, warm, taken)
            h.setOptionValue("simplex_strategy", 1)  # cold: the dual simplex, as without a start
            warm = ""
    built = time.perf_counter()
    run = run_with_recovery(h, what)
    solved = time.perf_counter()
    status = run.status
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    answered = status in (
        highspy.HighsModelStatus.kOptimal,
        highspy.HighsModelStatus.kInfeasible,
        highspy.HighsModelStatus.kUnboundedOrInfeasible,
    )
    # a solution is read only from an optimum or from a MILP stopped at a limit with an incumbent
    has_solution = has_solution and (answered or is_mip)
    instance = None
    if not answered and not has_solution:
        sizes = {"columns": lay.n_col, "rows": lp.num_row_, "sessions": idx.n_s, "intervals": idx.n_t}
        written = write_instance(h, what, {"status": status_name(h), "recoveries": run.recoveries, **sizes})
        instance = str(written) if written else None
    solution = h.getSolution()
    values = np.asarray(solution.col_value, dtype=np.float64) if has_solution else np.zeros(lay.n_col)
    gap = float(info.mip_gap) if is_mip else 0.0
    bound = float(info.mip_dual_bound) if is_mip else float(info.objective_function_value)
    logger.debug(
        "highspy %s in %.2fs (build %.2fs)", h.modelStatusToString(status), solved - built, built - started
    )
    return RawSolution(
        model_status=h.modelStatusToString(status),
        optimal=status == highspy.HighsModelStatus.kOptimal,
        # every column is bounded, so "unbounded or infeasible" can only be infeasible
        infeasible=status
        in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible),
        has_solution=has_solution,
        objective_cost=float(info.objective_function_value),
        bound_cost=bound,
        mip_gap=gap,
        charge_kw=values[lay.ch : lay.dis],
        discharge_kw=values[lay.dis : lay.soc],
        soc_kwh=pair_soc(idx, values[lay.ch : lay.dis], values[lay.soc : lay.imp]),
        import_kw=values[lay.imp : lay.exp],
        export_kw=values[lay.exp : lay.short],
        shortfall_kwh=values[lay.short : lay.peak] if lay.peak > lay.short else np.zeros(idx.n_s),
        build_s=built - started,
        solve_s=solved - built,
        recoveries=tuple(run.recoveries),
        instance_path=instance,
        iterations=int(info.simplex_iteration_count),
        basis=LpBasis.of(h, idx, lay, lp, solution)
        if not is_mip and status == highspy.HighsModelStatus.kOptimal and not elastic_site
        else None,
        warm=warm if not run.recoveries else "",
    )
