"""Grid tariffs: what a site really pays beyond the day-ahead price, in the objective and in the bill.

A :class:`Tariff` (read from a TOML file by :func:`load_tariff`; a worked Dutch example is
``scheduler/data/tariffs/nl_example.toml``) has, per kWh imported, a supplier's fee, an energy tax and a
network charge that may depend on the local time of day (time-of-use); VAT on the import side (a
business deducts it, then it is no cost); a feed-in price of ``factor × day-ahead − fee``; and a capacity
charge per kW of each billing period's peak import (a month or a day, in local time).

In the optimisation every per-kWh term is linear, so it is folded into the interval's buy and sell prices
(:meth:`Tariff.prices`), and the capacity charge is a :class:`~scheduler.inputs.PeakCharge`: one variable
per billing period (:meth:`Tariff.peak_charge`), exact. :meth:`Tariff.bill` splits what a schedule costs
into the tariff's components.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from scheduler.errors import DataFileError, InvalidParameterError
from scheduler.inputs import FloatArray, Horizon, PeakCharge, Prices, Problem

TARIFFS = Path(__file__).resolve().parent / "data" / "tariffs"
NL_EXAMPLE = TARIFFS / "nl_example.toml"

BillingPeriod = Literal["month", "day"]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class TimeOfUse:
    """A network rate that replaces the default on ``days`` from ``start`` to ``end`` (local time)."""

    name: str
    days: tuple[int, ...]  # 0 = Monday
    start: time
    end: time
    eur_kwh: float

    def applies(self, local: pd.DatetimeIndex) -> np.ndarray:
        """Per local time, whether the rate applies (an interval is rated by its start)."""
        minutes = local.hour * 60 + local.minute
        lo = self.start.hour * 60 + self.start.minute
        hi = self.end.hour * 60 + self.end.minute
        in_hours = (minutes >= lo) & (minutes < hi) if lo < hi else (minutes >= lo) | (minutes < hi)
        return np.asarray(np.isin(local.day_of_week, self.days) & in_hours)


@dataclass(frozen=True)
class Tariff:
    """The non-market part of a site's bill (EUR excl. VAT; see the module's docstring)."""

    name: str
    timezone: str = "Europe/Amsterdam"
    import_fee_eur_kwh: float = 0.0
    feed_in_factor: float = 1.0
    feed_in_fee_eur_kwh: float = 0.0
    energy_tax_eur_kwh: float = 0.0
    vat_rate: float = 0.0
    vat_deductible: bool = True
    capacity_eur_per_kw: float = 0.0
    capacity_period: BillingPeriod = "month"
    network_eur_kwh: float = 0.0
    time_of_use: tuple[TimeOfUse, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        numbers = {
            "import_fee_eur_kwh": self.import_fee_eur_kwh,
            "feed_in_factor": self.feed_in_factor,
            "feed_in_fee_eur_kwh": self.feed_in_fee_eur_kwh,
            "energy_tax_eur_kwh": self.energy_tax_eur_kwh,
            "vat_rate": self.vat_rate,
            "capacity_eur_per_kw": self.capacity_eur_per_kw,
            "network_eur_kwh": self.network_eur_kwh,
        }
        numbers.update({f"time_of_use {p.name!r} eur_kwh": p.eur_kwh for p in self.time_of_use})
        for key, value in numbers.items():
            if not math.isfinite(value):
                raise InvalidParameterError(f"tariff {self.name!r}: {key} = {value} is not finite")
        for key in ("vat_rate", "capacity_eur_per_kw", "feed_in_factor"):
            if numbers[key] < 0:
                raise InvalidParameterError(f"tariff {self.name!r}: {key} = {numbers[key]} must be >= 0")
        if self.capacity_period not in ("month", "day"):
            raise InvalidParameterError(
                f"tariff {self.name!r}: capacity period {self.capacity_period!r} must be 'month' or 'day'"
            )

    # --- per interval -----------------------------------------------------------------------------
    @property
    def vat_factor(self) -> float:
        """What the import side costs per EUR excl. VAT: 1 when VAT is deducted, 1 + rate otherwise."""
        return 1.0 if self.vat_deductible else 1.0 + self.vat_rate

    def network_rate(self, timestamps: pd.DatetimeIndex) -> FloatArray:
        """Network charge per kWh imported, per interval start (UTC stamps, rated in local time)."""
        local = pd.DatetimeIndex(timestamps).tz_convert(self.timezone)
        rate = np.full(len(local), self.network_eur_kwh)
        for period in self.time_of_use:  # later entries win where they overlap
            rate[period.applies(local)] = period.eur_kwh
        return rate

    def prices(
        self, day_ahead_eur_mwh: FloatArray, timestamps: pd.DatetimeIndex
    ) -> tuple[FloatArray, FloatArray]:
        """All-in buy and sell prices (EUR/MWh) per interval from day-ahead prices: buy = (day-ahead +
        1000·(fee + tax + network))·VAT factor; sell = factor·day-ahead − 1000·feed-in fee."""
        da = np.asarray(day_ahead_eur_mwh, dtype=np.float64)
        adders = self.import_fee_eur_kwh + self.energy_tax_eur_kwh + self.network_rate(timestamps)
        buy = (da + 1000.0 * adders) * self.vat_factor
        sell = self.feed_in_factor * da - 1000.0 * self.feed_in_fee_eur_kwh
        return buy, sell

    def billing_periods(self, timestamps: pd.DatetimeIndex) -> list[str]:
        """The billing period of each interval start: its local month (``2023-01``) or day
        (``2023-01-05``)."""
        local = pd.DatetimeIndex(timestamps).tz_convert(self.timezone)
        return list(local.strftime("%Y-%m" if self.capacity_period == "month" else "%Y-%m-%d"))

    def period_hours(self, label: str) -> float:
        """The hours of the billing period ``label`` (:func:`local_period_hours`)."""
        return local_period_hours(label, self.timezone, self.capacity_period)

    def peak_charge(
        self, horizon: Horizon, peak_so_far_kw: Mapping[str, float] | None = None
    ) -> PeakCharge | None:
        """The capacity charge over ``horizon`` given the peaks its billing periods reached before it
        (None when the tariff has no capacity charge)."""
        if self.capacity_eur_per_kw == 0:
            return None
        labels = self.billing_periods(horizon.timestamps)
        return PeakCharge.build(horizon, labels, self.capacity_eur_per_kw, dict(peak_so_far_kw or {}))

    def apply(self, problem: Problem, peak_so_far_kw: Mapping[str, float] | None = None) -> Problem:
        """``problem`` (its prices are day-ahead prices) with all-in prices and the capacity charge."""
        buy, sell = self.prices(problem.prices.buy_eur_mwh, problem.horizon.timestamps)
        if not np.array_equal(problem.prices.buy_eur_mwh, problem.prices.sell_eur_mwh):
            sell = self.feed_in_factor * problem.prices.sell_eur_mwh - 1000.0 * self.feed_in_fee_eur_kwh
        return replace(
            problem,
            prices=Prices.build(problem.horizon, buy, sell),
            peak_charge=self.peak_charge(problem.horizon, peak_so_far_kw),
        )

    # --- the bill -----------------------------------------------------------------------------------
    def bill(
        self,
        import_kw: FloatArray,
        export_kw: FloatArray,
        day_ahead_eur_mwh: FloatArray,
        timestamps: pd.DatetimeIndex,
        dt_h: float,
    ) -> dict[str, float]:
        """The energy part of the bill by component (EUR): ``energy`` (day-ahead), ``supplier_fee``,
        ``energy_tax``, ``network_energy``, ``vat`` (0 when deducted; ``vat_deducted`` shows it), and
        ``feed_in`` (revenue, positive). The capacity charge depends on whole billing periods, see
        :meth:`capacity_charge`."""
        imported = np.asarray(import_kw, dtype=np.float64) * dt_h
        exported = np.asarray(export_kw, dtype=np.float64) * dt_h
        da = np.asarray(day_ahead_eur_mwh, dtype=np.float64) / 1000.0
        parts = {
            "energy": float(np.dot(da, imported)),
            "supplier_fee": self.import_fee_eur_kwh * float(imported.sum()),
            "energy_tax": self.energy_tax_eur_kwh * float(imported.sum()),
            "network_energy": float(np.dot(self.network_rate(timestamps), imported)),
        }
        taxable = sum(parts.values())
        parts["vat"] = 0.0 if self.vat_deductible else self.vat_rate * taxable
        parts["vat_deducted"] = self.vat_rate * taxable if self.vat_deductible else 0.0
        parts["feed_in"] = float(np.dot(self.feed_in_factor * da - self.feed_in_fee_eur_kwh, exported))
        return parts

    def capacity_charge(self, peaks_kw: Mapping[str, float]) -> float:
        """EUR for the billing periods' peak imports (kW by label), VAT included when not deducted."""
        return self.capacity_eur_per_kw * float(sum(peaks_kw.values())) * self.vat_factor


def local_period_hours(label: str, timezone: str, period: str = "month") -> float:
    """The hours of a local ``month`` (``2023-03``: 743 h with the clocks going forward) or ``day``
    (``2023-03-26``: 23 h) in ``timezone``."""
    first = pd.Timestamp(label if period == "day" else f"{label}-01").tz_localize(timezone)
    after = first + (pd.DateOffset(months=1) if period == "month" else pd.DateOffset(days=1))
    return float((after - first) / pd.Timedelta(hours=1))


def _clock(value: Any, path: Path, where: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError as exc:
        raise DataFileError(path, None, f"{where}: {value!r} is not a time of day (HH:MM)") from exc


def load_tariff(path: Path | str = NL_EXAMPLE) -> Tariff:
    """A :class:`Tariff` from a TOML file (see ``scheduler/data/tariffs/nl_example.toml`` for the keys);
    a file that cannot be read or holds an unknown key or a bad value raises a named error."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(path, None, f"cannot read the tariff file ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(path, None, f"not valid TOML ({exc})") from exc
    known = {"name", "timezone", "sources", "supply", "taxes", "capacity", "network"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataFileError(path, None, f"unknown key(s) {', '.join(unknown)}")
    supply, taxes = data.get("supply", {}), data.get("taxes", {})
    capacity, network = data.get("capacity", {}), data.get("network", {})
    periods = []
    for i, entry in enumerate(network.get("time_of_use", [])):
        where = f"network.time_of_use[{i}]"
        days = entry.get("days", list(DAYS))
        bad = [d for d in days if d not in DAYS]
        if bad:
            raise DataFileError(path, None, f"{where}: unknown day(s) {bad}; use {', '.join(DAYS)}")
        periods.append(
            TimeOfUse(
                name=str(entry.get("name", f"period {i}")),
                days=tuple(DAYS.index(d) for d in days),
                start=_clock(entry.get("from", "00:00"), path, where),
                end=_clock(entry.get("to", "00:00"), path, where),
                eur_kwh=float(entry.get("eur_kwh", math.nan)),
            )
        )
    try:
        return Tariff(
            name=str(data.get("name", path.stem)),
            timezone=str(data.get("timezone", "Europe/Amsterdam")),
            import_fee_eur_kwh=float(supply.get("import_fee_eur_kwh", 0.0)),
            feed_in_factor=float(supply.get("feed_in_factor", 1.0)),
            feed_in_fee_eur_kwh=float(supply.get("feed_in_fee_eur_kwh", 0.0)),
            energy_tax_eur_kwh=float(taxes.get("energy_tax_eur_kwh", 0.0)),
            vat_rate=float(taxes.get("vat_rate", 0.0)),
            vat_deductible=bool(taxes.get("vat_deductible", True)),
            capacity_eur_per_kw=float(capacity.get("eur_per_kw", 0.0)),
            capacity_period=capacity.get("period", "month"),
            network_eur_kwh=float(network.get("eur_kwh", 0.0)),
            time_of_use=tuple(periods),
            sources=tuple(str(s) for s in data.get("sources", ())),
        )
    except (InvalidParameterError, ValueError, TypeError) as exc:
        raise DataFileError(path, None, str(exc)) from exc
