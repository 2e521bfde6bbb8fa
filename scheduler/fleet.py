"""Seeded, reproducible fleets and plug-in sessions from the ElaadNL distributions and EV specs.

For one UTC day and a :class:`FleetConfig`, each EV gets:

- a model drawn by registrations: from the V2G-capable list with probability
  ``v2g_share`` (discharge power = min(charger, model's AC discharge)), else
  from the general list (no discharge); charge power = min(charger, model's AC);
- an arrival quarter hour from the ElaadNL weekday or weekend arrival shares of
  the charger type;
- a connection time from the ElaadNL joint distribution for that arrival hour
  (half-hour bins) plus 15 or 30 minutes, the session cut at the day's end
  unless ``clip_to_day`` is off;
- an energy request from the ElaadNL energy quantiles of the charger type
  (at least 1 kWh), an arrival SoC uniform in ``arrival_soc``; the target is
  the arrival energy plus the request, capped by the battery window and by what
  the charger can deliver while plugged in.

The same seed, day and config give the same fleet on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np

from scheduler.datasets import EV_SPECS, EV_SPECS_V2G, ElaadDistributions, EVModel, load_elaad, load_ev_specs
from scheduler.errors import DateOutOfRangeError, InvalidParameterError
from scheduler.inputs import DegradationBasis, Horizon, Prices, Problem, Session, Site, Vehicle


@dataclass(frozen=True)
class FleetConfig:
    """Fleet and site assumptions (defaults: the case study's reference assumptions)."""

    n_evs: int = 1000
    v2g_share: float = 0.3
    charger_kw: float = 11.0
    eta: float = 0.95
    soc_min: float = 0.1
    soc_max: float = 1.0
    arrival_soc: tuple[float, float] = (0.2, 0.6)
    charger_type: str = "private"
    site_kw_per_ev: float = 3.0
    degradation_eur_kwh: float = 0.02
    interval_minutes: int = 15
    #: End every session at the day's end (each day self-contained);
    #: False keeps ElaadNL departures, and the model keeps what must be charged after the horizon.
    clip_to_day: bool = True
    #: Hours the problem covers from the day's start: 48 lets the day's evening arrivals use the night
    #: (cut short where the price series ends).
    horizon_hours: int = 24
    #: Battery wear per kWh of "throughput" (charged + discharged) or per kWh "discharge"d only.
    degradation_basis: DegradationBasis = "throughput"

    def __post_init__(self) -> None:
        if self.n_evs < 0:
            raise InvalidParameterError(f"n_evs = {self.n_evs} must be >= 0")
        if not 0 <= self.v2g_share <= 1:
            raise InvalidParameterError(f"v2g_share = {self.v2g_share} must be in [0, 1]")
        if self.charger_type not in ("private", "public", "workplace"):
            raise InvalidParameterError(f"unknown charger type {self.charger_type!r}")
        lo, hi = self.arrival_soc
        if not self.soc_min <= lo <= hi <= self.soc_max:
            raise InvalidParameterError(f"arrival_soc {self.arrival_soc} outside [soc_min, soc_max]")
        if self.interval_minutes <= 0 or 60 % self.interval_minutes:
            raise InvalidParameterError(f"interval of {self.interval_minutes} min must divide an hour")
        if self.horizon_hours < 24 or (self.horizon_hours * 60) % self.interval_minutes:
            raise InvalidParameterError(
                f"horizon of {self.horizon_hours} h must be >= 24 h and whole intervals of "
                f"{self.interval_minutes} min"
            )


@lru_cache(maxsize=1)
def _data() -> tuple[ElaadDistributions, tuple[EVModel, ...], tuple[EVModel, ...]]:
    return load_elaad(), load_ev_specs(EV_SPECS), load_ev_specs(EV_SPECS_V2G)


def _weights(models: tuple[EVModel, ...]) -> np.ndarray:
    w = np.array([m.registrations for m in models], dtype=np.float64)
    return np.asarray(w / w.sum())


def generate_fleet(
    day: datetime | str, config: FleetConfig = FleetConfig(), *, seed: int = 0
) -> tuple[tuple[Vehicle, ...], tuple[Session, ...]]:
    """One day's vehicles and sessions (one session per vehicle), reproducible from ``seed``."""
    horizon = Horizon.day(day, config.interval_minutes)
    elaad, general, v2g_models = _data()
    rng = np.random.default_rng([seed, horizon.start.toordinal()])
    n = config.n_evs
    weekend = horizon.start.weekday() >= 5
    arrivals = elaad.arrival_weekend if weekend else elaad.arrival_weekday
    column = config.charger_type if config.charger_type in arrivals.columns else "public"
    share = arrivals[column].to_numpy() / arrivals[column].sum()
    slot = rng.choice(96, size=n, p=share)
    joint = elaad.duration_given_hour
    bins = np.array([rng.choice(48, p=joint[h]) for h in slot // 4], dtype=np.int64)
    quarters = 2 * bins + rng.integers(1, 3, size=n)
    quantiles = elaad.energy_demand_kwh[config.charger_type].to_numpy()
    energy = np.maximum(np.interp(rng.uniform(0, 100, size=n), np.arange(101), quantiles), 1.0)
    is_v2g = rng.uniform(size=n) < config.v2g_share
    pick_v2g = rng.choice(len(v2g_models), size=n, p=_weights(v2g_models))
    pick_general = rng.choice(len(general), size=n, p=_weights(general))
    soc0 = rng.uniform(*config.arrival_soc, size=n)

    step_min = 15  # ElaadNL arrival slots
    day_end = horizon.end
    vehicles = []
    sessions = []
    for i in range(n):
        model = v2g_models[pick_v2g[i]] if is_v2g[i] else general[pick_general[i]]
        charge_kw = min(config.charger_kw, model.max_ac_charge_kw)
        discharge_kw = min(config.charger_kw, model.max_ac_discharge_kw) if is_v2g[i] else 0.0
        vehicle = Vehicle(
            id=f"EV{i:05d}",
            owner=f"owner-{i:05d}",
            battery_kwh=model.battery_kwh,
            charge_kw=charge_kw,
            discharge_kw=discharge_kw,
            soc_min=config.soc_min,
            soc_max=config.soc_max,
            eta_charge=config.eta,
            eta_discharge=config.eta,
            model=model.name,
        )
        arrival = horizon.start + timedelta(minutes=step_min * int(slot[i]))
        departure = arrival + timedelta(minutes=step_min * int(quarters[i]))
        if config.clip_to_day:
            departure = min(departure, day_end)
        plugged_h = (departure - arrival).total_seconds() / 3600.0
        e0 = float(soc0[i]) * model.battery_kwh
        deliverable = e0 + config.eta * charge_kw * plugged_h
        target = min(e0 + float(energy[i]), vehicle.max_kwh, deliverable)
        vehicles.append(vehicle)
        sessions.append(
            Session(f"{vehicle.id}-{horizon.start:%Y%m%d}", vehicle.id, arrival, departure, e0, target)
        )
    return tuple(vehicles), tuple(sessions)


def fleet_problem(
    day: datetime | str,
    hourly_prices_eur_mwh: object,
    config: FleetConfig = FleetConfig(),
    *,
    seed: int = 0,
    sell_spread_eur_mwh: float = 0.0,
) -> Problem:
    """One day's fleet as a :class:`Problem` on one site (limits ±``site_kw_per_ev`` per EV), over
    ``config.horizon_hours`` from the day's start, or up to the last hour ``hourly_prices_eur_mwh``
    holds if that comes first (never less than the day)."""
    import pandas as pd

    if not isinstance(hourly_prices_eur_mwh, pd.Series):
        raise InvalidParameterError("hourly prices must be a pandas Series with a UTC index")
    day_horizon = Horizon.day(day, config.interval_minutes)
    index = pd.DatetimeIndex(hourly_prices_eur_mwh.index)
    if len(index) == 0 or not (index.min() <= pd.Timestamp(day_horizon.start) <= index.max()):
        covered = f"{index.min():%Y-%m-%d} to {index.max():%Y-%m-%d}" if len(index) else "nothing"
        raise DateOutOfRangeError(
            f"no prices for {day_horizon.start:%Y-%m-%d}: the price series covers {covered}"
        )
    n_t = config.horizon_hours * 60 // config.interval_minutes
    if config.horizon_hours > 24 and len(hourly_prices_eur_mwh):
        last = pd.Timestamp(hourly_prices_eur_mwh.index.max()) + pd.Timedelta(hours=1)
        available = int(
            (last - pd.Timestamp(day_horizon.start)) / pd.Timedelta(minutes=config.interval_minutes)
        )
        n_t = max(day_horizon.intervals, min(n_t, available))
    horizon = Horizon(day_horizon.start, n_t, config.interval_minutes)
    vehicles, sessions = generate_fleet(day, config, seed=seed)
    limit = config.site_kw_per_ev * max(config.n_evs, 1)
    return Problem(
        horizon=horizon,
        vehicles=vehicles,
        sessions=sessions,
        site=Site.build(horizon, limit, limit),
        prices=Prices.from_hourly(horizon, hourly_prices_eur_mwh, sell_spread_eur_mwh),
        degradation_eur_kwh=config.degradation_eur_kwh,
        degradation_basis=config.degradation_basis,
    )


__all__ = ["UTC", "FleetConfig", "fleet_problem", "generate_fleet"]
