"""The problem as index sets and arrays, shared by both model builders.

A *pair* ``p`` is one (session, interval) in which the session's vehicle is
plugged in. Pairs are ordered session by session and, inside a session, by
interval, so the pair before ``p`` in time is ``p - 1`` unless ``p`` is the
session's first. Both builders (Pyomo in :mod:`scheduler.model`, highspy
matrices in :mod:`scheduler.matrix`) read the same arrays, so they describe the
same model by construction.

Alignment: a session is available in every interval it overlaps. An interval it
covers only in part (a car arriving at 10:15 with hourly intervals) is a pair
whose power limits are scaled by the plugged share of the interval
(``pair_frac``): the pair's power is the interval's mean, so the energy it can
move is exact, as an interval meter reads it. Sessions aligned to the intervals
have every share at 1. A departure after the horizon's end keeps only the part
of the target that cannot be delivered after the end at full power.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from scheduler.errors import TargetUnreachableError
from scheduler.inputs import DegradationBasis, Problem

IntArray = np.ndarray
FloatArray = np.ndarray

#: Below this many kW a flow counts as zero (solver noise).
FLOW_TOL_KW = 1e-6


@dataclass(frozen=True)
class ModelIndex:
    """Arrays over sessions ``s``, pairs ``p`` (plugged session-intervals), V2G pairs and intervals ``t``."""

    dt_h: float
    n_t: int
    # sessions (only those with at least one plugged interval in the horizon)
    session_ids: tuple[str, ...]
    vehicle_ids: tuple[str, ...]
    owners: tuple[str, ...]
    charge_kw: FloatArray
    discharge_kw: FloatArray
    eta_charge: FloatArray
    eta_discharge: FloatArray
    soc_lo_kwh: FloatArray
    soc_hi_kwh: FloatArray
    arrival_kwh: FloatArray
    target_kwh: FloatArray  # enforced at the last plugged interval in the horizon
    requested_kwh: FloatArray  # what the owner asked for (capped at the battery window)
    first_pair: IntArray  # first pair of each session
    last_pair: IntArray  # last pair of each session
    # pairs
    pair_session: IntArray
    pair_t: IntArray
    pair_is_first: np.ndarray
    pair_frac: FloatArray  # plugged share of the pair's interval (1 unless arriving/leaving inside it)
    # V2G pairs: pairs whose vehicle may discharge; ``v2g_pair[k]`` is the pair index
    v2g_pair: IntArray
    # intervals
    buy_eur_mwh: FloatArray
    sell_eur_mwh: FloatArray
    import_limit_kw: FloatArray
    export_limit_kw: FloatArray
    fixed_load_kw: FloatArray  # base load − PV
    degradation_eur_kwh: float
    shortfall_penalty_eur_kwh: float | None
    degradation_basis: DegradationBasis = "throughput"
    #: billing period of each interval for the peak charge (empty: no peak charge)
    peak_period: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: EUR per kW of each billing period's peak, and the peak each period reached before the horizon
    peak_eur_per_kw: FloatArray = field(default_factory=lambda: np.zeros(0))
    peak_so_far_kw: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_b(self) -> int:
        """Billing periods with a peak charge (0 without one)."""
        return len(self.peak_eur_per_kw)

    @property
    def n_s(self) -> int:
        return len(self.session_ids)

    @property
    def n_p(self) -> int:
        return len(self.pair_session)

    @property
    def n_d(self) -> int:
        return len(self.v2g_pair)

    @property
    def v2g_of_pair(self) -> IntArray:
        """For every pair, its index ``k`` among the V2G pairs, or −1 if its vehicle cannot discharge."""
        k = np.full(self.n_p, -1, dtype=np.int64)
        k[self.v2g_pair] = np.arange(self.n_d)
        return k

    def soc_from_flows(self, charge_kw: FloatArray, discharge_kw: FloatArray) -> FloatArray:
        """SoC at the end of every pair: the arrival energy plus what the session's flows so far stored
        (``charge_kw`` per pair, ``discharge_kw`` per V2G pair)."""
        s = self.pair_session
        discharged = np.zeros(self.n_p)
        discharged[self.v2g_pair] = discharge_kw
        stored = (self.eta_charge[s] * charge_kw - discharged / self.eta_discharge[s]) * self.dt_h
        total = np.cumsum(stored)
        before = total[self.first_pair] - stored[self.first_pair] if self.n_s else np.zeros(0)
        return np.asarray(self.arrival_kwh[s] + total - before[s])

    @property
    def pair_charge_kw(self) -> FloatArray:
        """Charge limit per pair: the vehicle's limit times the plugged share of the interval."""
        return np.asarray(self.charge_kw[self.pair_session] * self.pair_frac)

    @property
    def v2g_discharge_kw(self) -> FloatArray:
        """Discharge limit per V2G pair (indexed like ``v2g_pair``)."""
        p = self.v2g_pair
        return np.asarray(self.discharge_kw[self.pair_session[p]] * self.pair_frac[p])

    def simultaneity_threshold_eur_mwh(self) -> FloatArray:
        """θ per V2G pair: charging and discharging at once can pay only when min(buy, sell) < −θ.

        At the same SoC, charging δ more and discharging δ·η_c·η_d more draws
        δ(1 − η_c·η_d) more from the grid and costs c_deg·δ(1 + η_c·η_d) more in
        wear (c_deg·δ·η_c·η_d when only discharge wears). The site is paid at most
        −min(buy, sell) per unit it absorbs (more import at a negative buy price, or
        less export at a negative sell price), so the move pays only when
        −min(buy, sell)·(1 − η_c·η_d) > that wear. θ is infinite when η_c·η_d = 1
        (no losses to be paid for).
        """
        s = self.pair_session[self.v2g_pair]
        round_trip = self.eta_charge[s] * self.eta_discharge[s]
        worn = 1 + round_trip if self.degradation_basis == "throughput" else round_trip
        with np.errstate(divide="ignore"):
            theta_kwh = np.where(
                round_trip < 1.0,
                self.degradation_eur_kwh * worn / np.maximum(1 - round_trip, 1e-300),
                np.inf,
            )
        return np.asarray(theta_kwh * 1000.0)

    def binary_candidates(self) -> IntArray:
        """Indices into ``v2g_pair`` whose interval price is below −θ: these need the binary."""
        if self.n_d == 0:
            return np.zeros(0, dtype=np.int64)
        t = self.pair_t[self.v2g_pair]
        low = np.minimum(self.buy_eur_mwh, self.sell_eur_mwh)[t]
        return np.flatnonzero(low < -self.simultaneity_threshold_eur_mwh())

    def site_binary_intervals(self) -> IntArray:
        """Intervals where selling pays more than buying costs: import and export need a binary there."""
        return np.flatnonzero(self.sell_eur_mwh > self.buy_eur_mwh)


def build_index(problem: Problem, *, check_targets: bool = True) -> ModelIndex:
    """Lay ``problem`` out as arrays; raise :class:`TargetUnreachableError` for a hard target out of reach.

    Vectorised over sessions (a rolling case-study day builds ten indices of 2,000 sessions): every
    array is computed with the same operations in the same order as a session-by-session loop, so it is
    bit-identical to that loop's (``tests/scheduler/test_index.py`` keeps the loop as its oracle)."""
    horizon = problem.horizon
    n_t = horizon.intervals
    dt = horizon.dt_h
    hard = problem.shortfall_penalty_eur_kwh is None
    sessions = problem.sessions
    vehicles = [problem.vehicle_by_id[s.vehicle_id] for s in sessions]
    n_all = len(sessions)

    def of_vehicles(name: str) -> FloatArray:
        return np.fromiter((getattr(v, name) for v in vehicles), dtype=np.float64, count=n_all)

    charge_kw, eta_charge = of_vehicles("charge_kw"), of_vehicles("eta_charge")
    # offsets in intervals from the start: exact microseconds over the step's, as timedelta division is
    step_us = horizon.step // _MICROSECOND
    horizon_start, horizon_end = horizon.start, horizon.end
    arrival_us = np.fromiter(((s.arrival - horizon_start) // _MICROSECOND for s in sessions), np.int64, n_all)
    departure_us = np.fromiter(
        ((s.departure - horizon_start) // _MICROSECOND for s in sessions), np.int64, n_all
    )
    begin, end = arrival_us / step_us, departure_us / step_us
    first = np.maximum(0, np.floor(begin + 1e-9)).astype(np.int64)
    stop = np.minimum(n_t, np.ceil(end - 1e-9)).astype(np.int64)
    n_plugged = np.maximum(0, stop - first)
    # only the first and last interval can be covered in part
    head = np.clip(np.minimum(first + 1, end) - np.maximum(first, begin), 0.0, 1.0)
    tail = np.where(
        n_plugged > 1, np.clip(np.minimum(stop, end) - np.maximum(stop - 1, begin), 0.0, 1.0), head
    )
    head[head < 1e-9] = 0.0  # a stray touch of an interval is no availability
    tail[tail < 1e-9] = 0.0
    n_pairs = int(n_plugged.sum())
    owner = np.repeat(np.arange(n_all, dtype=np.int64), n_plugged)
    starts = np.concatenate([[0], np.cumsum(n_plugged)[:-1]]).astype(np.int64) if n_all else n_plugged
    frac = np.ones(n_pairs)
    plugged = n_plugged > 0
    frac[(starts + n_plugged - 1)[plugged]] = tail[plugged]
    frac[starts[plugged]] = head[plugged]  # the one interval of a one-interval session
    covered = np.bincount(owner, weights=frac, minlength=n_all)  # plugged intervals' share

    e0 = np.fromiter((s.arrival_kwh for s in sessions), np.float64, n_all)
    asked = np.fromiter((s.target_kwh for s in sessions), np.float64, n_all)
    lo = np.minimum(of_vehicles("soc_min") * of_vehicles("battery_kwh"), e0)
    hi = np.maximum(of_vehicles("soc_max") * of_vehicles("battery_kwh"), e0)
    after_us = np.fromiter(((s.departure - horizon_end) // _MICROSECOND for s in sessions), np.int64, n_all)
    after_end_h = np.maximum(0.0, after_us / 10**6 / 3600.0)
    target = np.where(
        after_end_h > 0,
        np.maximum(np.minimum(e0, asked), asked - eta_charge * charge_kw * after_end_h),
        asked,
    )
    reachable = np.minimum(hi, e0 + eta_charge * charge_kw * dt * covered)
    if hard and check_targets:
        out_of_reach = np.flatnonzero(target > reachable + 1e-9)
        if len(out_of_reach):
            i = int(out_of_reach[0])
            session = sessions[i]
            raise TargetUnreachableError(
                session.id, session.vehicle_id, float(target[i]), float(reachable[i])
            )

    # drop the uncovered first or last interval of a session, then the sessions left with none
    keep = frac > 0.0
    counts_all = np.bincount(owner[keep], minlength=n_all) if n_all else np.zeros(0, np.int64)
    rows = np.flatnonzero(counts_all > 0)
    n_s = len(rows)
    counts = counts_all[rows].astype(np.int64)
    first_pair = (
        np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if n_s else np.zeros(0, np.int64)
    )
    pair_session = np.repeat(np.arange(n_s, dtype=np.int64), counts)
    offset_in_session = np.arange(n_pairs, dtype=np.int64) - np.repeat(starts, n_plugged)
    pair_t = (np.repeat(first, n_plugged) + offset_in_session)[keep]
    pair_is_first = np.zeros(len(pair_t), dtype=bool)
    pair_is_first[first_pair] = True
    discharge = of_vehicles("discharge_kw")[rows]
    kept = [vehicles[i] for i in rows]

    return ModelIndex(
        dt_h=dt,
        n_t=n_t,
        session_ids=tuple(sessions[i].id for i in rows),
        vehicle_ids=tuple(v.id for v in kept),
        owners=tuple(v.owner for v in kept),
        charge_kw=charge_kw[rows],
        discharge_kw=discharge,
        eta_charge=eta_charge[rows],
        eta_discharge=of_vehicles("eta_discharge")[rows],
        soc_lo_kwh=lo[rows],
        soc_hi_kwh=hi[rows],
        arrival_kwh=e0[rows],
        target_kwh=np.minimum(target, hi)[rows],
        requested_kwh=np.minimum(asked, hi)[rows],
        first_pair=first_pair,
        last_pair=first_pair + counts - 1,
        pair_session=pair_session,
        pair_t=pair_t,
        pair_is_first=pair_is_first,
        pair_frac=frac[keep],
        v2g_pair=np.flatnonzero(discharge[pair_session] > 0) if len(pair_t) else np.zeros(0, np.int64),
        buy_eur_mwh=problem.prices.buy_eur_mwh,
        sell_eur_mwh=problem.prices.sell_eur_mwh,
        import_limit_kw=problem.import_limit_kw,
        export_limit_kw=problem.site.export_limit_kw,
        fixed_load_kw=problem.site.base_load_kw - problem.site.pv_kw,
        degradation_eur_kwh=problem.degradation_eur_kwh,
        shortfall_penalty_eur_kwh=problem.shortfall_penalty_eur_kwh,
        degradation_basis=problem.degradation_basis,
        **_peak_arrays(problem),
    )


_MICROSECOND = timedelta(microseconds=1)


def _peak_arrays(problem: Problem) -> dict[str, np.ndarray]:
    charge = problem.peak_charge
    if charge is None:
        return {}
    return {
        "peak_period": np.asarray(charge.period_of, dtype=np.int64),
        "peak_eur_per_kw": np.full(len(charge.labels), charge.eur_per_kw),
        "peak_so_far_kw": np.asarray(charge.peak_so_far_kw, dtype=np.float64),
    }
