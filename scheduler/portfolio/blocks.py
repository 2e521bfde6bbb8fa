"""One block of a portfolio (a set of sites solved as one LP) as sparse matrices for highspy.

Columns: charge_kw[p] for every session-interval pair ``p`` the session is plugged in, then
discharge_kw[k] and soc_kwh[k] for the pairs ``k`` of sessions that can discharge (V2G). The
portfolio is priced as one day-ahead position (one price per interval for what it buys and sells),
so a site's grid import and export need no columns of their own: a site's net power is
Σ charge − Σ discharge + base load − PV, and its limits are rows on that sum.

Rows:
- V2G SoC balance: soc[k] − soc[k−1] − η_c·Δt·ch[k] + Δt/η_d·dis[k] = e0 (first pair) | 0;
- departure: soc[last] ≥ target (V2G), η_c·Δt·Σ ch ≥ target − e0 (charge only);
- battery cap (charge only, whose SoC only rises): η_c·Δt·Σ ch ≤ e_max − e0;
- exclusivity hull (V2G): ch/P_ch + dis/P_dis ≤ 1;
- site limits, and the limits of every grid node whose sites all lie in this block, each only in the
  intervals where the EVs under it could reach it (a row that cannot bind changes nothing);
- (recovery only) one equality row per coupling row and interval: the block's share of it.

Coupling rows (a grid node whose sites lie in several blocks, the portfolio's import cap) are not in
the block: :mod:`scheduler.portfolio.coordinate` prices them. Their price enters the costs as
``adjust_kw[p]`` per kW of net charge. The objective is a cost to minimise (EUR).

Simultaneous charge and discharge of one vehicle can pay only below the price −θ
(θ = c_deg·(1 + η_c·η_d)/(1 − η_c·η_d)); the hull allows it there and :attr:`BlockSolution.simultaneous`
counts it (the single-site MILP adds binaries in those intervals; a portfolio day below −θ is
reported, not hidden).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from scheduler.errors import InfeasibleScheduleError, SolverFailedError
from scheduler.highs import Lp, new_highs, pass_model, run_with_recovery, status_name

INF = highspy.kHighsInf


#: In phase 1, the weight of the true cost beside the violation prices (ties go to the cheaper plan).
PHASE1_COST_WEIGHT = 1e-3


class PortfolioLimitInfeasibleError(InfeasibleScheduleError):
    """No schedule of the portfolio meets every site, grid-node and portfolio limit with every target met."""


@dataclass(frozen=True)
class BlockData:
    """Everything a worker needs to build one block (numpy arrays only: cheap to send once)."""

    block: int
    dt_h: float
    n_t: int
    price_eur_mwh: np.ndarray  # (n_t,)
    degradation_eur_kwh: float
    # sessions with at least one plugged interval
    session_row: np.ndarray  # row in the portfolio's sessions table
    session_site: np.ndarray  # local site index
    first_t: np.ndarray
    n_plugged: np.ndarray
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    lo_kwh: np.ndarray
    hi_kwh: np.ndarray
    e0_kwh: np.ndarray
    target_kwh: np.ndarray
    # sites of the block that have sessions
    site_import_kw: np.ndarray  # (n_site,)
    site_export_kw: np.ndarray
    # base load − PV per site and interval = base_kw × shape[kind] − pv_kwp × capacity factor
    site_base_kw: np.ndarray
    site_pv_kwp: np.ndarray
    site_kind: np.ndarray  # index into load_shapes
    load_shapes: np.ndarray  # (kinds, n_t), mean 1
    pv_factor: np.ndarray  # (n_t,)
    # grid nodes whose sites all lie in this block: limits and constants over their whole subtree
    node_import_kw: np.ndarray  # (n_node, n_t), DR events applied
    node_export_kw: np.ndarray
    node_fixed_kw: np.ndarray
    site_node: tuple[np.ndarray, np.ndarray]  # (site, local node) incidence: the node is above the site
    # coupling rows this block takes part in (global ids), and which of its sites each covers
    coupling_rows: np.ndarray
    site_coupling: tuple[np.ndarray, np.ndarray]  # (site, local coupling index)

    @property
    def n_evs(self) -> int:
        return len(self.session_row)

    @property
    def site_fixed_kw(self) -> np.ndarray:
        return np.asarray(
            self.site_base_kw[:, None] * self.load_shapes[self.site_kind]
            - self.site_pv_kwp[:, None] * self.pv_factor[None, :]
        )


@dataclass(frozen=True)
class BlockAnswer:
    """A block's answer to one set of coupling prices: a column for the master problem."""

    block: int
    cost_eur: float  # at the true prices
    priced_eur: float  # at the prices adjusted by the coupling rows' duals (the pricing optimum)
    net_kw: np.ndarray  # (len(coupling_rows), n_t): the block's EV net power under each coupling row
    solve_s: float


@dataclass(frozen=True)
class BlockSolution:
    """The block's schedule: power per pair, and where each pair belongs."""

    block: int
    cost_eur: float
    session_row: np.ndarray  # per pair: the session's row in the portfolio
    t: np.ndarray  # per pair: interval
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    simultaneous: int  # pairs that charge and discharge at once (only pays below −θ)
    solve_s: float


class BlockModel:
    """The block's LP, kept in memory on the worker that built it and re-solved warm as prices change."""

    def __init__(self, data: BlockData) -> None:
        started = time.perf_counter()
        self.data = data
        d = data
        dt = d.dt_h
        counts = d.n_plugged
        n_s = len(counts)
        first_pair = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        n_p = int(counts.sum())
        self.pair_session = np.repeat(np.arange(n_s, dtype=np.int64), counts)
        self.pair_t = (
            np.arange(n_p, dtype=np.int64) - np.repeat(first_pair, counts) + np.repeat(d.first_t, counts)
        )
        last_pair = first_pair + counts - 1
        v2g_s = d.discharge_kw > 0
        v2g_pair = np.flatnonzero(v2g_s[self.pair_session])
        n_d = len(v2g_pair)
        self.n_p, self.n_d, self.v2g_pair = n_p, n_d, v2g_pair
        k_of_p = np.full(n_p, -1, dtype=np.int64)
        k_of_p[v2g_pair] = np.arange(n_d)
        s_of_k = self.pair_session[v2g_pair]
        ch0, dis0, soc0 = 0, n_p, n_p + n_d
        n_col = n_p + 2 * n_d
        self.ch0, self.dis0 = ch0, dis0

        lower = np.zeros(n_col)
        upper = np.empty(n_col)
        upper[:n_p] = d.charge_kw[self.pair_session]
        upper[dis0:soc0] = d.discharge_kw[s_of_k]
        lower[soc0:] = d.lo_kwh[s_of_k]
        upper[soc0:] = d.hi_kwh[s_of_k]
        price = d.price_eur_mwh[self.pair_t] * dt / 1000.0
        self.base_cost = np.concatenate(
            [price + d.degradation_eur_kwh * dt, -price[v2g_pair] + d.degradation_eur_kwh * dt, np.zeros(n_d)]
        )

        rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        row_lo: list[np.ndarray] = []
        row_hi: list[np.ndarray] = []
        n_row = 0

        def add(
            n: int, entries: list[tuple[np.ndarray, np.ndarray, np.ndarray | float]], lo: object, hi: object
        ) -> None:
            nonlocal n_row
            for r, c, v in entries:
                r = np.asarray(r, dtype=np.int64)
                rows.append(
                    (
                        r + n_row,
                        np.asarray(c, dtype=np.int64),
                        np.broadcast_to(np.asarray(v, np.float64), r.shape),
                    )
                )
            row_lo.append(np.broadcast_to(np.asarray(lo, np.float64), (n,)))
            row_hi.append(np.broadcast_to(np.asarray(hi, np.float64), (n,)))
            n_row += n

        k_all = np.arange(n_d)
        first_k = np.zeros(n_d, dtype=bool)
        first_k[k_of_p[first_pair[v2g_s & (counts > 0)]]] = True
        not_first = np.flatnonzero(~first_k)
        rhs = np.where(first_k, d.e0_kwh[s_of_k], 0.0)
        add(
            n_d,
            [
                (k_all, soc0 + k_all, 1.0),
                (not_first, soc0 + not_first - 1, -1.0),
                (k_all, ch0 + v2g_pair, -d.eta_charge[s_of_k] * dt),
                (k_all, dis0 + k_all, dt / d.eta_discharge[s_of_k]),
            ],
            rhs,
            rhs,
        )
        v2g_sessions = np.flatnonzero(v2g_s)
        only = np.flatnonzero(~v2g_s)
        only_p = np.flatnonzero(~v2g_s[self.pair_session])
        row_of = np.full(n_s, -1, dtype=np.int64)
        row_of[v2g_sessions] = np.arange(len(v2g_sessions))
        row_of[only] = len(v2g_sessions) + np.arange(len(only))
        add(
            n_s,
            [
                (row_of[v2g_sessions], soc0 + k_of_p[last_pair[v2g_sessions]], 1.0),
                (
                    row_of[self.pair_session[only_p]],
                    ch0 + only_p,
                    d.eta_charge[self.pair_session[only_p]] * dt,
                ),
            ],
            np.concatenate([d.target_kwh[v2g_sessions], d.target_kwh[only] - d.e0_kwh[only]]),
            INF,
        )
        cap_row = np.full(n_s, -1, dtype=np.int64)
        cap_row[only] = np.arange(len(only))
        add(
            len(only),
            [
                (
                    cap_row[self.pair_session[only_p]],
                    ch0 + only_p,
                    d.eta_charge[self.pair_session[only_p]] * dt,
                )
            ],
            -INF,
            d.hi_kwh[only] - d.e0_kwh[only],
        )
        add(
            n_d,
            [(k_all, ch0 + v2g_pair, 1.0 / upper[v2g_pair]), (k_all, dis0 + k_all, 1.0 / upper[dis0:soc0])],
            -INF,
            1.0,
        )
        # site and internal-node limits, only where they can bind
        site_of_pair = d.session_site[self.pair_session]
        n_site = len(d.site_import_kw)
        fixed = d.site_fixed_kw
        self._limit_rows(
            add, site_of_pair, np.arange(n_site), np.arange(n_site), n_site,
            d.site_import_kw[:, None] - fixed, d.site_export_kw[:, None] + fixed, upper,
        )  # fmt: skip
        sites_of_node, nodes = d.site_node
        self._limit_rows(
            add, site_of_pair, sites_of_node, nodes, len(d.node_import_kw),
            d.node_import_kw - d.node_fixed_kw, d.node_export_kw + d.node_fixed_kw, upper,
        )  # fmt: skip

        r = np.concatenate([x[0] for x in rows]) if rows else np.zeros(0, np.int64)
        c = np.concatenate([x[1] for x in rows]) if rows else np.zeros(0, np.int64)
        v = np.concatenate([x[2] for x in rows]) if rows else np.zeros(0)
        order = np.lexsort((r, c))
        r, c, v = r[order], c[order], v[order]
        lp = Lp.colwise(
            self.base_cost,
            lower,
            upper,
            np.concatenate(row_lo) if row_lo else np.zeros(0),
            np.concatenate(row_hi) if row_hi else np.zeros(0),
            np.searchsorted(c, np.arange(n_col + 1)),
            r,
            v,
        )
        # an LP (a re-price starts from the last basis, which never presolves)
        self.h = new_highs(presolve=False)
        pass_model(self.h, lp)
        # coupling incidence per pair: which coupling rows each pair's power counts in
        sites_c, local_c = d.site_coupling
        self.coupling_pairs: list[np.ndarray] = []
        for j in range(len(d.coupling_rows)):
            covered = np.zeros(n_site, dtype=bool)
            covered[sites_c[local_c == j]] = True
            self.coupling_pairs.append(np.flatnonzero(covered[site_of_pair]))
        self.build_s = time.perf_counter() - started
        self.recovered = False

    def _limit_rows(
        self,
        add: object,
        site_of_pair: np.ndarray,
        inc_site: np.ndarray,
        inc_row: np.ndarray,
        n_rows: int,
        import_room: np.ndarray,
        export_room: np.ndarray,
        upper: np.ndarray,
    ) -> None:
        """Rows Σ_{pairs under row i at t} (ch − dis) ∈ [−export_room[i,t], import_room[i,t]] where the
        EVs under i could exceed either side at t (every pair of a site counts in each row above it)."""
        if n_rows == 0 or self.n_p == 0:
            return
        n_t = self.data.n_t
        # expand pairs to (row, pair) through the site → row incidence
        order = np.argsort(inc_site, kind="stable")
        inc_site, inc_row = inc_site[order], inc_row[order]
        starts = np.searchsorted(inc_site, np.arange(len(self.data.site_import_kw) + 1))
        per_pair = starts[site_of_pair + 1] - starts[site_of_pair]
        pair_idx = np.repeat(np.arange(self.n_p), per_pair)
        offs = np.arange(len(pair_idx)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
        row_idx = inc_row[starts[site_of_pair[pair_idx]] + offs]
        t_idx = self.pair_t[pair_idx]
        cell = row_idx * n_t + t_idx
        max_imp = np.bincount(cell, weights=upper[pair_idx], minlength=n_rows * n_t)
        dis_upper = np.zeros(self.n_p)
        dis_upper[self.v2g_pair] = upper[self.dis0 : self.dis0 + self.n_d]
        max_exp = np.bincount(cell, weights=dis_upper[pair_idx], minlength=n_rows * n_t)
        room_i = import_room.reshape(-1)
        room_e = export_room.reshape(-1)
        needed = (max_imp > room_i + 1e-9) | (max_exp > room_e + 1e-9)
        if not needed.any():
            return
        cells = np.flatnonzero(needed)
        local = np.full(n_rows * n_t, -1, dtype=np.int64)
        local[cells] = np.arange(len(cells))
        keep = local[cell] >= 0
        k_of_p = np.full(self.n_p, -1, dtype=np.int64)
        k_of_p[self.v2g_pair] = np.arange(self.n_d)
        r = local[cell[keep]]
        p = pair_idx[keep]
        entries = [(r, self.ch0 + p, np.ones(len(p)))]
        v2g = k_of_p[p] >= 0
        entries.append((r[v2g], self.dis0 + k_of_p[p[v2g]], -np.ones(int(v2g.sum()))))
        add(len(cells), entries, -room_e[cells], room_i[cells])  # type: ignore[operator]

    # --- solving ----------------------------------------------------------------------------------------

    def _run(self, what: str) -> None:
        result = run_with_recovery(self.h, f"portfolio block {self.data.block} {what}")
        if result.optimal:
            return
        if self.h.getModelStatus() == highspy.HighsModelStatus.kInfeasible:
            raise PortfolioLimitInfeasibleError(
                f"portfolio block {self.data.block} ({self.data.n_evs} EVs): no schedule meets every site "
                "and "
                "grid-node limit with every departure target met"
            )
        raise SolverFailedError(
            f"portfolio block {self.data.block} ({what}): HiGHS ended {status_name(self.h)}"
        )

    def _flows(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(self.h.getSolution().col_value)
        ch = x[: self.n_p]
        dis = np.zeros(self.n_p)
        dis[self.v2g_pair] = x[self.dis0 : self.dis0 + self.n_d]
        return ch, dis

    def net_kw(self, ch: np.ndarray, dis: np.ndarray) -> np.ndarray:
        return self._under_rows(ch - dis)

    def _under_rows(self, per_pair: np.ndarray) -> np.ndarray:
        """Per coupling row and interval, the sum of ``per_pair`` over the pairs under the row (kW)."""
        n_t = self.data.n_t
        out = np.zeros((len(self.coupling_pairs), n_t))
        for j, pairs in enumerate(self.coupling_pairs):
            out[j] = np.bincount(self.pair_t[pairs], weights=per_pair[pairs], minlength=n_t)
        return out

    def _coupling_rows(self, lower: np.ndarray, upper: np.ndarray) -> int:
        """Add rows lower[j,t] ≤ Σ_{pairs under j at t} (ch − dis) ≤ upper[j,t]; return how many."""
        n_t = self.data.n_t
        starts, index, value, lo, hi = [0], [], [], [], []
        k_of_p = np.full(self.n_p, -1, dtype=np.int64)
        k_of_p[self.v2g_pair] = np.arange(self.n_d)
        for j, pairs in enumerate(self.coupling_pairs):
            by_t = pairs[np.argsort(self.pair_t[pairs], kind="stable")]
            bounds = np.searchsorted(self.pair_t[by_t], np.arange(n_t + 1))
            for t in range(n_t):
                at = by_t[bounds[t] : bounds[t + 1]]
                if len(at) == 0:
                    continue
                k = k_of_p[at][k_of_p[at] >= 0]
                index.extend([*(self.ch0 + at), *(self.dis0 + k)])
                value.extend([1.0] * len(at) + [-1.0] * len(k))
                starts.append(len(index))
                lo.append(lower[j, t])
                hi.append(upper[j, t])
        if lo:
            self.h.addRows(
                len(lo), np.asarray(lo), np.asarray(hi), len(index), np.asarray(starts[:-1], np.int32),
                np.asarray(index, np.int32), np.asarray(value),
            )  # fmt: skip
        return len(lo)

    def price(self, duals: np.ndarray | None, *, phase1: bool = False) -> BlockAnswer:
        """Solve with each coupling row's dual (``duals[j, t]``, EUR per kW of the row) taken off the cost
        of the net power under it; return the column for the master problem. ``phase1``: the master
        still looks for any plan within the shared limits, so the duals price violations, not euros (the
        true cost only breaks ties)."""
        started = time.perf_counter()
        cost = self.base_cost * (PHASE1_COST_WEIGHT if phase1 else 1.0)
        if duals is not None:
            adjust = np.zeros(self.n_p)
            for j, pairs in enumerate(self.coupling_pairs):
                adjust[pairs] -= duals[j][self.pair_t[pairs]]
            cost[: self.n_p] += adjust
            cost[self.dis0 : self.dis0 + self.n_d] -= adjust[self.v2g_pair]
        self.h.changeColsCost(len(cost), np.arange(len(cost), dtype=np.int32), cost)
        self._run("pricing")
        ch, dis = self._flows()
        x = np.asarray(self.h.getSolution().col_value)
        return BlockAnswer(
            self.data.block,
            float(self.base_cost @ x),
            float(cost @ x),
            self.net_kw(ch, dis),
            time.perf_counter() - started,
        )

    def solve(self, lower: np.ndarray | None = None, upper: np.ndarray | None = None) -> BlockSolution:
        """The block's schedule at the true prices; with an allocation of the shared limits (``lower``,
        ``upper``: per coupling row and interval, :meth:`~scheduler.portfolio.coordinate.Master.
        allocations`), its net power under each coupling row within it (the allocations of all blocks
        sum within the limits, so their schedules together meet them)."""
        started = time.perf_counter()
        self.h.changeColsCost(
            len(self.base_cost), np.arange(len(self.base_cost), dtype=np.int32), self.base_cost
        )
        if lower is not None and upper is not None and len(self.coupling_pairs) and not self.recovered:
            self._coupling_rows(lower, upper)
            self.recovered = True
        self._run("schedule")
        ch, dis = self._flows()
        x = np.asarray(self.h.getSolution().col_value)
        return BlockSolution(
            self.data.block,
            float(self.base_cost @ x),
            self.data.session_row[self.pair_session],
            self.pair_t,
            ch,
            dis,
            int(np.count_nonzero((ch > 1e-6) & (dis > 1e-6))),
            time.perf_counter() - started,
        )

    def reach_kw(self) -> np.ndarray:
        """Per coupling row and interval: the most the block's EVs under it could import plus export
        (kW), the block's weight when the room left in a shared limit is shared out."""
        return self._under_rows((self.data.charge_kw + self.data.discharge_kw)[self.pair_session])


def solve_block_once(data: BlockData) -> BlockSolution:
    """Build, solve and drop a block that no coupling row touches (its optimum is final)."""
    return BlockModel(data).solve()
