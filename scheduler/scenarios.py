"""Scenarios for the sample-average rolling plan: price paths from the forecaster's own past errors, and
arrival sets from the availability model.

Prices. The forecaster's error on a past UTC day is that day's actual hourly prices minus what the
forecaster said of them, a vector of 24 (:func:`forecast_errors`). A price scenario for a horizon of
``m`` days starting on day D is the point forecast of those days plus the errors of ``m`` consecutive
past days, drawn at random from the ``window`` days before D (a block bootstrap of whole days,
:func:`price_scenarios`): the hour-to-hour and day-to-day correlation of the errors is kept, their
level and spread are those the forecaster really had lately, and nothing at or after D enters. The
errors must be out of sample: errors of a model on the days it was fitted to would be too small.

Arrivals. Each scenario is another draw of the day's expected plug-ins from the ElaadNL distributions
(:func:`~scheduler.forecast.availability_forecast` with another seed, :func:`arrival_scenarios`); the
draws know nothing of the actual sessions.

:func:`scenarios_for` pairs them (price path ``i`` with arrival draw ``i``) as the
:class:`~scheduler.horizon.Scenario` objects that :func:`~scheduler.horizon.saa_rolling_horizon` plans
over.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd

from scheduler.errors import DateOutOfRangeError, InvalidParameterError, NonFiniteValueError
from scheduler.fleet import FleetConfig
from scheduler.forecast import availability_forecast
from scheduler.horizon import Scenario
from scheduler.inputs import Horizon, Session, Vehicle
from scheduler.tariff import Tariff

#: Days before the plan day whose forecast errors the price scenarios are drawn from.
ERROR_WINDOW_DAYS = 56
#: Seed offset between two arrival scenarios (scenario 0 is the point forecast's own draw).
ARRIVAL_SEED_STRIDE = 104_729


def _count(n_scenarios: object) -> int:
    """``n_scenarios`` as a whole number >= 1, or :class:`InvalidParameterError` (0, NaN, 2.5, "x")."""
    try:
        value = float(n_scenarios)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise InvalidParameterError(f"number of scenarios {n_scenarios!r} must be a whole number >= 1")
    return int(value)


def forecast_errors(
    actual: pd.Series, forecast: pd.Series, before: date, window: int = ERROR_WINDOW_DAYS
) -> np.ndarray:
    """The forecaster's errors (actual − forecast, EUR/MWh) on the ``window`` UTC days before ``before``,
    one row of 24 hours per day, oldest first; a row is NaN where an hour of either series is missing.
    Only hours before ``before`` (UTC midnight) are read, whatever the series hold after it."""
    if window < 1:
        raise InvalidParameterError(f"error window of {window} days must be >= 1")
    end = pd.Timestamp(before, tz="UTC")
    begin = end - pd.Timedelta(days=window)
    hours = pd.date_range(begin, end, freq="h", inclusive="left")

    def hourly(series: pd.Series) -> np.ndarray:
        past = series[(series.index >= begin) & (series.index < end)]
        past = past[~past.index.duplicated()]
        return np.asarray(past.reindex(hours).to_numpy(dtype=np.float64))

    errors: np.ndarray = (hourly(actual) - hourly(forecast)).reshape(window, 24)
    errors[~np.isfinite(errors).all(axis=1)] = np.nan
    return errors


#: Most persistence :func:`error_persistence` reports (an error that never fades would be a level shift).
MAX_PERSISTENCE = 0.95


def error_persistence(errors: np.ndarray) -> float:
    """ρ: how much of a forecast error persists one hour later, from past errors (rows of 24 hours as
    :func:`forecast_errors` gives them, oldest first): the least-squares AR(1) coefficient through the
    origin, ``Σ e(h)·e(h+1) / Σ e(h)²`` over consecutive hours of complete days (across midnight where
    both days are complete), clipped to [0, :data:`MAX_PERSISTENCE`]; 0 with fewer than 48 such pairs.

    The rolling planner uses it to track errors (``error_decay_per_hour`` of
    :func:`~scheduler.horizon.saa_rolling_horizon`): the error on the last public hour, times ρ^h, is
    expected h hours later."""
    table = np.asarray(errors, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 24:
        raise InvalidParameterError(f"forecast errors of shape {table.shape}: rows of 24 hours expected")
    series = table.ravel()
    now, later = series[:-1], series[1:]
    both = np.isfinite(now) & np.isfinite(later)
    if both.sum() < 48:
        return 0.0
    energy = float(np.sum(now[both] ** 2))
    if energy == 0.0:
        return 0.0
    rho = float(np.sum(now[both] * later[both])) / energy
    return min(max(rho, 0.0), MAX_PERSISTENCE)


def price_scenarios(
    forecast_hourly: np.ndarray, errors: np.ndarray, n_scenarios: int, *, seed: int | tuple[int, ...] = 0
) -> np.ndarray:
    """``n_scenarios`` hourly price paths (rows) for the hours of ``forecast_hourly``: the forecast plus the
    errors of as many consecutive past days as the path spans (``errors`` as :func:`forecast_errors`
    gives them, rows of days with NaN skipped), the days drawn at random, without replacement while the
    past holds enough of them. The same arguments give the same paths.

    Raises :class:`InvalidParameterError` for fewer than one scenario or errors not in rows of 24,
    :class:`NonFiniteValueError` for a forecast that is not finite, and :class:`DateOutOfRangeError`
    when no run of consecutive complete past days is long enough."""
    n = _count(n_scenarios)
    forecast = np.asarray(forecast_hourly, dtype=np.float64)
    if forecast.ndim != 1 or len(forecast) == 0:
        raise InvalidParameterError(f"the forecast has shape {forecast.shape}: one price per hour expected")
    if not np.isfinite(forecast).all():
        h = int(np.flatnonzero(~np.isfinite(forecast))[0])
        raise NonFiniteValueError(f"the price forecast is {forecast[h]} in hour {h}")
    table = np.asarray(errors, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 24:
        raise InvalidParameterError(f"forecast errors of shape {table.shape}: rows of 24 hours expected")
    span = -(-len(forecast) // 24)  # days a path covers
    complete = np.isfinite(table).all(axis=1)
    starts = np.zeros(0, dtype=np.int64)
    if len(table) >= span:
        starts = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(complete, span).all(axis=1))
    if len(starts) == 0:
        raise DateOutOfRangeError(
            f"no {span} consecutive past days with complete forecast errors among the {len(table)} given"
        )
    rng = np.random.default_rng([*(seed if isinstance(seed, tuple) else (seed,)), span])
    chosen = rng.choice(starts, size=n, replace=n > len(starts))
    paths = np.stack([table[i : i + span].ravel()[: len(forecast)] for i in chosen])
    return forecast[None, :] + paths


def arrival_scenarios(
    day: date | str, config: FleetConfig, n_scenarios: int, *, seed: int
) -> list[tuple[tuple[Vehicle, ...], tuple[Session, ...]]]:
    """``n_scenarios`` draws of the day's expected vehicles and plug-ins (the availability forecast of
    :mod:`scheduler.forecast`); draw ``i`` uses seed ``seed + i·ARRIVAL_SEED_STRIDE`` (draw 0 is the one
    the point-forecast plan uses with the same ``seed``)."""
    n = _count(n_scenarios)
    return [
        availability_forecast(day, config, seed=seed + i * ARRIVAL_SEED_STRIDE, prefix=f"forecast{i}-")
        for i in range(n)
    ]


def scenarios_for(
    horizon: Horizon,
    forecast_hourly: np.ndarray,
    errors: np.ndarray,
    config: FleetConfig,
    n_scenarios: int,
    *,
    seed: int,
    tariff: Tariff | None = None,
) -> list[Scenario]:
    """The scenarios of one day's sample-average plan over ``horizon``: price path ``i``
    (:func:`price_scenarios` drawn with ``seed`` and the day, hourly, spread over the horizon's intervals,
    made all-in by ``tariff``) with arrival draw ``i`` (:func:`arrival_scenarios`)."""
    n = _count(n_scenarios)
    per_hour = 60 // horizon.interval_minutes
    hourly = np.asarray(forecast_hourly, dtype=np.float64)
    if len(hourly) * per_hour != horizon.intervals:
        raise InvalidParameterError(
            f"{len(hourly)} hourly forecasts for a horizon of {horizon.intervals} intervals"
        )
    paths = price_scenarios(hourly, errors, n, seed=(seed, horizon.start.toordinal()))
    draws = arrival_scenarios(horizon.start.date(), config, n, seed=seed)
    out = []
    for path, (vehicles, sessions) in zip(paths, draws, strict=True):
        day_ahead = np.repeat(path, per_hour)
        buy, sell = (day_ahead, day_ahead) if tariff is None else tariff.prices(day_ahead, horizon.timestamps)
        out.append(Scenario(buy, sell, sessions, vehicles))
    return out


__all__ = [
    "ARRIVAL_SEED_STRIDE",
    "ERROR_WINDOW_DAYS",
    "MAX_PERSISTENCE",
    "arrival_scenarios",
    "error_persistence",
    "forecast_errors",
    "price_scenarios",
    "scenarios_for",
]
