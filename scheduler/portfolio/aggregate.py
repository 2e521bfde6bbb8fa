"""Prices for the shared limits before the first round: the coupled blocks as a few virtual batteries.

Column generation starts from prices for the shared limits. At zero prices every block charges in the
cheapest hours, the columns break the portfolio's cap together, and the master needs many rounds to
find the prices at which they do not. Here each coupled block's EVs are summed, per group of EVs that
count in the same shared limits, into one virtual battery over the horizon:

- power: at most the sum of the plugged EVs' charge (and discharge) power in each interval;
- energy: the energy stored since each EV arrived, summed, between an envelope's bounds at the end of
  each interval: at most what the EVs could have charged so far (and their batteries hold), at least
  what they must have charged to still meet their departure targets (and no lower than their batteries
  allow, or than discharging at full power since arrival could bring them);
- cost: the block's energy price and wear, with the group's mean efficiencies.

Every schedule of the blocks gives a schedule of these batteries, so the aggregate LP (a few hundred
columns per block instead of one per EV and interval) is a relaxation of the coupled problem (it
ignores the limits inside a block, and lets one EV's power serve another's energy). Its duals on the
shared limits are the first prices the blocks are asked at. They need not be exact: the master
corrects them, and the lower bound of every round holds whatever the prices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import highspy
import numpy as np

from scheduler.highs import Lp, new_highs, pass_model
from scheduler.portfolio.blocks import BlockData

logger = logging.getLogger(__name__)

#: A shared limit's side closer to infinity than this is absent.
_NO_LIMIT = 1e15


@dataclass(frozen=True)
class Envelope:
    """One virtual battery: the EVs of a block that count in the same shared limits (``rows``)."""

    rows: tuple[int, ...]  # global coupling rows
    charge_kw: np.ndarray  # (n_t,) the plugged EVs' charge power
    discharge_kw: np.ndarray  # (n_t,)
    lo_kwh: np.ndarray  # (n_t,) energy stored since arrival at the end of each interval, at least
    hi_kwh: np.ndarray  # (n_t,) at most
    eta_charge: float
    eta_discharge: float
    price_eur_mwh: np.ndarray  # (n_t,)
    degradation_eur_kwh: float


def block_envelopes(data: BlockData) -> list[Envelope]:
    """The virtual batteries of one block, one per set of shared limits its EVs count in."""
    d = data
    n_s, n_t, dt = len(d.n_plugged), d.n_t, d.dt_h
    if n_s == 0 or len(d.coupling_rows) == 0:
        return []
    sites, local = d.site_coupling
    member = np.zeros((len(d.site_import_kw), len(d.coupling_rows)), dtype=bool)
    member[sites, local] = True
    keys = member[d.session_site]  # (n_s, rows of the block)
    groups, group_of = np.unique(keys, axis=0, return_inverse=True)
    group_of = np.asarray(group_of).reshape(-1)
    t = np.arange(n_t)[None, :]
    a = d.first_t[:, None]
    end = (d.first_t + d.n_plugged - 1)[:, None]
    arrived = t >= a
    plugged = arrived & (t <= end)
    done = np.clip(t - a + 1, 0, d.n_plugged[:, None])  # intervals plugged so far
    left = np.clip(end - t, 0, None)  # intervals still to come
    gain = (d.eta_charge * d.charge_kw * dt)[:, None]
    loss = (d.discharge_kw * dt / d.eta_discharge)[:, None]
    room = (d.hi_kwh - d.e0_kwh)[:, None]
    hi = np.minimum(room, gain * done)
    lo = np.maximum.reduce(
        [
            np.broadcast_to((d.lo_kwh - d.e0_kwh)[:, None], hi.shape),
            -loss * done,
            (d.target_kwh - d.e0_kwh)[:, None] - gain * left,
        ]
    )
    lo = np.minimum(lo, hi)  # a target out of reach: as much as it can
    hi, lo = np.where(arrived, hi, 0.0), np.where(arrived, lo, 0.0)
    out = []
    for g, key in enumerate(groups):
        if not key.any():
            continue
        mine = group_of == g
        charge = (plugged[mine] * d.charge_kw[mine, None]).sum(axis=0)
        discharge = (plugged[mine] * d.discharge_kw[mine, None]).sum(axis=0)
        weight_c = d.charge_kw[mine].sum()
        weight_d = d.discharge_kw[mine].sum()
        out.append(
            Envelope(
                rows=tuple(int(r) for r in d.coupling_rows[np.flatnonzero(key)]),
                charge_kw=charge,
                discharge_kw=discharge,
                lo_kwh=lo[mine].sum(axis=0),
                hi_kwh=hi[mine].sum(axis=0),
                eta_charge=float(d.eta_charge[mine] @ d.charge_kw[mine] / weight_c) if weight_c else 1.0,
                eta_discharge=float(d.eta_discharge[mine] @ d.discharge_kw[mine] / weight_d)
                if weight_d
                else 1.0,
                price_eur_mwh=np.asarray(d.price_eur_mwh, dtype=np.float64),
                degradation_eur_kwh=d.degradation_eur_kwh,
            )
        )
    return out


def aggregate(
    envelopes: list[Envelope], lower: np.ndarray, upper: np.ndarray, dt_h: float
) -> tuple[np.ndarray, float] | None:
    """The aggregate LP of ``envelopes`` under the shared limits ``lower[row, t] ≤ Σ net power ≤
    upper[row, t]``: their duals (EUR per kW, as the master's: ``duals[row, t]``) and its optimal cost
    (EUR, a lower bound of the blocks' when their efficiencies are alike); None when it has no optimum
    (the caller starts from zero prices)."""
    n_r, n_t = lower.shape
    n_g = len(envelopes)
    if n_g == 0:
        return None
    # columns per battery g: charge [0, n_t), discharge [n_t, 2 n_t), energy [2 n_t, 3 n_t)
    width = 3 * n_t
    n_col = n_g * width
    cost = np.zeros(n_col)
    col_lo = np.zeros(n_col)
    col_hi = np.zeros(n_col)
    r_idx: list[np.ndarray] = []
    c_idx: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    t = np.arange(n_t)
    for g, e in enumerate(envelopes):
        base = g * width
        price = e.price_eur_mwh * dt_h / 1000.0
        cost[base : base + n_t] = price + e.degradation_eur_kwh * dt_h
        cost[base + n_t : base + 2 * n_t] = -price + e.degradation_eur_kwh * dt_h
        col_hi[base : base + n_t] = e.charge_kw
        col_hi[base + n_t : base + 2 * n_t] = e.discharge_kw
        col_lo[base + 2 * n_t : base + 3 * n_t] = e.lo_kwh
        col_hi[base + 2 * n_t : base + 3 * n_t] = np.maximum(e.hi_kwh, e.lo_kwh)
        # energy[t] − energy[t−1] − η_c dt charge[t] + dt/η_d discharge[t] = 0  (rows g·n_t + t)
        row = g * n_t + t
        r_idx += [row, row[1:], row, row]
        c_idx += [base + 2 * n_t + t, base + 2 * n_t + t[:-1], base + t, base + n_t + t]
        vals += [
            np.ones(n_t),
            -np.ones(n_t - 1),
            np.full(n_t, -e.eta_charge * dt_h),
            np.full(n_t, dt_h / e.eta_discharge),
        ]
    n_dyn = n_g * n_t
    # the shared limits: rows n_dyn + row·n_t + t over every battery counting in them
    for g, e in enumerate(envelopes):
        base = g * width
        for row in e.rows:
            rr = n_dyn + row * n_t + t
            r_idx += [rr, rr]
            c_idx += [base + t, base + n_t + t]
            vals += [np.ones(n_t), -np.ones(n_t)]
    r, c, v = np.concatenate(r_idx), np.concatenate(c_idx), np.concatenate(vals)
    order = np.lexsort((r, c))  # column-wise, rows ascending within a column
    r, c, v = r[order], c[order], v[order]
    row_lo = np.concatenate([np.zeros(n_dyn), lower.reshape(-1)])
    row_hi = np.concatenate([np.zeros(n_dyn), upper.reshape(-1)])
    row_lo = np.where(row_lo < -_NO_LIMIT / 10, -highspy.kHighsInf, row_lo)
    row_hi = np.where(row_hi > _NO_LIMIT / 10, highspy.kHighsInf, row_hi)
    lp = Lp.colwise(cost, col_lo, col_hi, row_lo, row_hi, np.searchsorted(c, np.arange(n_col + 1)), r, v)
    h = new_highs()
    pass_model(h, lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        status = h.modelStatusToString(h.getModelStatus())
        logger.info("aggregate LP ended %s: the rounds start from zero prices", status)
        return None
    duals = np.asarray(h.getSolution().row_dual)[n_dyn:].reshape(n_r, n_t)
    return duals, float(h.getInfo().objective_function_value)
