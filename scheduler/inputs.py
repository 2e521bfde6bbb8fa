"""Typed scheduling inputs: fleet, plug-in sessions, site, prices, DR events.

Units inside the scheduler: kW, kWh, EUR/MWh as floats; time in UTC with
intervals of ``Horizon.interval_minutes`` named by their start. Every input is
validated when it is built, with a named error from :mod:`scheduler.errors`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from scheduler.errors import (
    DepartureBeforeArrivalError,
    DuplicateIdError,
    InputError,
    InvalidDateError,
    InvalidParameterError,
    MisalignedIntervalError,
    NonFiniteValueError,
    OverlappingSessionsError,
    TargetAboveCapacityError,
    UnknownVehicleError,
)

FloatArray = np.ndarray
DegradationBasis = Literal["throughput", "discharge"]


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what} {value.isoformat()} has no time zone; give UTC times")
    return value.astimezone(UTC)


def _finite_array(values: Sequence[float] | FloatArray | float, n: int, what: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n, float(array))
    if array.shape != (n,):
        raise MisalignedIntervalError(f"{what} has {array.size} values for {n} intervals")
    if not np.isfinite(array).all():
        i = int(np.flatnonzero(~np.isfinite(array))[0])
        raise NonFiniteValueError(f"{what} is {array[i]} in interval {i}")
    array.setflags(write=False)
    return array


def parse_day(text: str) -> datetime:
    """A UTC midnight from ``YYYY-MM-DD`` (or an ISO 8601 date-time, its UTC day); anything else, such as
    ``2023-13-45``, ``2023-02-30`` or ``yesterday``, raises :class:`InvalidDateError` saying why."""
    try:
        return datetime.combine(date.fromisoformat(text.strip()), time(), UTC)
    except ValueError as first:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise InvalidDateError(f"{text!r} is not a date (YYYY-MM-DD): {first}") from first
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return datetime.combine(moment.date(), time(), UTC)


@dataclass(frozen=True)
class Horizon:
    """``intervals`` consecutive intervals of ``interval_minutes`` from ``start`` (UTC)."""

    start: datetime
    intervals: int
    interval_minutes: int = 15

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "horizon start"))
        if self.intervals <= 0:
            raise InvalidParameterError(f"horizon needs at least one interval, got {self.intervals}")
        if self.interval_minutes <= 0 or 60 % self.interval_minutes:
            raise InvalidParameterError(f"interval of {self.interval_minutes} min does not divide an hour")
        if (self.start.minute * 60 + self.start.second) % (
            self.interval_minutes * 60
        ) or self.start.microsecond:
            raise MisalignedIntervalError(
                f"horizon start {self.start.isoformat()} is not on a {self.interval_minutes}-min boundary"
            )

    @classmethod
    def day(cls, day: str | datetime, interval_minutes: int = 15) -> Horizon:
        """One UTC day from midnight (``day``: ``YYYY-MM-DD`` or a datetime)."""
        start = parse_day(day) if isinstance(day, str) else day
        return cls(start, 1440 // interval_minutes, interval_minutes)

    @property
    def dt_h(self) -> float:
        return self.interval_minutes / 60.0

    @property
    def step(self) -> timedelta:
        return timedelta(minutes=self.interval_minutes)

    @property
    def end(self) -> datetime:
        return self.start + self.intervals * self.step

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        return pd.date_range(
            self.start, periods=self.intervals, freq=f"{self.interval_minutes}min", name="utc"
        )

    def offset(self, when: datetime) -> float:
        """Position of ``when`` in intervals from the start (fractional)."""
        return (_utc(when, "time") - self.start) / self.step


@dataclass(frozen=True)
class Vehicle:
    """A vehicle of the fleet and its charge point. SoC bounds are fractions of ``battery_kwh``."""

    id: str
    owner: str
    battery_kwh: float
    charge_kw: float
    discharge_kw: float = 0.0
    soc_min: float = 0.0
    soc_max: float = 1.0
    eta_charge: float = 0.95
    eta_discharge: float = 0.95
    model: str = ""

    def __post_init__(self) -> None:
        numbers = (
            self.battery_kwh,
            self.charge_kw,
            self.discharge_kw,
            self.soc_min,
            self.soc_max,
            self.eta_charge,
            self.eta_discharge,
        )
        if not all(math.isfinite(x) for x in numbers):
            raise InvalidParameterError(f"vehicle {self.id}: non-finite parameter in {numbers}")
        checks = {
            "battery_kwh > 0": self.battery_kwh > 0,
            "charge_kw > 0": self.charge_kw > 0,
            "discharge_kw >= 0": self.discharge_kw >= 0,
            "0 <= soc_min <= soc_max <= 1": 0 <= self.soc_min <= self.soc_max <= 1,
            "0 < eta_charge <= 1": 0 < self.eta_charge <= 1,
            "0 < eta_discharge <= 1": 0 < self.eta_discharge <= 1,
        }
        for rule, ok in checks.items():
            if not ok:
                raise InvalidParameterError(f"vehicle {self.id}: needs {rule}")
        if not self.owner:
            raise InvalidParameterError(f"vehicle {self.id}: no owner")

    @property
    def v2g(self) -> bool:
        """Whether the vehicle can discharge to the grid."""
        return self.discharge_kw > 0

    @property
    def min_kwh(self) -> float:
        return self.soc_min * self.battery_kwh

    @property
    def max_kwh(self) -> float:
        return self.soc_max * self.battery_kwh


@dataclass(frozen=True)
class Session:
    """One plug-in: the vehicle is available from ``arrival`` to ``departure`` (UTC).

    ``arrival_kwh`` is the energy in the battery at arrival (or at the horizon
    start for a session already plugged in); ``target_kwh`` the energy the owner
    asked to have at departure.
    """

    id: str
    vehicle_id: str
    arrival: datetime
    departure: datetime
    arrival_kwh: float
    target_kwh: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "arrival", _utc(self.arrival, f"session {self.id} arrival"))
        object.__setattr__(self, "departure", _utc(self.departure, f"session {self.id} departure"))
        if self.departure <= self.arrival:
            raise DepartureBeforeArrivalError(
                f"session {self.id}: departure {self.departure.isoformat()} is not after arrival "
                f"{self.arrival.isoformat()}"
            )
        for name in ("arrival_kwh", "target_kwh"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidParameterError(f"session {self.id}: {name} = {value} must be finite and >= 0")

    @classmethod
    def from_energy(
        cls,
        id: str,
        vehicle: Vehicle,
        arrival: datetime,
        departure: datetime,
        arrival_kwh: float,
        energy_kwh: float,
    ) -> Session:
        """A session asking for ``energy_kwh`` more than it arrives with."""
        if energy_kwh < 0:
            raise InvalidParameterError(f"session {id}: requested energy {energy_kwh} kWh is negative")
        return cls(id, vehicle.id, arrival, departure, arrival_kwh, arrival_kwh + energy_kwh)


@dataclass(frozen=True)
class Site:
    """The site's grid connection per interval: import and export limits, base load and PV (kW)."""

    import_limit_kw: FloatArray
    export_limit_kw: FloatArray
    base_load_kw: FloatArray
    pv_kw: FloatArray

    @classmethod
    def build(
        cls,
        horizon: Horizon,
        import_limit_kw: Sequence[float] | FloatArray | float,
        export_limit_kw: Sequence[float] | FloatArray | float,
        base_load_kw: Sequence[float] | FloatArray | float = 0.0,
        pv_kw: Sequence[float] | FloatArray | float = 0.0,
    ) -> Site:
        n = horizon.intervals
        site = cls(
            _finite_array(import_limit_kw, n, "site import limit"),
            _finite_array(export_limit_kw, n, "site export limit"),
            _finite_array(base_load_kw, n, "site base load"),
            _finite_array(pv_kw, n, "site PV"),
        )
        for name in ("import_limit_kw", "export_limit_kw", "base_load_kw", "pv_kw"):
            if (getattr(site, name) < 0).any():
                raise InvalidParameterError(f"site {name} must be >= 0")
        return site


@dataclass(frozen=True)
class Prices:
    """Buy (import) and sell (export) prices per interval, EUR/MWh."""

    buy_eur_mwh: FloatArray
    sell_eur_mwh: FloatArray

    @classmethod
    def build(
        cls,
        horizon: Horizon,
        buy: Sequence[float] | FloatArray,
        sell: Sequence[float] | FloatArray | None = None,
    ) -> Prices:
        n = horizon.intervals
        buy_array = _finite_array(buy, n, "buy price")
        return cls(buy_array, buy_array if sell is None else _finite_array(sell, n, "sell price"))

    @classmethod
    def from_hourly(
        cls, horizon: Horizon, hourly_eur_mwh: pd.Series, sell_spread_eur_mwh: float = 0.0
    ) -> Prices:
        """Expand an hourly series (UTC index) to the horizon; sell = buy − spread.

        Raises :class:`MisalignedIntervalError` if an interval's hour is absent.
        """
        hours = horizon.timestamps.floor("h")
        missing = hours.difference(pd.DatetimeIndex(hourly_eur_mwh.index))
        if len(missing):
            raise MisalignedIntervalError(
                f"no price for hour {missing[0].isoformat()} ({len(missing)} hour(s) of the horizon missing)"
            )
        buy = hourly_eur_mwh.reindex(hours).to_numpy(dtype=np.float64)
        return cls.build(horizon, buy, buy - sell_spread_eur_mwh)


@dataclass(frozen=True)
class DREvent:
    """A demand-response event (OpenADR-style): from ``start`` for ``duration``, import ≤ ``import_limit_kw``.

    It applies to every interval that overlaps its window, so compliance never
    depends on where inside an interval the event begins.
    """

    id: str
    start: datetime
    duration: timedelta
    import_limit_kw: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, f"DR event {self.id} start"))
        if self.duration <= timedelta(0):
            raise InvalidParameterError(f"DR event {self.id}: duration must be positive")
        if not math.isfinite(self.import_limit_kw) or self.import_limit_kw < 0:
            raise InvalidParameterError(
                f"DR event {self.id}: import limit {self.import_limit_kw} kW must be >= 0"
            )

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    def mask(self, horizon: Horizon) -> np.ndarray:
        """Boolean per interval: does the event overlap it?"""
        starts = np.arange(horizon.intervals)
        lo, hi = horizon.offset(self.start), horizon.offset(self.end)
        return (starts + 1 > lo) & (starts < hi)


@dataclass(frozen=True)
class PeakCharge:
    """A capacity charge on the site's peak import (a network operator's kW-max tariff).

    Per billing period ``b`` (a month or a day), ``eur_per_kw`` times the highest import in ``b`` (the
    mean kW of an interval, as an interval meter reads it). ``period_of[t]`` is the billing period of
    interval ``t`` (an index into ``labels``, such as ``"2023-01"``); ``peak_so_far_kw[b]`` is the peak
    that ``b`` already reached before the horizon, so a plan pays only for raising it:
    ``eur_per_kw · (max(peak_so_far_kw[b], max_{t∈b} import[t]) − peak_so_far_kw[b])``.
    """

    labels: tuple[str, ...]
    period_of: np.ndarray
    eur_per_kw: float
    peak_so_far_kw: FloatArray

    @classmethod
    def build(
        cls,
        horizon: Horizon,
        period_labels: Sequence[str],
        eur_per_kw: float,
        peak_so_far_kw: dict[str, float] | None = None,
    ) -> PeakCharge:
        """From one billing-period label per interval of ``horizon`` and the peaks reached so far by label."""
        if len(period_labels) != horizon.intervals:
            raise MisalignedIntervalError(
                f"peak charge has {len(period_labels)} billing-period labels for "
                f"{horizon.intervals} intervals"
            )
        if not math.isfinite(eur_per_kw) or eur_per_kw < 0:
            raise InvalidParameterError(f"peak charge {eur_per_kw} EUR/kW must be finite and >= 0")
        labels = tuple(dict.fromkeys(period_labels))
        position = {label: b for b, label in enumerate(labels)}
        period_of = np.array([position[label] for label in period_labels], dtype=np.int64)
        so_far = peak_so_far_kw or {}
        floor = np.array([float(so_far.get(label, 0.0)) for label in labels], dtype=np.float64)
        if not np.isfinite(floor).all() or (floor < 0).any():
            raise InvalidParameterError(f"peaks so far {so_far} must be finite and >= 0 kW")
        period_of.setflags(write=False)
        floor.setflags(write=False)
        return cls(labels, period_of, float(eur_per_kw), floor)

    def cost_eur(self, import_kw: FloatArray) -> float:
        """What ``import_kw`` (per interval of the horizon) adds to the charge: Σ_b c·(peak_b − so far_b)⁺."""
        return float(self.eur_per_kw * np.sum(self.raised_kw(import_kw)))

    def peaks_kw(self, import_kw: FloatArray) -> FloatArray:
        """Per billing period, the highest import of ``import_kw`` in it (0 when it imports nothing)."""
        peaks = np.zeros(len(self.labels))
        np.maximum.at(peaks, self.period_of, np.asarray(import_kw, dtype=np.float64))
        return peaks

    def raised_kw(self, import_kw: FloatArray) -> FloatArray:
        """Per billing period, how far ``import_kw`` raises its peak above the peak so far."""
        return np.asarray(np.maximum(self.peaks_kw(import_kw) - self.peak_so_far_kw, 0.0))


@dataclass(frozen=True)
class Problem:
    """Everything one scheduling run needs.

    ``shortfall_penalty_eur_kwh`` of ``None`` makes departure targets hard;
    a number makes each missing kWh cost that much instead.
    ``degradation_basis``: battery wear ``degradation_eur_kwh`` is charged per kWh
    of ``"throughput"`` (charged plus discharged) or per kWh discharged only (``"discharge"``:
    the wear V2G adds on top of the charging an owner needs anyway).
    """

    horizon: Horizon
    vehicles: tuple[Vehicle, ...]
    sessions: tuple[Session, ...]
    site: Site
    prices: Prices
    dr_events: tuple[DREvent, ...] = ()
    degradation_eur_kwh: float = 0.0
    shortfall_penalty_eur_kwh: float | None = None
    degradation_basis: DegradationBasis = "throughput"
    #: a capacity charge on the peak import per billing period (see :class:`PeakCharge`), or none
    peak_charge: PeakCharge | None = None
    vehicle_by_id: dict[str, Vehicle] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.horizon.intervals
        for name, array in (
            ("site import limit", self.site.import_limit_kw),
            ("buy price", self.prices.buy_eur_mwh),
            ("sell price", self.prices.sell_eur_mwh),
        ):
            if len(array) != n:
                raise MisalignedIntervalError(f"{name} has {len(array)} values for {n} intervals")
        if self.peak_charge is not None and len(self.peak_charge.period_of) != n:
            raise MisalignedIntervalError(
                f"peak charge has {len(self.peak_charge.period_of)} billing-period labels for {n} intervals"
            )
        if not math.isfinite(self.degradation_eur_kwh) or self.degradation_eur_kwh < 0:
            raise InvalidParameterError(f"degradation cost {self.degradation_eur_kwh} EUR/kWh must be >= 0")
        if self.degradation_basis not in ("throughput", "discharge"):
            raise InvalidParameterError(
                f"degradation basis {self.degradation_basis!r} must be 'throughput' or 'discharge'"
            )
        penalty = self.shortfall_penalty_eur_kwh
        if penalty is not None and (not math.isfinite(penalty) or penalty <= 0):
            raise InvalidParameterError(f"shortfall penalty {penalty} EUR/kWh must be > 0")
        vehicles: dict[str, Vehicle] = {}
        for vehicle in self.vehicles:
            if vehicle.id in vehicles:
                raise DuplicateIdError(f"vehicle id {vehicle.id} appears twice")
            vehicles[vehicle.id] = vehicle
        object.__setattr__(self, "vehicle_by_id", vehicles)
        seen: set[str] = set()
        by_vehicle: dict[str, list[Session]] = {}
        for session in self.sessions:
            if session.id in seen:
                raise DuplicateIdError(f"session id {session.id} appears twice")
            seen.add(session.id)
            if session.vehicle_id not in vehicles:
                raise UnknownVehicleError(f"session {session.id}: unknown vehicle {session.vehicle_id!r}")
            vehicle = vehicles[session.vehicle_id]
            if session.target_kwh > vehicle.max_kwh + 1e-9:
                raise TargetAboveCapacityError(
                    f"session {session.id}: target {session.target_kwh:.3f} kWh above vehicle {vehicle.id}'s "
                    f"usable maximum {vehicle.max_kwh:.3f} kWh"
                )
            if session.arrival_kwh > vehicle.battery_kwh + 1e-9:
                raise TargetAboveCapacityError(
                    f"session {session.id}: arrival energy {session.arrival_kwh:.3f} kWh above battery "
                    f"{vehicle.battery_kwh:.3f} kWh"
                )
            by_vehicle.setdefault(session.vehicle_id, []).append(session)
        for vehicle_id, sessions in by_vehicle.items():
            ordered = sorted(sessions, key=lambda s: s.arrival)
            for a, b in itertools.pairwise(ordered):
                if b.arrival < a.departure:
                    raise OverlappingSessionsError(
                        f"vehicle {vehicle_id}: sessions {a.id} and {b.id} overlap"
                    )

    @property
    def import_limit_kw(self) -> FloatArray:
        """The site import limit per interval with every DR event applied."""
        limit = self.site.import_limit_kw.copy()
        for event in self.dr_events:
            mask = event.mask(self.horizon)
            limit[mask] = np.minimum(limit[mask], event.import_limit_kw)
        return limit

    def without_discharge(self) -> Problem:
        """The same problem with every vehicle's discharge forbidden (smart charging)."""
        from dataclasses import replace

        vehicles = tuple(replace(v, discharge_kw=0.0) for v in self.vehicles)
        return replace(self, vehicles=vehicles)
