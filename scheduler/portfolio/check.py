"""A physics check of a portfolio schedule, written apart from the model on purpose.

It reads only the portfolio's raw tables and the schedule (per session and interval: charge and
discharge kW), simulates every battery interval by interval, and sums power up the grid tree. It
shares no code with the LP builder, so a builder bug cannot hide from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scheduler.portfolio.model import Portfolio


@dataclass(frozen=True)
class Violation:
    what: str  # "power", "window", "soc", "target", "site", "node", "cap", "simultaneous"
    element: str
    interval: int
    excess: float  # kW or kWh beyond the limit

    def __str__(self) -> str:
        return f"{self.what} {self.element} at interval {self.interval}: {self.excess:.6f} beyond the limit"


def check_schedule(
    portfolio: Portfolio,
    session_row: np.ndarray,
    t: np.ndarray,
    charge_kw: np.ndarray,
    discharge_kw: np.ndarray,
    *,
    tol: float = 1e-4,
) -> list[Violation]:
    """Every limit the schedule breaks by more than ``tol`` (kW or kWh); empty when it is physical."""
    out: list[Violation] = []
    s = portfolio.sessions
    h = portfolio.horizon
    n_t, dt = h.intervals, h.dt_h
    names = s["session"].to_numpy()
    row = np.asarray(session_row, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    ch = np.asarray(charge_kw, dtype=np.float64)
    dis = np.asarray(discharge_kw, dtype=np.float64)

    def report(
        what: str, labels: np.ndarray, where: np.ndarray, excess: np.ndarray, of: np.ndarray | None = None
    ) -> None:
        """Violations where ``excess`` > tol, named ``labels[of[i]]`` (``of`` None: ``labels[i]``)."""
        bad = np.flatnonzero(excess > tol)
        for i in bad[:20]:
            label = labels[i] if of is None else labels[of[i]]
            out.append(Violation(what, str(label), int(where[i]), float(excess[i])))

    # power within the charger's limits, only while plugged in (whole intervals inside the stay)
    report("power", names, t, ch - s["charge_kw"].to_numpy(np.float64)[row], row)
    report("power", names, t, dis - s["discharge_kw"].to_numpy(np.float64)[row], row)
    report("power", names, t, -np.minimum(ch, dis), row)
    report("simultaneous", names, t, np.minimum(ch, dis), row)
    # seconds from the day's start: the interval [t·Δ, (t+1)·Δ) must lie within [arrival, departure]
    start = pd.Timestamp(h.start)
    step_s = h.interval_minutes * 60
    arrival = (pd.to_datetime(s["arrival"], utc=True) - start).dt.total_seconds().to_numpy()[row]
    departure = (pd.to_datetime(s["departure"], utc=True) - start).dt.total_seconds().to_numpy()[row]
    outside = (t * step_s < arrival - 1e-6) | ((t + 1) * step_s > departure + 1e-6)
    report("window", names, t, np.where(outside, np.abs(ch) + np.abs(dis), 0.0), row)
    # battery: interval by interval, from the arrival energy
    order = np.lexsort((t, row))
    row_o, ch_o, dis_o, t_o = row[order], ch[order], dis[order], t[order]
    eta_c = s["eta_charge"].to_numpy(np.float64)[row_o]
    eta_d = s["eta_discharge"].to_numpy(np.float64)[row_o]
    delta = eta_c * ch_o * dt - dis_o * dt / eta_d
    cum = np.cumsum(delta)
    first = np.r_[True, row_o[1:] != row_o[:-1]] if len(row_o) else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(row_o)), 0)) if len(row_o) else first
    before = np.where(group_start > 0, cum[group_start - 1], 0.0) if len(row_o) else cum
    e0 = s["arrival_kwh"].to_numpy(np.float64)
    battery = s["battery_kwh"].to_numpy(np.float64)
    energy = e0[row_o] + cum - before
    lo = np.minimum(s["soc_min"].to_numpy(np.float64) * battery, e0)
    hi = np.maximum(s["soc_max"].to_numpy(np.float64) * battery, e0)
    report("soc", names, t_o, lo[row_o] - energy, row_o)
    report("soc", names, t_o, energy - hi[row_o], row_o)
    final = e0.copy()
    last = np.r_[row_o[1:] != row_o[:-1], True] if len(row_o) else np.zeros(0, bool)
    final[row_o[last]] = energy[last]
    # the target: by departure, or by the day's end what the charger could not still add afterwards
    departs = pd.to_datetime(s["departure"], utc=True)
    after_h = np.maximum((departs - pd.Timestamp(h.end)).dt.total_seconds().to_numpy() / 3600.0, 0.0)
    target = s["target_kwh"].to_numpy(np.float64)
    power = s["charge_kw"].to_numpy(np.float64)
    eta = s["eta_charge"].to_numpy(np.float64)
    needed = np.where(after_h > 0, np.maximum(np.minimum(e0, target), target - eta * power * after_h), target)
    needed = np.minimum(needed, hi)
    report("target", names, np.full(len(names), n_t - 1), needed - final)
    # sites: net = EVs + base load − PV within the connection (a chunk of sites at a time)
    row_of_site = pd.Series(np.arange(len(portfolio.sites)), index=portfolio.sites["site"].to_numpy())
    site_of_session = row_of_site.loc[s["site"].to_numpy()].to_numpy()
    site = site_of_session[row]
    order = np.argsort(site, kind="stable")
    site_sorted = site[order]
    used = np.unique(site_sorted)
    site_names = portfolio.sites["site"].to_numpy()
    imp_all = portfolio.sites["import_limit_kw"].to_numpy(np.float64)
    exp_all = portfolio.sites["export_limit_kw"].to_numpy(np.float64)
    nodes = portfolio.nodes
    node_row = {n: i for i, n in enumerate(nodes["node"])}
    leaf_of_site = portfolio.sites["node"].map(node_row).to_numpy()
    node_net = np.zeros((len(nodes), n_t))
    chunk = 50_000
    for lo in range(0, len(used), chunk):
        part = used[lo : lo + chunk]
        a, b = np.searchsorted(site_sorted, [part[0], part[-1] + 1])
        pairs = order[a:b]
        local = np.searchsorted(part, site[pairs])
        net_ev = np.zeros((len(part), n_t))
        np.add.at(net_ev, (local, t[pairs]), ch[pairs] - dis[pairs])
        np.add.at(node_net, leaf_of_site[part], net_ev)
        net_ev += portfolio.site_fixed_kw(part)
        for excess in (net_ev - imp_all[part][:, None], -net_ev - exp_all[part][:, None]):
            i, k = np.nonzero(excess > tol)
            report("site", site_names[part][i], k, excess[i, k])
    # grid nodes: every site under a node counts in it, base load and PV of every site included
    for lo in range(0, len(portfolio.sites), chunk):
        part = np.arange(lo, min(lo + chunk, len(portfolio.sites)))
        np.add.at(node_net, leaf_of_site[part], portfolio.site_fixed_kw(part))
    parent = np.array([node_row[p] if p else -1 for p in nodes["parent"]], dtype=np.int64)
    total = node_net.copy()
    for n in range(len(nodes)):  # add each node's own sum to every ancestor
        j = int(parent[n])
        while j >= 0:
            total[j] += node_net[n]
            j = int(parent[j])
    node_imp, node_exp = portfolio.node_limits()
    for excess in (total - node_imp, -total - node_exp):
        i, k = np.nonzero(excess > tol)
        report("node", nodes["node"].to_numpy()[i], k, excess[i, k])
    if portfolio.import_cap_kw is not None:
        fleet = np.bincount(t, weights=ch - dis, minlength=n_t)
        excess = fleet - np.asarray(portfolio.import_cap_kw, dtype=np.float64)
        report("cap", np.full(n_t, "portfolio"), np.arange(n_t), excess)
    return out
