"""Small hand-checkable problems: 2 vehicles × 3 one-hour intervals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from scheduler.inputs import DREvent, Horizon, Prices, Problem, Session, Site, Vehicle

START = datetime(2023, 7, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)


def hours(n: float) -> datetime:
    return START + n * HOUR


def small_problem(
    vehicles: Sequence[Vehicle],
    sessions: Sequence[Session],
    buy: Sequence[float],
    *,
    sell: Sequence[float] | None = None,
    import_kw: float | Sequence[float] = 20.0,
    export_kw: float | Sequence[float] = 20.0,
    degradation: float = 0.0,
    penalty: float | None = None,
    dr: Sequence[DREvent] = (),
    base_load: float | Sequence[float] = 0.0,
    pv: float | Sequence[float] = 0.0,
) -> Problem:
    horizon = Horizon(START, len(buy), interval_minutes=60)
    return Problem(
        horizon=horizon,
        vehicles=tuple(vehicles),
        sessions=tuple(sessions),
        site=Site.build(horizon, import_kw, export_kw, base_load, pv),
        prices=Prices.build(horizon, buy, sell),
        dr_events=tuple(dr),
        degradation_eur_kwh=degradation,
        shortfall_penalty_eur_kwh=penalty,
    )


def vehicle(
    id: str,
    *,
    charge: float = 10.0,
    discharge: float = 0.0,
    battery: float = 40.0,
    eta: float = 0.9,
    soc_min: float = 0.0,
    owner: str | None = None,
) -> Vehicle:
    return Vehicle(
        id=id,
        owner=owner or f"owner-{id}",
        battery_kwh=battery,
        charge_kw=charge,
        discharge_kw=discharge,
        soc_min=soc_min,
        eta_charge=eta,
        eta_discharge=eta,
    )


def session(v: Vehicle, arrival_kwh: float, target_kwh: float, start: float = 0, end: float = 3) -> Session:
    return Session(f"s-{v.id}", v.id, hours(start), hours(end), arrival_kwh, target_kwh)
