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

import math
from dataclasses import dataclass, field

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
    """Lay ``problem`` out as arrays; raise :class:`TargetUnreachableError` for a hard target out of reach."""
    horizon = problem.horizon
    n_t = horizon.intervals
    dt = horizon.dt_h
    hard = problem.shortfall_penalty_eur_kwh is None

    rows = []
    for session in problem.sessions:
        vehicle = problem.vehicle_by_id[session.vehicle_id]
        begin, end = horizon.offset(session.arrival), horizon.offset(session.departure)
        first = max(0, math.floor(begin + 1e-9))
        stop = min(n_t, math.ceil(end - 1e-9))
        n_plugged = max(0, stop - first)
        frac = np.ones(n_plugged)
        if n_plugged:  # only the first and last interval can be covered in part
            frac[0] = min(first + 1, end) - max(first, begin)
            frac[-1] = min(stop, end) - max(stop - 1, begin) if n_plugged > 1 else frac[0]
            np.clip(frac, 0.0, 1.0, out=frac)
            frac[frac < 1e-9] = 0.0  # a stray touch of an interval is no availability
            if frac[-1] == 0.0:
                stop, frac, n_plugged = stop - 1, frac[:-1], n_plugged - 1
            if n_plugged and frac[0] == 0.0:
                first, frac, n_plugged = first + 1, frac[1:], n_plugged - 1
        e0 = session.arrival_kwh
        lo = min(vehicle.min_kwh, e0)
        hi = max(vehicle.max_kwh, e0)
        target = session.target_kwh
        after_end_h = max(0.0, (session.departure - horizon.end).total_seconds() / 3600.0)
        if after_end_h > 0:
            target = max(min(e0, target), target - vehicle.eta_charge * vehicle.charge_kw * after_end_h)
        reachable = min(hi, e0 + vehicle.eta_charge * vehicle.charge_kw * dt * float(frac.sum()))
        if hard and check_targets and target > reachable + 1e-9:
            raise TargetUnreachableError(session.id, vehicle.id, target, reachable)
        if n_plugged == 0:
            continue
        rows.append(
            (session, vehicle, first, stop, lo, hi, min(target, hi), min(session.target_kwh, hi), frac)
        )

    n_s = len(rows)
    counts = np.array([stop - first for _, _, first, stop, *_ in rows], dtype=np.int64)
    firsts = np.array([first for _, _, first, *_ in rows], dtype=np.int64)
    first_pair = (
        np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if n_s else np.zeros(0, np.int64)
    )
    n_p = int(counts.sum())
    pair_session = np.repeat(np.arange(n_s, dtype=np.int64), counts)
    pair_t = (np.arange(n_p, dtype=np.int64) - np.repeat(first_pair, counts)) + np.repeat(firsts, counts)
    pair_is_first = np.zeros(n_p, dtype=bool)
    pair_is_first[first_pair] = True
    discharge = np.array([v.discharge_kw for _, v, *_ in rows], dtype=np.float64)

    def col(values: list[float]) -> FloatArray:
        return np.asarray(values, dtype=np.float64)

    return ModelIndex(
        dt_h=dt,
        n_t=n_t,
        session_ids=tuple(s.id for s, *_ in rows),
        vehicle_ids=tuple(v.id for _, v, *_ in rows),
        owners=tuple(v.owner for _, v, *_ in rows),
        charge_kw=col([v.charge_kw for _, v, *_ in rows]),
        discharge_kw=discharge,
        eta_charge=col([v.eta_charge for _, v, *_ in rows]),
        eta_discharge=col([v.eta_discharge for _, v, *_ in rows]),
        soc_lo_kwh=col([r[4] for r in rows]),
        soc_hi_kwh=col([r[5] for r in rows]),
        arrival_kwh=col([s.arrival_kwh for s, *_ in rows]),
        target_kwh=col([r[6] for r in rows]),
        requested_kwh=col([r[7] for r in rows]),
        first_pair=first_pair,
        last_pair=first_pair + counts - 1,
        pair_session=pair_session,
        pair_t=pair_t,
        pair_is_first=pair_is_first,
        pair_frac=np.concatenate([r[8] for r in rows]) if n_s else np.zeros(0),
        v2g_pair=np.flatnonzero(discharge[pair_session] > 0) if n_p else np.zeros(0, np.int64),
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


def _peak_arrays(problem: Problem) -> dict[str, np.ndarray]:
    charge = problem.peak_charge
    if charge is None:
        return {}
    return {
        "peak_period": np.asarray(charge.period_of, dtype=np.int64),
        "peak_eur_per_kw": np.full(len(charge.labels), charge.eur_per_kw),
        "peak_so_far_kw": np.asarray(charge.peak_so_far_kw, dtype=np.float64),
    }
