"""Loaders of the real public data shipped in ``scheduler/data`` (see its README).

Each loader validates what it reads and raises a named
:class:`~scheduler.errors.DataFileError` subclass naming the file, the line and
the problem. Nothing is silently repaired: price gaps are filled or skipped
only as the caller asks, and every gap is reported.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from scheduler.errors import (
    DataFileError,
    DistributionError,
    DuplicateTimestampError,
    MalformedTimestampError,
    MissingColumnError,
    NonNumericValueError,
    PriceGapError,
    SpecError,
    UnsortedTimestampError,
)

if TYPE_CHECKING:
    from scheduler.inputs import DREvent

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
PRICES_NL = DATA_DIR / "nl" / "nl_day_ahead_2015_2023.csv"
ELAAD_DIR = DATA_DIR / "elaad"
EV_SPECS = DATA_DIR / "ev_specs.json"
EV_SPECS_V2G = DATA_DIR / "ev_specs_v2g_enabled2024.json"

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
GapPolicy = Literal["interpolate", "ffill", "skip", "error"]

# Header is line 1, so the first data row (pandas index 0) is line 2.
_FIRST_DATA_LINE = 2


# --- prices -----------------------------------------------------------------


@dataclass(frozen=True)
class PriceGap:
    """A run of missing hours: ``start`` is the first missing hour (UTC)."""

    start: pd.Timestamp
    hours: int


@dataclass(frozen=True)
class PriceSeries:
    """Hourly day-ahead prices in EUR/MWh on a UTC index, with the gaps found and how they were handled."""

    eur_mwh: pd.Series
    gaps: tuple[PriceGap, ...] = field(default=())
    gap_policy: GapPolicy = "interpolate"
    source: Path | None = None

    def window(self, start: datetime | str, end: datetime | str) -> pd.Series:
        """Prices with ``start <= t < end`` (UTC)."""
        lo, hi = pd.Timestamp(start), pd.Timestamp(end)
        lo = lo.tz_localize("UTC") if lo.tzinfo is None else lo.tz_convert("UTC")
        hi = hi.tz_localize("UTC") if hi.tzinfo is None else hi.tz_convert("UTC")
        return self.eur_mwh[(self.eur_mwh.index >= lo) & (self.eur_mwh.index < hi)]


def _require_columns(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        if column not in frame.columns:
            raise MissingColumnError(path, 1, f"missing column {column!r} (header has {list(frame.columns)})")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except OSError as exc:  # missing, a directory, not permitted
        raise DataFileError(path, None, f"cannot read the file: {exc.strerror or exc}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFileError(path, None, f"not a readable CSV file: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _numeric(path: Path, frame: pd.DataFrame, column: str, *, allow_empty: bool = False) -> np.ndarray:
    """Column as float64; the first non-numeric or non-finite cell raises with its line."""
    raw = frame[column].str.strip()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if allow_empty:
        bad &= raw.to_numpy() != ""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NonNumericValueError(
            path, i + _FIRST_DATA_LINE, f"{column} is {frame[column].iloc[i]!r}, not a finite number"
        )
    return values


def load_prices(
    path: Path | str = PRICES_NL,
    *,
    gap_policy: GapPolicy = "interpolate",
    time_column: str = "utc",
    price_column: str = "eur_mwh",
) -> PriceSeries:
    """Read an hourly day-ahead price CSV (``utc,eur_mwh``; UTC start of hour).

    Rejects a missing column, a malformed timestamp, a non-numeric price, a
    duplicate hour and timestamps out of order, each with its line. Negative
    prices are kept. Missing hours are reported in ``gaps`` and, by
    ``gap_policy``: linearly ``interpolate``\\d, forward-filled (``ffill``),
    left out (``skip``), or raised as :class:`PriceGapError` (``error``).
    """
    path = Path(path)
    frame = _read_csv(path)
    _require_columns(path, frame, [time_column, price_column])
    times = pd.to_datetime(frame[time_column].str.strip(), format=TIMESTAMP_FORMAT, errors="coerce", utc=True)
    bad_time = times.isna().to_numpy()
    if bad_time.any():
        i = int(np.flatnonzero(bad_time)[0])
        raise MalformedTimestampError(
            path,
            i + _FIRST_DATA_LINE,
            f"{time_column} is {frame[time_column].iloc[i]!r}, expected {TIMESTAMP_FORMAT} (UTC)",
        )
    prices = _numeric(path, frame, price_column)
    stamps = times.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    not_hour = stamps % (3600 * 10**9) != 0
    if not_hour.any():
        i = int(np.flatnonzero(not_hour)[0])
        raise MalformedTimestampError(
            path, i + _FIRST_DATA_LINE, f"{frame[time_column].iloc[i]!r} is not the start of an hour"
        )
    step = np.diff(stamps)
    if (step == 0).any():
        i = int(np.flatnonzero(step == 0)[0]) + 1
        first = int(np.flatnonzero(stamps == stamps[i])[0])
        raise DuplicateTimestampError(
            path,
            i + _FIRST_DATA_LINE,
            f"hour {frame[time_column].iloc[i]} repeats line {first + _FIRST_DATA_LINE}",
        )
    if (step < 0).any():
        i = int(np.flatnonzero(step < 0)[0]) + 1
        raise UnsortedTimestampError(
            path, i + _FIRST_DATA_LINE, f"{frame[time_column].iloc[i]} comes after a later hour"
        )

    series = pd.Series(prices, index=pd.DatetimeIndex(times, name="utc"), name="eur_mwh")
    hour_ns = 3600 * 10**9
    gap_at = np.flatnonzero(step > hour_ns)
    gaps = tuple(
        PriceGap(start=series.index[int(i)] + pd.Timedelta(hours=1), hours=int(step[i] // hour_ns) - 1)
        for i in gap_at
    )
    if gaps:
        listing = ", ".join(f"{g.start:%Y-%m-%d %H:%M} UTC ({g.hours} h)" for g in gaps)
        if gap_policy == "error":
            i = int(gap_at[0]) + 1
            raise PriceGapError(path, i + _FIRST_DATA_LINE, f"missing hours before this line: {listing}")
        # filled (or skipped) as the caller asked, and returned in ``gaps``: information, not a warning
        logger.info(
            "%s: %d missing hour(s), %s: %s", path.name, sum(g.hours for g in gaps), gap_policy, listing
        )
        if gap_policy != "skip":
            full = pd.date_range(series.index[0], series.index[-1], freq="h", name="utc")
            series = series.reindex(full)
            series = series.interpolate(method="linear") if gap_policy == "interpolate" else series.ffill()
    return PriceSeries(eur_mwh=series, gaps=gaps, gap_policy=gap_policy, source=path)


# --- ElaadNL distributions ----------------------------------------------------

CHARGER_TYPES = ("private", "public", "workplace")


@dataclass(frozen=True)
class ElaadDistributions:
    """ElaadNL session statistics (see ``scheduler/data/README.md``).

    - ``arrival_weekday`` / ``arrival_weekend``: share (percent) of sessions
      starting in each of the 96 quarter hours of the day, by charger type.
    - ``connection_time_h`` / ``energy_demand_kwh``: quantile tables. Row ``p``
      (0..100) is the value exceeded by ``p`` percent of sessions, by type.
    - ``duration_given_hour``: 24 × 48 probabilities: arrival hour (UTC) ×
      half-hour bins of connection time (bin ``k`` is ``k/2`` hours).
    """

    arrival_weekday: pd.DataFrame
    arrival_weekend: pd.DataFrame
    connection_time_h: pd.DataFrame
    energy_demand_kwh: pd.DataFrame
    duration_given_hour: np.ndarray


def _load_arrival(path: Path, types: tuple[str, ...]) -> pd.DataFrame:
    frame = _read_csv(path)
    _require_columns(path, frame, ["Arrival time", *types])
    if len(frame) != 96:
        raise DistributionError(path, None, f"expected 96 quarter-hour rows, found {len(frame)}")
    slots = [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 15, 30, 45)]
    for i, (got, want) in enumerate(zip(frame["Arrival time"].str.strip(), slots, strict=True)):
        if got != want:
            raise DistributionError(path, i + _FIRST_DATA_LINE, f"slot {got!r}, expected {want!r}")
    out = pd.DataFrame({t: _numeric(path, frame, t) for t in types}, index=pd.Index(slots, name="slot"))
    if (out < 0).any().any():
        raise DistributionError(path, None, "negative share of arrivals")
    return out


def _load_quantiles(path: Path) -> pd.DataFrame:
    frame = _read_csv(path)
    _require_columns(path, frame, ["Percentage of charging events", *CHARGER_TYPES])
    percent = _numeric(path, frame, "Percentage of charging events")
    if len(percent) != 101 or not np.array_equal(percent, np.arange(101)):
        raise DistributionError(path, None, f"expected percentile rows 0..100, found {len(percent)} rows")
    out = pd.DataFrame(
        {t: _numeric(path, frame, t) for t in CHARGER_TYPES}, index=pd.Index(np.arange(101), name="percent")
    )
    for t in CHARGER_TYPES:
        col = out[t].to_numpy()
        rising = np.flatnonzero(np.diff(col) > 0)
        if len(rising) or (col < 0).any():
            line = int(rising[0]) + 1 + _FIRST_DATA_LINE if len(rising) else None
            raise DistributionError(path, line, f"{t}: quantiles must be non-negative and non-increasing")
    return out


def load_elaad(directory: Path | str = ELAAD_DIR) -> ElaadDistributions:
    """Read and validate the ElaadNL distribution files in ``directory``."""
    directory = Path(directory)
    joint_path = directory / "time_of_connection_vs_hour.npy"
    try:
        joint = np.load(joint_path, allow_pickle=False)
    except ValueError as exc:
        raise DistributionError(joint_path, None, f"not a numpy array file: {exc}") from exc
    if joint.shape != (24, 48):
        raise DistributionError(joint_path, None, f"shape {joint.shape}, expected (24, 48)")
    if not np.isfinite(joint).all() or (joint < 0).any():
        raise DistributionError(joint_path, None, "probabilities must be finite and non-negative")
    sums = joint.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        hour = int(np.flatnonzero(~np.isclose(sums, 1.0, atol=1e-6))[0])
        raise DistributionError(joint_path, None, f"row for hour {hour} sums to {sums[hour]:.6f}, not 1")
    return ElaadDistributions(
        arrival_weekday=_load_arrival(directory / "distribution-of-arrival.csv", CHARGER_TYPES),
        arrival_weekend=_load_arrival(
            directory / "distribution-of-arrival-weekend.csv", ("private", "public")
        ),
        connection_time_h=_load_quantiles(directory / "distribution-of-connection-time.csv"),
        energy_demand_kwh=_load_quantiles(directory / "distribution-of-energy-demand.csv"),
        duration_given_hour=joint,
    )


# --- EV specifications ----------------------------------------------------------


@dataclass(frozen=True)
class EVModel:
    """One EV model: battery and AC power limits; ``registrations`` weights sampling."""

    name: str
    battery_kwh: float
    max_ac_charge_kw: float
    max_ac_discharge_kw: float
    registrations: int


def load_ev_specs(path: Path | str = EV_SPECS) -> tuple[EVModel, ...]:
    """Read an EV2Gym-format spec file (a JSON object: model name → fields)."""
    path = Path(path)
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(path, exc.lineno, f"invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or not data:
        raise SpecError(path, 1, "expected a non-empty JSON object of model name -> spec")
    lines = text.splitlines()

    def line_of(name: str) -> int | None:
        needle = json.dumps(name)
        return next((i + 1 for i, s in enumerate(lines) if needle in s), None)

    models = []
    for name, spec in data.items():
        try:
            battery = float(spec["battery_capacity"])
            charge = float(spec["max_ac_charge_power"])
            discharge = float(spec.get("max_ac_discharge_power", 0.0))
            registrations = int(spec["number_of_registrations"])
        except KeyError as exc:
            raise SpecError(path, line_of(name), f"{name}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise SpecError(path, line_of(name), f"{name}: non-numeric field ({exc})") from exc
        if not all(math.isfinite(x) for x in (battery, charge, discharge)):
            raise SpecError(path, line_of(name), f"{name}: non-finite value")
        if battery <= 0 or charge <= 0 or discharge < 0 or registrations < 0:
            raise SpecError(
                path,
                line_of(name),
                f"{name}: battery and charge power must be positive, "
                "discharge power and registrations non-negative",
            )
        models.append(EVModel(name, battery, charge, discharge, registrations))
    return tuple(models)


# --- demand-response events ---------------------------------------------------------


def load_dr_events(path: Path | str) -> tuple[DREvent, ...]:
    """Read OpenADR-style DR events from a CSV: ``id,start,duration_s,import_limit_kw`` (start in ISO 8601
    with a zone). A bad row raises a named error with its line; ids must be unique."""
    from scheduler.inputs import DREvent

    path = Path(path)
    frame = _read_csv(path)
    _require_columns(path, frame, ["id", "start", "duration_s", "import_limit_kw"])
    durations = _numeric(path, frame, "duration_s")
    limits = _numeric(path, frame, "import_limit_kw")
    events = []
    seen: dict[str, int] = {}
    for i in range(len(frame)):
        line = i + _FIRST_DATA_LINE
        event_id = frame["id"].iloc[i].strip()
        raw = frame["start"].iloc[i].strip()
        try:
            start = pd.Timestamp(raw)
        except ValueError:
            start = None
        if start is None or pd.isna(start) or start.tzinfo is None:
            raise MalformedTimestampError(path, line, f"start {raw!r} is not ISO 8601 with a zone")
        if event_id in seen:
            raise DuplicateTimestampError(path, line, f"event id {event_id} repeats line {seen[event_id]}")
        seen[event_id] = line
        if durations[i] <= 0 or limits[i] < 0:
            raise DataFileError(path, line, "duration must be positive and the import limit non-negative")
        events.append(
            DREvent(
                event_id,
                start.to_pydatetime(),
                timedelta(seconds=float(durations[i])),
                float(limits[i]),
            )
        )
    return tuple(events)
