"""Schedules, their KPIs, the physics check, and the conversion to integer trades.

Trade rounding rule (the one rule at the trade boundary): the metered energy of
one session in one interval and direction is ``power_kW × Δt_h × 1000`` Wh,
rounded to the nearest whole Wh with halves rounded up
(``floor(x + 1/2)``); flows under half a Wh produce no trade. Each interval is
rounded on its own, so a trade is exactly what an interval meter would read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scheduler.index import FLOW_TOL_KW, FloatArray, ModelIndex

if TYPE_CHECKING:
    from scheduler.matrix import LpBasis

#: What each kWh an owner leaves without is worth in every strategy's net cost (EUR/kWh): about what the
#: owner pays to get it at a public fast charger. One value for every strategy, so that no strategy can
#: look cheaper by delivering less.
SHORTFALL_VALUE_EUR_KWH = 0.60


@dataclass(frozen=True)
class Kpis:
    """Money in EUR, energy in kWh, power in kW, over the horizon."""

    import_cost_eur: float
    export_revenue_eur: float
    v2g_revenue_eur: float
    degradation_eur: float
    shortfall_penalty_eur: float
    net_cost_eur: float
    charged_kwh: float
    discharged_kwh: float
    peak_import_kw: float
    peak_export_kw: float
    shortfall_kwh: float
    sessions_short: int
    dr_compliance: float
    #: what the plan adds to a peak charge (:class:`~scheduler.inputs.PeakCharge`): c·(peak − peak so far)⁺
    peak_charge_eur: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Schedule:
    """Per session and interval: charge and discharge power (kW) and SoC at the interval's end (kWh).

    Arrays are ``n_sessions × n_intervals``; SoC is NaN where the vehicle is not plugged in.
    """

    strategy: str
    timestamps: pd.DatetimeIndex
    dt_h: float
    session_ids: tuple[str, ...]
    vehicle_ids: tuple[str, ...]
    owners: tuple[str, ...]
    charge_kw: FloatArray
    discharge_kw: FloatArray
    soc_kwh: FloatArray
    import_kw: FloatArray
    export_kw: FloatArray
    shortfall_kwh: FloatArray
    status: str
    termination: str
    mip_gap: float
    objective_eur: float
    solve_s: float = 0.0
    build_s: float = 0.0
    #: solver recoveries the schedule took (``"Unknown→cold"``, see :mod:`scheduler.highs`)
    recoveries: tuple[str, ...] = ()
    #: the LP's optimal basis, for the next solve of the same model (:func:`scheduler.solve.solve`'s start)
    lp_basis: LpBasis | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_pairs(
        cls,
        idx: ModelIndex,
        timestamps: pd.DatetimeIndex,
        *,
        strategy: str,
        charge_kw: FloatArray,
        discharge_kw: FloatArray,
        soc_kwh: FloatArray,
        import_kw: FloatArray,
        export_kw: FloatArray,
        shortfall_kwh: FloatArray,
        status: str,
        termination: str,
        mip_gap: float,
        objective_eur: float,
        solve_s: float = 0.0,
        build_s: float = 0.0,
        recoveries: tuple[str, ...] = (),
        lp_basis: LpBasis | None = None,
    ) -> Schedule:
        """Scatter per-pair values (as the builders return them) into dense arrays; clamp solver noise."""
        shape = (idx.n_s, idx.n_t)
        ch = np.zeros(shape)
        dis = np.zeros(shape)
        soc = np.full(shape, np.nan)
        ch[idx.pair_session, idx.pair_t] = np.clip(charge_kw, 0.0, None)
        dis[idx.pair_session[idx.v2g_pair], idx.pair_t[idx.v2g_pair]] = np.clip(discharge_kw, 0.0, None)
        ch[ch < FLOW_TOL_KW] = 0.0
        dis[dis < FLOW_TOL_KW] = 0.0
        soc[idx.pair_session, idx.pair_t] = soc_kwh
        return cls(
            strategy=strategy,
            timestamps=timestamps,
            dt_h=idx.dt_h,
            session_ids=idx.session_ids,
            vehicle_ids=idx.vehicle_ids,
            owners=idx.owners,
            charge_kw=ch,
            discharge_kw=dis,
            soc_kwh=soc,
            import_kw=np.clip(import_kw, 0.0, None),
            export_kw=np.clip(export_kw, 0.0, None),
            shortfall_kwh=np.clip(shortfall_kwh, 0.0, None),
            status=status,
            termination=termination,
            mip_gap=mip_gap,
            objective_eur=objective_eur,
            solve_s=solve_s,
            build_s=build_s,
            recoveries=recoveries,
            lp_basis=lp_basis,
        )


def kpis(schedule: Schedule, idx: ModelIndex, dr_mask: np.ndarray | None = None) -> Kpis:
    """Energy cost, V2G revenue, degradation, net cost, peaks, shortfall and DR compliance.

    V2G revenue values each discharged kWh at the price it earned at the site's
    margin: the sell price in intervals where the site exports, the avoided buy
    price otherwise. Degradation is charged per kWh of throughput (charged plus
    discharged) or, with ``degradation_basis = "discharge"``, per kWh discharged.
    Net cost = import cost − export revenue + degradation +
    shortfall penalty + peak charge (what the schedule raises each billing
    period's peak import above the peak so far, times the charge per kW).
    DR compliance is the share of DR intervals whose import stays within the
    reduced limit (1.0 when there are none).
    """
    dt = schedule.dt_h
    buy, sell = idx.buy_eur_mwh, idx.sell_eur_mwh
    import_cost = float(np.sum(buy * schedule.import_kw) * dt / 1000.0)
    export_revenue = float(np.sum(sell * schedule.export_kw) * dt / 1000.0)
    discharged_t = schedule.discharge_kw.sum(axis=0) * dt
    margin = np.where(schedule.export_kw > FLOW_TOL_KW, sell, buy)
    v2g_revenue = float(np.sum(margin * discharged_t) / 1000.0)
    charged = float(schedule.charge_kw.sum() * dt)
    discharged = float(discharged_t.sum())
    worn = charged + discharged if idx.degradation_basis == "throughput" else discharged
    degradation = idx.degradation_eur_kwh * worn
    shortfall = float(schedule.shortfall_kwh.sum())
    penalty = (idx.shortfall_penalty_eur_kwh or 0.0) * shortfall
    peak_charge = 0.0
    if idx.n_b:
        peaks = np.zeros(idx.n_b)
        np.maximum.at(peaks, idx.peak_period, schedule.import_kw)
        peak_charge = float(np.dot(idx.peak_eur_per_kw, np.maximum(peaks - idx.peak_so_far_kw, 0.0)))
    if dr_mask is not None and dr_mask.any():
        compliance = float(np.mean(schedule.import_kw[dr_mask] <= idx.import_limit_kw[dr_mask] + 1e-6))
    else:
        compliance = 1.0
    return Kpis(
        import_cost_eur=import_cost,
        export_revenue_eur=export_revenue,
        v2g_revenue_eur=v2g_revenue,
        degradation_eur=degradation,
        shortfall_penalty_eur=penalty,
        net_cost_eur=import_cost - export_revenue + degradation + penalty + peak_charge,
        charged_kwh=charged,
        discharged_kwh=discharged,
        peak_import_kw=float(schedule.import_kw.max(initial=0.0)),
        peak_export_kw=float(schedule.export_kw.max(initial=0.0)),
        shortfall_kwh=shortfall,
        sessions_short=int(np.sum(schedule.shortfall_kwh > 1e-6)),
        dr_compliance=compliance,
        peak_charge_eur=peak_charge,
    )


def check_physics(schedule: Schedule, idx: ModelIndex, tol: float = 1e-6) -> list[str]:
    """Every physical law the schedule must obey; returns the violations (empty when sound).

    SoC balance per plugged interval, SoC window, power limits, no flow while
    unplugged, never charging and discharging at once, site balance, import and
    export limits, departure targets (less any reported shortfall).
    """
    problems: list[str] = []
    dt = idx.dt_h
    s, t = idx.pair_session, idx.pair_t
    ch, dis, soc = schedule.charge_kw[s, t], schedule.discharge_kw[s, t], schedule.soc_kwh[s, t]
    before = np.where(idx.pair_is_first, idx.arrival_kwh[s], np.roll(soc, 1))
    residual = soc - before - idx.eta_charge[s] * ch * dt + dis * dt / idx.eta_discharge[s]
    scale = np.maximum(1.0, np.abs(soc))

    def report(mask: np.ndarray, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            problems.append(
                f"{what}: {int(mask.sum())} case(s), first session {idx.session_ids[s[i]]} interval {t[i]}"
            )

    report(np.abs(residual) > tol * scale, "SoC balance")
    report(soc < idx.soc_lo_kwh[s] - tol, "SoC below minimum")
    report(soc > idx.soc_hi_kwh[s] + tol, "SoC above maximum")
    dis_limit = np.zeros(idx.n_p)
    dis_limit[idx.v2g_pair] = idx.v2g_discharge_kw
    report(ch > idx.pair_charge_kw + tol, "charge above limit")
    report(dis > dis_limit + tol, "discharge above limit")
    report((ch > FLOW_TOL_KW) & (dis > FLOW_TOL_KW), "charge and discharge at once")
    plugged = np.zeros_like(schedule.charge_kw, dtype=bool)
    plugged[s, t] = True
    if (schedule.charge_kw[~plugged] > 0).any() or (schedule.discharge_kw[~plugged] > 0).any():
        problems.append("power while unplugged")
    net = schedule.charge_kw.sum(axis=0) - schedule.discharge_kw.sum(axis=0) + idx.fixed_load_kw
    site = schedule.import_kw - schedule.export_kw - net
    if (np.abs(site) > tol * np.maximum(1.0, np.abs(net))).any():
        problems.append(f"site balance off by up to {np.abs(site).max():.3g} kW")
    if (schedule.import_kw > idx.import_limit_kw + tol).any():
        problems.append(
            f"import above limit by up to {(schedule.import_kw - idx.import_limit_kw).max():.3g} kW"
        )
    if (schedule.export_kw > idx.export_limit_kw + tol).any():
        problems.append(
            f"export above limit by up to {(schedule.export_kw - idx.export_limit_kw).max():.3g} kW"
        )
    if ((schedule.import_kw > FLOW_TOL_KW) & (schedule.export_kw > FLOW_TOL_KW)).any():
        problems.append("site imports and exports at once")
    final = schedule.soc_kwh[np.arange(idx.n_s), idx.pair_t[idx.last_pair]] if idx.n_s else np.zeros(0)
    short = idx.target_kwh - final - schedule.shortfall_kwh
    report_s = short > tol * np.maximum(1.0, idx.target_kwh)
    if report_s.any():
        i = int(np.flatnonzero(report_s)[0])
        problems.append(
            f"departure target missed by {short[i]:.6f} kWh in session {idx.session_ids[i]} "
            f"({int(report_s.sum())} session(s))"
        )
    return problems


# --- trades ---------------------------------------------------------------------


class Direction(StrEnum):
    CHARGE = "charge"  # energy from the grid into the vehicle: the owner buys
    DISCHARGE = "discharge"  # energy from the vehicle to the grid: the owner sells


@dataclass(frozen=True)
class Trade:
    """Metered energy of one session in one interval and direction, in whole Wh."""

    owner: str
    vehicle_id: str
    session_id: str
    interval_start: datetime
    direction: Direction
    energy_wh: int


def kwh_to_wh(energy_kwh: float) -> int:
    """The trade rounding rule: nearest whole Wh, halves up (``floor(x·1000 + 1/2)``)."""
    if not math.isfinite(energy_kwh) or energy_kwh < 0:
        raise ValueError(f"energy {energy_kwh} kWh must be finite and non-negative")
    return math.floor(energy_kwh * 1000.0 + 0.5)


def to_trades(schedule: Schedule) -> list[Trade]:
    """Every non-zero metered flow of the schedule as a :class:`Trade` (see the module's rounding rule)."""
    trades: list[Trade] = []
    for direction, power in (
        (Direction.CHARGE, schedule.charge_kw),
        (Direction.DISCHARGE, schedule.discharge_kw),
    ):
        wh = np.floor(power * schedule.dt_h * 1000.0 + 0.5).astype(np.int64)
        for s, t in zip(*np.nonzero(wh), strict=True):
            trades.append(
                Trade(
                    owner=schedule.owners[s],
                    vehicle_id=schedule.vehicle_ids[s],
                    session_id=schedule.session_ids[s],
                    interval_start=schedule.timestamps[t].to_pydatetime(),
                    direction=direction,
                    energy_wh=int(wh[s, t]),
                )
            )
    trades.sort(key=lambda tr: (tr.interval_start, tr.session_id, tr.direction))
    return trades
