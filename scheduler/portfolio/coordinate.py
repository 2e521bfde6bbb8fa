"""Schedule a portfolio on Dask: independent blocks solved exactly, shared limits coordinated by
Dantzig-Wolfe column generation, with the gap to a proven lower bound reported for every run.

Blocks. Sites are grouped bottom-up along the grid: a zone (or feeder) whose EVs fit in one block
stays whole, so its limit is an ordinary row of that block and is met exactly; a zone too big for one
block is split along its feeders (a feeder too big, along its sites), and the blocks are packed
first-fit decreasing to about ``max_evs_per_block`` EVs (smaller when needed to give every worker
several blocks). Blocks that no shared limit touches are solved once, in parallel, and are exact.

Coordination. The limits that span blocks (a split zone's, a split feeder's, the portfolio's import
cap), each only where it can bind, are the coupling rows. The master problem picks, per block, a convex
combination of the block schedules found so far (the columns) that meets the coupling rows at least
cost; elastic slacks at 100 EUR/kW keep it feasible while columns are few. The master's duals are the
prices of the coupling rows; each block re-solves with them (warm: the model stays on its worker and
only costs change) and offers a new column. Every round gives a Lagrangian lower bound
Σ_b min_b(c − yN) + Σ y·limit, valid for any duals, and once the slacks are zero the master's objective
is the cost of a feasible plan: the gap between the two is reported, and the loop stops at ``tol``.
The final schedule of each coupled block is its LP with its share of every coupling row fixed to the
master's combination, which that combination satisfies (the blocks are LPs, so a convex combination
of their schedules is one of their schedules): it meets every limit and costs at most the master's
price. Why this method: the coupling is few rows (a limit per interval) over many blocks, which is
where column generation converges in few rounds and proves its gap; ADMM would need a penalty tuned to
the data and gives no bound; Lagrangian prices alone give no feasible plan.

Data moves once: each block's arrays are scattered to one worker, the block's model is built there and
stays there; a round sends the duals (a few hundred numbers per block) and gets a column back.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np
import pandas as pd

from scheduler.highs import new_highs, run_with_recovery
from scheduler.portfolio.aggregate import Envelope, aggregate, block_envelopes
from scheduler.portfolio.blocks import (
    PHASE1_COST_WEIGHT,
    BlockAnswer,
    BlockData,
    BlockModel,
    BlockSolution,
    PortfolioLimitInfeasibleError,
    solve_block_once,
)
from scheduler.portfolio.model import (
    SITE_KINDS,
    Portfolio,
    SessionArrays,
    ancestors,
    base_load_shape,
    parent_index,
    pv_capacity_factor,
    session_arrays,
    subtree_sums,
)

logger = logging.getLogger(__name__)

#: Price of a kW of a coupling row's violation in the phase-2 master (far above any energy value).
SLACK_EUR_PER_KW = 100.0
#: Weight of the best-bound duals in the prices the blocks see (Wentges smoothing).
SMOOTHING = 0.5
#: A coupling row's import side closer to ``-inf`` than this is absent.
_NO_LIMIT = 1e15


@dataclass(frozen=True)
class CouplingRow:
    """A limit that spans blocks: ``lower[t] ≤ Σ EV net power under it ≤ upper[t]``."""

    name: str
    lower: np.ndarray
    upper: np.ndarray


@dataclass
class PortfolioResult:
    cost_eur: float
    lower_bound_eur: float
    gap: float  # (cost − lower bound) / max(|cost|, 1 EUR); 0 when nothing is coupled
    iterations: int
    blocks: int
    coupled_blocks: int
    coupling_rows: list[str]
    workers: int
    evs: int
    sites: int
    zones: int
    build_s: float
    solve_s: float
    total_s: float
    simultaneous_pairs: int
    schedule: list[BlockSolution] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "evs": self.evs,
            "sites": self.sites,
            "zones": self.zones,
            "blocks": self.blocks,
            "coupled_blocks": self.coupled_blocks,
            "coupling_rows": len(self.coupling_rows),
            "cost_eur": round(self.cost_eur, 2),
            "lower_bound_eur": round(self.lower_bound_eur, 2),
            "gap_to_bound": self.gap,
            "coordination_iterations": self.iterations,
            "build_s": round(self.build_s, 2),
            "solve_s": round(self.solve_s, 2),
            "total_s": round(self.total_s, 2),
            "workers": self.workers,
            "simultaneous_pairs": self.simultaneous_pairs,
        }

    def schedule_frame(self, portfolio: Portfolio) -> pd.DataFrame:
        """One row per session and interval plugged in: session, utc, charge_kw, discharge_kw."""
        if not self.schedule:
            return pd.DataFrame(columns=["session", "utc", "charge_kw", "discharge_kw"])
        rows = np.concatenate([b.session_row for b in self.schedule])
        t = np.concatenate([b.t for b in self.schedule])
        return pd.DataFrame(
            {
                "session": portfolio.sessions["session"].to_numpy()[rows],
                "utc": portfolio.horizon.timestamps[t],
                "charge_kw": np.concatenate([b.charge_kw for b in self.schedule]),
                "discharge_kw": np.concatenate([b.discharge_kw for b in self.schedule]),
            }
        )


# --- blocks ----------------------------------------------------------------------------------------------


def partition(
    portfolio: Portfolio, max_evs_per_block: int, target_evs: int | None = None
) -> list[np.ndarray]:
    """Site rows per block (sites with a session plugged in during the day). A grid node with at most
    ``max_evs_per_block`` EVs under it stays in one block (its limit is then exact, not coordinated); the
    pieces are packed first-fit decreasing into blocks of about ``target_evs`` (HiGHS solves small
    blocks faster per EV: on this machine 0.2 ms/EV at 250 EVs, 0.3 at 1,000, 0.54 at 5,000)."""
    plan = session_arrays(portfolio)
    site_row = portfolio.sites["site"].reset_index(drop=True)
    row_of_site = pd.Series(np.arange(len(site_row)), index=site_row.to_numpy())
    active = plan.n_plugged > 0
    evs_at = np.bincount(
        row_of_site.loc[portfolio.sessions["site"].to_numpy()[active]].to_numpy(), minlength=len(site_row)
    )
    nodes = portfolio.nodes
    node_row = {n: i for i, n in enumerate(nodes["node"])}
    site_node = portfolio.sites["node"].map(node_row).to_numpy()
    direct_evs = np.bincount(site_node, weights=evs_at, minlength=len(nodes))
    subtree = subtree_sums(nodes, direct_evs[:, None])[:, 0]
    parent = parent_index(nodes)
    children: list[list[int]] = [[] for _ in range(len(nodes))]
    for i, p in enumerate(parent):
        if p >= 0:
            children[p].append(i)
    with_evs = np.flatnonzero(evs_at > 0)
    sites_of_node: list[list[int]] = [[] for _ in range(len(nodes))]
    for s in with_evs:
        sites_of_node[site_node[s]].append(int(s))
    cap = max(1, int(max_evs_per_block))
    target = max(1, int(target_evs if target_evs is not None else cap))

    def subtree_sites(i: int) -> list[int]:
        out = list(sites_of_node[i])
        for c in children[i]:
            out.extend(subtree_sites(c))
        return out

    units: list[tuple[int, list[int]]] = []

    def split(i: int) -> None:
        if subtree[i] == 0:
            return
        if subtree[i] <= cap:
            units.append((int(subtree[i]), subtree_sites(i)))
            return
        for c in children[i]:
            split(c)
        chunk: list[int] = []
        count = 0
        for s in sites_of_node[i]:
            if count + evs_at[s] > cap and chunk:
                units.append((count, chunk))
                chunk, count = [], 0
            chunk.append(s)
            count += int(evs_at[s])
        if chunk:
            units.append((count, chunk))

    for top in np.flatnonzero(parent < 0):
        split(int(top))
    units.sort(key=lambda u: -u[0])
    bins: list[list[int]] = []
    loads: list[int] = []
    for count, sites in units:  # first-fit decreasing
        for b, load in enumerate(loads):
            if load + count <= target:
                bins[b].extend(sites)
                loads[b] += count
                break
        else:
            bins.append(list(sites))
            loads.append(count)
    return [np.asarray(sorted(b), dtype=np.int64) for b in bins]


def block_size(portfolio: Portfolio, workers: int, target_evs: int) -> int:
    """EVs per packed block: about ``target_evs``, and small enough for two blocks per worker."""
    active = int((session_arrays(portfolio).n_plugged > 0).sum())
    return max(1, min(target_evs, math.ceil(active / max(2 * workers, 1))))


@dataclass(frozen=True)
class _Layout:
    blocks: list[np.ndarray]
    block_of_site: np.ndarray  # −1: no EVs
    coupling: list[CouplingRow]
    coupling_nodes: list[int]  # node row per coupling row (−1: the portfolio cap)
    internal: list[list[int]]  # per block: node rows whose EV sites all lie in it (−1: the cap)
    # computed once for every block
    plan: SessionArrays
    site_of_session: np.ndarray
    sessions_of_block: list[np.ndarray]
    site_node: np.ndarray
    chains: list[list[int]]
    imp_lim: np.ndarray
    exp_lim: np.ndarray
    fixed: np.ndarray
    coupled: set[int]  # blocks some coupling row covers
    columns: dict[str, np.ndarray]  # session and site columns as arrays, taken once

    def evs(self, b: int) -> int:
        return len(self.sessions_of_block[b])


def _reach(portfolio: Portfolio, plan: SessionArrays, leaf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node and interval: the most the EVs under it could import and export (kW)."""
    s = portfolio.sessions
    n_t = portfolio.horizon.intervals
    imp = np.zeros((len(portfolio.nodes), n_t + 1))
    exp = np.zeros((len(portfolio.nodes), n_t + 1))
    stop = plan.first_t + plan.n_plugged
    for arr, power in (
        (imp, s["charge_kw"].to_numpy(np.float64)),
        (exp, s["discharge_kw"].to_numpy(np.float64)),
    ):
        np.add.at(arr, (leaf, plan.first_t), power)
        np.add.at(arr, (leaf, stop), -power)
    imp = np.cumsum(imp, axis=1)[:, :n_t]
    exp = np.cumsum(exp, axis=1)[:, :n_t]
    return subtree_sums(portfolio.nodes, imp), subtree_sums(portfolio.nodes, exp)


def layout(
    portfolio: Portfolio, max_evs_per_block: int, *, target_evs: int | None = None, monolithic: bool = False
) -> _Layout:
    n_sites = len(portfolio.sites)
    nodes = portfolio.nodes
    plan = session_arrays(portfolio)
    node_row = {n: i for i, n in enumerate(nodes["node"])}
    site_node = portfolio.sites["node"].map(node_row).to_numpy().astype(np.int64)
    row_of_site = pd.Series(np.arange(n_sites), index=portfolio.sites["site"].to_numpy())
    site_of_session = row_of_site.loc[portfolio.sessions["site"].to_numpy()].to_numpy().astype(np.int64)
    if monolithic:
        used = np.unique(site_of_session[plan.n_plugged > 0])
        blocks = [used.astype(np.int64)] if len(used) else []
    else:
        blocks = partition(portfolio, max_evs_per_block, target_evs)
    block_of_site = np.full(n_sites, -1, dtype=np.int64)
    for b, rows in enumerate(blocks):
        block_of_site[rows] = b
    session_block = np.where(plan.n_plugged > 0, block_of_site[site_of_session], -1)
    order = np.argsort(session_block, kind="stable")
    bounds = np.searchsorted(session_block[order], np.arange(len(blocks) + 1))
    sessions_of_block = [order[bounds[b] : bounds[b + 1]] for b in range(len(blocks))]
    # which blocks each node's EV sites lie in
    chains = ancestors(nodes)
    spans: list[set[int]] = [set() for _ in range(len(nodes))]
    leaf_blocks = pd.DataFrame({"leaf": site_node, "block": block_of_site})
    leaf_blocks = leaf_blocks[leaf_blocks["block"] >= 0].drop_duplicates()
    for leaf, block in leaf_blocks.itertuples(index=False):
        for i in chains[int(leaf)]:
            spans[i].add(int(block))
    imp_lim, exp_lim = portfolio.node_limits()
    fixed = portfolio.node_fixed_kw()
    reach_imp, reach_exp = _reach(portfolio, plan, site_node[site_of_session])
    for i in range(len(nodes)):  # limits that the base load and PV alone break beyond what EVs can offset
        if (
            (fixed[i] - reach_exp[i] > imp_lim[i] + 1e-9) | (-fixed[i] - reach_imp[i] > exp_lim[i] + 1e-9)
        ).any():
            raise PortfolioLimitInfeasibleError(
                f"grid node {nodes['node'].iloc[i]}: its base load and PV alone break its limits, more than "
                "its EVs could make up"
            )
    binds = ((reach_imp + fixed > imp_lim + 1e-9) | (reach_exp - fixed > exp_lim + 1e-9)).any(axis=1)
    internal: list[list[int]] = [[] for _ in blocks]
    coupling: list[CouplingRow] = []
    coupling_nodes: list[int] = []
    for i in range(len(nodes)):
        if not binds[i] or not spans[i]:
            continue  # a limit no EV can reach is a constant
        if len(spans[i]) == 1:
            internal[next(iter(spans[i]))].append(i)
        else:
            coupling.append(
                CouplingRow(f"node {nodes['node'].iloc[i]}", -exp_lim[i] - fixed[i], imp_lim[i] - fixed[i])
            )
            coupling_nodes.append(i)
    coupled: set[int] = set()
    for i in coupling_nodes:
        coupled |= spans[i]
    if portfolio.import_cap_kw is not None and blocks:
        cap = np.asarray(portfolio.import_cap_kw, dtype=np.float64)
        if len(blocks) == 1:
            internal[0].append(-1)  # the cap as one more row of the only block
        else:
            coupling.append(CouplingRow("portfolio import cap", np.full(len(cap), -_NO_LIMIT), cap))
            coupling_nodes.append(-1)
            coupled = set(range(len(blocks)))
    s, sites = portfolio.sessions, portfolio.sites
    columns = {
        name: s[name].to_numpy(np.float64)
        for name in ("charge_kw", "discharge_kw", "eta_charge", "eta_discharge")
    }
    for name in ("import_limit_kw", "export_limit_kw", "base_load_kw", "pv_kwp"):
        columns[f"site_{name}"] = sites[name].to_numpy(np.float64)
    columns["site_kind"] = pd.Categorical(sites["kind"].to_numpy(), categories=SITE_KINDS).codes.astype(
        np.int64
    )
    return _Layout(
        blocks, block_of_site, coupling, coupling_nodes, internal, plan, site_of_session, sessions_of_block,
        site_node, chains, imp_lim, exp_lim, fixed, coupled, columns,
    )  # fmt: skip


def block_data(portfolio: Portfolio, lay: _Layout, b: int) -> BlockData:
    """The arrays of block ``b`` (built on the client, sent once to the worker that keeps the block)."""
    plan = lay.plan
    h = portfolio.horizon
    n_t = h.intervals
    sites = lay.blocks[b]
    take = lay.sessions_of_block[b]
    col = lay.columns
    leaf = lay.site_node[sites]
    unique_leaves = np.unique(leaf)
    internal = lay.internal[b]
    local_node = {n: j for j, n in enumerate(internal)}
    inc_site: list[np.ndarray] = []
    inc_node: list[np.ndarray] = []
    for leaf_node in unique_leaves:
        members = np.flatnonzero(leaf == leaf_node)
        for i in lay.chains[int(leaf_node)]:
            if i in local_node:
                inc_site.append(members)
                inc_node.append(np.full(len(members), local_node[i]))
    n_in = len(internal)
    node_imp = np.zeros((n_in, n_t))
    node_exp = np.zeros((n_in, n_t))
    node_fix = np.zeros((n_in, n_t))
    for j, i in enumerate(internal):
        if i == -1:  # the portfolio cap on EV power: every site, no constant, no export side
            node_imp[j] = np.asarray(portfolio.import_cap_kw, dtype=np.float64)
            node_exp[j] = np.inf
            inc_site.append(np.arange(len(sites)))
            inc_node.append(np.full(len(sites), j))
        else:
            node_imp[j], node_exp[j], node_fix[j] = lay.imp_lim[i], lay.exp_lim[i], lay.fixed[i]
    mine: list[int] = []
    c_site: list[np.ndarray] = []
    c_local: list[np.ndarray] = []
    for r, i in enumerate(lay.coupling_nodes):
        if i == -1:
            members = np.arange(len(sites))
        else:
            hit = [x for x in unique_leaves if i in lay.chains[int(x)]]
            if not hit:
                continue
            members = np.flatnonzero(np.isin(leaf, hit))
        c_site.append(members)
        c_local.append(np.full(len(members), len(mine)))
        mine.append(r)

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    return BlockData(
        block=b,
        dt_h=h.dt_h,
        n_t=n_t,
        price_eur_mwh=np.asarray(portfolio.prices_eur_mwh, dtype=np.float64),
        degradation_eur_kwh=portfolio.degradation_eur_kwh,
        session_row=take,
        session_site=np.searchsorted(sites, lay.site_of_session[take]),  # the block's sites are sorted
        first_t=plan.first_t[take],
        n_plugged=plan.n_plugged[take],
        charge_kw=col["charge_kw"][take],
        discharge_kw=col["discharge_kw"][take],
        eta_charge=col["eta_charge"][take],
        eta_discharge=col["eta_discharge"][take],
        lo_kwh=plan.lo_kwh[take],
        hi_kwh=plan.hi_kwh[take],
        e0_kwh=plan.e0_kwh[take],
        target_kwh=plan.target_kwh[take],
        site_import_kw=col["site_import_limit_kw"][sites],
        site_export_kw=col["site_export_limit_kw"][sites],
        site_base_kw=col["site_base_load_kw"][sites],
        site_pv_kwp=col["site_pv_kwp"][sites],
        site_kind=col["site_kind"][sites],
        load_shapes=np.array([base_load_shape(k, h) for k in SITE_KINDS]),
        pv_factor=pv_capacity_factor(h),
        node_import_kw=node_imp,
        node_export_kw=node_exp,
        node_fixed_kw=node_fix,
        site_node=(cat(inc_site), cat(inc_node)),
        coupling_rows=np.asarray(mine, dtype=np.int64),
        site_coupling=(cat(c_site), cat(c_local)),
    )


# --- the master problem ------------------------------------------------------------------------------------


class Master:
    """min Σ cost·w + slack penalties; Σ_j w_bj = 1 per block; coupling rows over the columns' net power.

    One HiGHS model for the whole run: each round's columns are added to it and it is re-solved from the
    last basis (rebuilding it each round took a second per round at 100,000 EVs by the fortieth)."""

    def __init__(
        self, rows: list[CouplingRow], blocks: list[int], rows_of_block: dict[int, np.ndarray], n_t: int
    ):
        self.rows = rows
        self.blocks = blocks
        self.position = {b: i for i, b in enumerate(blocks)}
        self.rows_of_block = rows_of_block
        self.n_t = n_t
        self.columns: list[BlockAnswer] = []
        self.convexity_duals = np.zeros(len(blocks))
        self.phase1: bool | None = None
        n_cells = len(rows) * n_t
        lower = np.concatenate([np.ones(len(blocks)), np.concatenate([r.lower for r in rows])])
        upper = np.concatenate([np.ones(len(blocks)), np.concatenate([r.upper for r in rows])])
        lower = np.where(lower < -_NO_LIMIT / 10, -highspy.kHighsInf, lower)
        self.h = new_highs()
        self.h.addRows(len(lower), lower, upper, 0, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
        # the slacks: s⁺ takes import excess (−1 in its cell), s⁻ export excess (+1)
        cells = len(blocks) + np.tile(np.arange(n_cells), 2)
        self.h.addCols(
            2 * n_cells, np.zeros(2 * n_cells), np.zeros(2 * n_cells),
            np.full(2 * n_cells, highspy.kHighsInf), 2 * n_cells, np.arange(2 * n_cells, dtype=np.int32),
            cells.astype(np.int32), np.repeat([-1.0, 1.0], n_cells),
        )  # fmt: skip
        self.n_slacks = 2 * n_cells
        self.in_model = 0  # columns of ``self.columns`` already in the model

    def add(self, answer: BlockAnswer) -> None:
        self.columns.append(answer)

    def _costs(self, columns: list[BlockAnswer], phase1: bool) -> np.ndarray:
        return np.array([(PHASE1_COST_WEIGHT if phase1 else 1.0) * c.cost_eur for c in columns])

    def solve(self, *, phase1: bool = False) -> tuple[float, np.ndarray, np.ndarray, float]:
        """Objective, weight per column, duals (row, t) and total slack (kW). ``phase1``: minimise the
        violation of the shared limits only (the columns' costs break ties)."""
        n_r, n_t = len(self.rows), self.n_t
        fresh = self.columns[self.in_model :]
        if fresh:
            index: list[np.ndarray] = []
            value: list[np.ndarray] = []
            starts = [0]
            for c in fresh:
                rows = self.rows_of_block[c.block]
                cells = (rows[:, None] * n_t + np.arange(n_t)[None, :]).reshape(-1)
                vals = c.net_kw.reshape(-1)
                keep = vals != 0
                index.append(np.concatenate([[self.position[c.block]], len(self.blocks) + cells[keep]]))
                value.append(np.concatenate([[1.0], vals[keep]]))
                starts.append(starts[-1] + len(index[-1]))
            self.h.addCols(
                len(fresh), self._costs(fresh, phase1), np.zeros(len(fresh)),
                np.full(len(fresh), highspy.kHighsInf), starts[-1], np.asarray(starts[:-1], np.int32),
                np.concatenate(index).astype(np.int32), np.concatenate(value).astype(np.float64),
            )  # fmt: skip
            self.in_model = len(self.columns)
        if self.phase1 != phase1:  # every cost changes with the phase
            n_w = len(self.columns)
            cost = np.concatenate(
                [
                    np.full(self.n_slacks, 1.0 if phase1 else SLACK_EUR_PER_KW),
                    self._costs(self.columns, phase1),
                ]
            )
            self.h.changeColsCost(n_w + self.n_slacks, np.arange(n_w + self.n_slacks, dtype=np.int32), cost)
            self.phase1 = phase1
        if not run_with_recovery(self.h, "portfolio master problem").optimal:
            raise RuntimeError(
                f"master problem: HiGHS ended {self.h.modelStatusToString(self.h.getModelStatus())}"
            )
        solution = self.h.getSolution()
        x = np.asarray(solution.col_value)
        row_dual = np.asarray(solution.row_dual)
        self.convexity_duals = row_dual[: len(self.blocks)]
        duals = row_dual[len(self.blocks) :].reshape(n_r, n_t)
        objective = float(self.h.getInfo().objective_function_value)
        return objective, x[self.n_slacks :], duals, float(x[: self.n_slacks].sum())

    def reduced_cost(self, answer: BlockAnswer, duals: np.ndarray, *, phase1: bool = False) -> float:
        """The column's reduced cost at the master's duals (negative: it improves the master)."""
        rows = self.rows_of_block[answer.block]
        sigma = float(self.convexity_duals[self.position[answer.block]])
        cost = answer.cost_eur * (PHASE1_COST_WEIGHT if phase1 else 1.0)
        return cost - float(np.sum(duals[rows] * answer.net_kw)) - sigma

    def bound_terms(self, duals: np.ndarray) -> float:
        """Σ_rows,t max(y,0)·lower + min(y,0)·upper (a row without a lower side takes no positive dual)."""
        total = 0.0
        for r, row in enumerate(self.rows):
            y = duals[r]
            lower = np.where(row.lower < -_NO_LIMIT / 10, 0.0, row.lower)
            y_pos = np.where(row.lower < -_NO_LIMIT / 10, 0.0, np.maximum(y, 0.0))
            total += float(y_pos @ lower + np.minimum(y, 0.0) @ row.upper)
        return total

    def allocations(
        self, weights: np.ndarray, reach: dict[int, np.ndarray]
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per block, its allocation of each shared limit (lower, upper per row and interval): its share in
        the master's combination, plus a part of the room the combination leaves to either side of the
        limit in proportion to what the block's EVs could swing there (``reach``). The allocations sum
        to the limits, and each holds the block's share, which its LP can meet."""
        shares = self.shares(weights)
        n_r, n_t = len(self.rows), self.n_t
        total = np.zeros((n_r, n_t))
        swing = np.zeros((n_r, n_t))
        for b in self.blocks:
            rows = self.rows_of_block[b]
            if b in shares:
                total[rows] += shares[b]
            swing[rows] += reach[b]
        lower = np.stack([r.lower for r in self.rows])
        upper = np.stack([r.upper for r in self.rows])
        open_below = lower < -_NO_LIMIT / 10
        open_above = ~np.isfinite(upper) | (upper > _NO_LIMIT / 10)
        room_down = np.where(open_below, 0.0, np.maximum(total - lower, 0.0))
        room_up = np.where(open_above, 0.0, np.maximum(upper - total, 0.0))
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for b in self.blocks:
            rows = self.rows_of_block[b]
            part = np.divide(reach[b], swing[rows], out=np.zeros_like(reach[b]), where=swing[rows] > 0)
            share = shares.get(b, np.zeros((len(rows), n_t)))
            lo = np.where(open_below[rows], -np.inf, share - part * room_down[rows])
            hi = np.where(open_above[rows], np.inf, share + part * room_up[rows])
            out[b] = (lo, hi)
        return out

    def shares(self, weights: np.ndarray) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for w, c in zip(weights, self.columns, strict=True):
            if w <= 0:
                continue
            out[c.block] = out.get(c.block, np.zeros_like(c.net_kw)) + w * c.net_kw
        return out


# --- the run ---------------------------------------------------------------------------------------------


def _price(model: BlockModel, duals: np.ndarray | None, phase1: bool) -> BlockAnswer:
    return model.price(duals, phase1=phase1)


def _compact(solution: BlockSolution) -> BlockSolution:
    """Smaller dtypes for the trip back to the client (a million EVs' schedule)."""
    return BlockSolution(
        solution.block,
        solution.cost_eur,
        solution.session_row.astype(np.int32),
        solution.t.astype(np.int16),
        solution.charge_kw.astype(np.float32),
        solution.discharge_kw.astype(np.float32),
        solution.simultaneous,
        solution.solve_s,
    )


def _solve_block(shared: tuple[Portfolio, _Layout], b: int) -> BlockSolution:
    """On a worker: build block ``b`` from the portfolio it holds, solve it, drop it."""
    portfolio, lay = shared
    return _compact(solve_block_once(block_data(portfolio, lay, b)))


def _build_model(shared: tuple[Portfolio, _Layout], b: int) -> BlockModel:
    """On a worker: block ``b``'s model, kept there for the coordination rounds."""
    portfolio, lay = shared
    return BlockModel(block_data(portfolio, lay, b))


def _envelopes(model: BlockModel) -> list[Envelope]:
    return block_envelopes(model.data)


def _rows_of(model: BlockModel) -> np.ndarray:
    return model.data.coupling_rows


def _reach_of(model: BlockModel) -> np.ndarray:
    return model.reach_kw()


def _solve_kept(model: BlockModel, allocation: tuple[np.ndarray, np.ndarray]) -> BlockSolution:
    return _compact(model.solve(*allocation))


def solve_portfolio(
    portfolio: Portfolio,
    *,
    workers: int = 2,
    scheduler: str | None = None,
    max_evs_per_block: int = 5000,
    target_evs: int = 1000,
    tol: float = 1e-4,
    max_iterations: int = 60,
    monolithic: bool = False,
    progress: Callable[[str], None] | None = None,
    client: Any = None,
    warm_start: bool = True,
) -> PortfolioResult:
    """Schedule ``portfolio`` (see the module docstring). ``monolithic`` solves it as one LP (the
    reference the decomposition is measured against). ``client``: an open Dask client to use.
    ``warm_start``: ask the blocks first at the duals of their aggregate (:mod:`scheduler.portfolio.
    aggregate`) rather than at zero prices."""
    from scheduler.cluster import dask_client

    options = (workers, max_evs_per_block, target_evs, tol, max_iterations, monolithic, progress, warm_start)
    if client is not None:
        return _run(portfolio, client, *options)
    with dask_client(scheduler, workers, keep_objects=True) as own:
        return _run(portfolio, own, *options)


def _run(
    portfolio: Portfolio,
    client: Any,
    workers: int,
    max_evs_per_block: int,
    target_evs: int,
    tol: float,
    max_iterations: int,
    monolithic: bool,
    progress: Callable[[str], None] | None,
    warm_start: bool = True,
) -> PortfolioResult:
    say = progress or (lambda _: None)
    started = time.perf_counter()
    addresses = sorted(client.scheduler_info()["workers"])
    n_workers = max(1, len(addresses))
    size = block_size(portfolio, n_workers, min(target_evs, max_evs_per_block))
    lay = layout(portfolio, max_evs_per_block, target_evs=size, monolithic=monolithic)
    build_s = time.perf_counter() - started
    n_blocks = len(lay.blocks)
    coupled = sorted(lay.coupled)
    free = sorted((b for b in range(n_blocks) if b not in lay.coupled), key=lambda b: -lay.evs(b))
    say(
        f"{portfolio.n_evs:,} EVs, {len(portfolio.sites):,} sites, {len(portfolio.nodes):,} grid nodes: "
        f"{n_blocks} blocks on {n_workers} worker(s), {len(coupled)} coupled by "
        f"{len(lay.coupling)} shared limit(s)"
    )
    solve_started = time.perf_counter()
    schedule: list[BlockSolution] = []
    # the portfolio and its layout go to every worker once; a task then names its block, and the worker
    # builds the block's arrays itself (the client stays free, and nothing moves per block)
    shared = client.scatter((portfolio, lay), broadcast=True, hash=False)
    if free:
        from dask.distributed import as_completed

        running = as_completed([client.submit(_solve_block, shared, b, pure=False) for b in free])
        for future in running:
            schedule.append(future.result())
            del future
            if len(schedule) % max(1, len(free) // 10) == 0:
                say(f"{len(schedule)} of {len(free)} independent blocks solved")
    # coupled blocks: each model built on one worker and kept there for the rounds
    load = dict.fromkeys(addresses, 0)
    worker_of: dict[int, str] = {}
    for b in sorted(coupled, key=lambda b: -lay.evs(b)):  # heaviest first onto the least loaded
        w = min(load, key=lambda a: load[a])
        worker_of[b] = w
        load[w] += lay.evs(b)
    models: dict[int, Any] = {
        b: client.submit(
            _build_model, shared, b, workers=[worker_of[b]], allow_other_workers=False, pure=False
        )
        for b in coupled
    }
    history: list[dict[str, float]] = []
    iterations = 0
    lower = upper = 0.0
    if coupled:
        rows = client.gather(
            [client.submit(_rows_of, models[b], workers=[worker_of[b]], pure=False) for b in coupled]
        )
        rows_of_block = dict(zip(coupled, rows, strict=True))
        master = Master(lay.coupling, coupled, rows_of_block, portfolio.horizon.intervals)

        def price_all(duals: np.ndarray | None, phase1: bool = False) -> list[BlockAnswer]:
            futures = [
                client.submit(
                    _price,
                    models[b],
                    None if duals is None else duals[rows_of_block[b]],
                    phase1,
                    workers=[worker_of[b]],
                    allow_other_workers=False,
                    pure=False,
                )
                for b in coupled
            ]
            return list(client.gather(futures))

        # the first prices: the duals of the coupled blocks as virtual batteries (scheduler.portfolio.
        # aggregate), so the first columns already lean on the shared limits; zero prices without them
        start = None
        if warm_start:
            found = client.gather(
                [client.submit(_envelopes, models[b], workers=[worker_of[b]], pure=False) for b in coupled]
            )
            solved = aggregate(
                [e for mine in found for e in mine],
                np.stack([r.lower for r in lay.coupling]),
                np.stack([r.upper for r in lay.coupling]),
                portfolio.horizon.dt_h,
            )
            if solved is not None:
                start = solved[0]
                say("first prices from the aggregate of the coupled blocks")
        first = price_all(start)
        for answer in first:
            master.add(answer)
        # phase 1: columns until some combination meets every shared limit
        phase1_rounds = 0
        while True:
            _, _, duals, slack = master.solve(phase1=True)
            if slack <= 1e-6:
                break
            phase1_rounds += 1
            iterations += 1
            say(f"round {iterations}: {slack:,.3f} kW beyond the shared limits")
            history.append(
                {"iteration": iterations, "master_eur": math.nan, "bound_eur": math.nan, "slack_kw": slack}
            )
            if phase1_rounds >= max_iterations:
                raise PortfolioLimitInfeasibleError(
                    f"the shared limits ({', '.join(r.name for r in lay.coupling)}) cannot all be met: "
                    f"{slack:.3f} kW of excess remains after {phase1_rounds} rounds"
                )
            fresh = price_all(duals, phase1=True)
            if all(master.reduced_cost(a, duals, phase1=True) >= -1e-9 for a in fresh):
                raise PortfolioLimitInfeasibleError(
                    f"the shared limits ({', '.join(r.name for r in lay.coupling)}) cannot all be met: "
                    f"at least {slack:.3f} kW beyond them (proven: no block can lower it)"
                )
            for answer in fresh:
                master.add(answer)
        best_lower = -math.inf
        upper = math.inf
        weights = np.zeros(0)
        centre: np.ndarray | None = None  # the duals of the best bound so far
        if start is not None:  # the first columns were priced at true costs: their bound holds
            best_lower, centre = sum(a.priced_eur for a in first) + master.bound_terms(start), start
        alpha = SMOOTHING
        while True:
            iterations += 1
            objective, weights, duals, slack = master.solve()
            # Wentges smoothing: price at a point between the best-bound duals and the master's, which
            # damps the master's oscillating duals; a round whose columns would not improve the master
            # (a mispricing) is priced again at the master's own duals
            smoothed = centre is not None and slack <= 1e-6 and alpha > 0
            y = alpha * centre + (1 - alpha) * duals if smoothed and centre is not None else duals
            answers = price_all(y)
            bound = sum(a.priced_eur for a in answers) + master.bound_terms(y)
            if bound > best_lower:
                best_lower, centre = bound, y
            if slack <= 1e-6:
                upper = objective
            gap = (upper - best_lower) / max(abs(upper), 1.0) if math.isfinite(upper) else math.inf
            improving = min(master.reduced_cost(a, duals) for a in answers) < -1e-9 * max(abs(objective), 1.0)
            alpha = SMOOTHING if improving or not smoothed else 0.0
            history.append(
                {"iteration": iterations, "master_eur": objective, "bound_eur": bound, "slack_kw": slack}
            )
            say(
                f"round {iterations}: plan {objective:,.2f} EUR (slack {slack:.3f} kW), "
                f"bound {bound:,.2f} EUR, gap {gap:.2e}"
            )
            if gap <= tol or iterations >= max_iterations:
                break
            for answer in answers:
                master.add(answer)
        if not math.isfinite(upper):
            raise PortfolioLimitInfeasibleError(
                f"the shared limits ({', '.join(r.name for r in lay.coupling)}) cannot all be met: "
                f"{slack:.3f} kW of excess remains after {iterations} rounds"
            )
        lower = best_lower
        # each coupled block's plan: its LP within its allocation of the shared limits (its share of the
        # master's combination and a part of the room the combination leaves), so the plans together
        # meet every limit and cost at most the master's objective
        reach = client.gather(
            [client.submit(_reach_of, models[b], workers=[worker_of[b]], pure=False) for b in coupled]
        )
        allocations = master.allocations(weights, dict(zip(coupled, reach, strict=True)))
        kept = [
            client.submit(
                _solve_kept,
                models[b],
                allocations[b],
                workers=[worker_of[b]],
                allow_other_workers=False,
                pure=False,
            )
            for b in coupled
        ]
        schedule.extend(client.gather(kept))
        del models
    schedule.sort(key=lambda s: s.block)
    free_cost = sum(s.cost_eur for s in schedule if s.block in set(free))
    cost = sum(s.cost_eur for s in schedule)
    if coupled:
        lower += free_cost
    else:
        lower = cost
    gap = max(0.0, (cost - lower) / max(abs(cost), 1.0)) if coupled else 0.0
    solve_s = time.perf_counter() - solve_started
    zones = int((portfolio.nodes["parent"] == "").sum())
    return PortfolioResult(
        cost_eur=cost,
        lower_bound_eur=lower,
        gap=gap,
        iterations=iterations,
        blocks=n_blocks,
        coupled_blocks=len(coupled),
        coupling_rows=[r.name for r in lay.coupling],
        workers=n_workers,
        evs=portfolio.n_evs,
        sites=len(portfolio.sites),
        zones=zones,
        build_s=build_s,
        solve_s=solve_s,
        total_s=time.perf_counter() - started,
        simultaneous_pairs=sum(s.simultaneous for s in schedule),
        schedule=schedule,
        history=history,
    )
