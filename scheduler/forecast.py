"""Day-ahead price forecasting trained only on the past, and an EV availability forecast.

What a forecast may use (see :mod:`scheduler.forecast_core`): UTC day D is forecast from the prices
public before D's auction result, i.e. before D-1 22:00 UTC (Amsterdam's day D starts then); D-1's hours
22-23 UTC repeat hour 21 wherever a model needs them. ``predict_series(..., ahead=2)`` forecasts D as
issued at D-1 00:00 UTC, from the prices before that moment (D-1 replaced by its own forecast).

Forecasters (all :class:`PriceForecaster`; :func:`make_price_forecaster` builds them by name):

- ``ensemble`` (the default, :class:`~scheduler.forecast_ensemble.ValidatedEnsemble`): daily recalibrated
  LEAR models over calibration windows of 364-1456 days, on prices normalised per day by their recent
  level and spread, and a gradient-boosted model refitted monthly, weighted every day by validation on
  the 91 fully public days before it;
- ``recalibrated`` (:class:`RecalibratedLear`): LEAR refitted every day on windows 56/84/364/728 days,
  each window's prices normalised by its own median and MAD (after epftoolbox's LEAR), the mean of the
  windows;
- ``fitted-once`` (:class:`LearForecaster`): one LEAR fitted on the days up to ``train_end``.

LEAR-style model (after Lago et al. 2021, "Forecasting day-ahead electricity prices: a review of
state-of-the-art algorithms, best practices and an open-access benchmark"): one linear model per hour of
the day on variance-stabilised prices (asinh of the price less a median, in units of a MAD), with the
previous day's public prices, the 24 of two days before (and three, in the ensemble) and of one week
before, and day-of-week dummies as inputs; L2-regularised (ridge, closed form) instead of LEAR's LASSO
(LASSO by LARS-AIC scored 0.633 against ridge's 0.637 on 2023 at a hundred times the cost).

Baseline: the weekly-naive forecast (the same hour one week earlier). rMAE = MAE / MAE(weekly naive).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import lru_cache
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from scheduler.errors import InvalidParameterError, MisalignedIntervalError
from scheduler.fleet import FleetConfig, generate_fleet
from scheduler.forecast_core import (
    GCV_PENALTIES,
    MIN_TRAIN_DAYS,
    PUBLIC_EVE_HOURS,
    daily_matrix,
    hourly_index,
    mask_eve,
    public_cutoff,
)
from scheduler.forecast_core import Scaler as _Scaler
from scheduler.forecast_core import ridge_gcv as _ridge_gcv
from scheduler.forecast_ensemble import BoostedTrees, EnsembleForecast, LocalLear, ValidatedEnsemble
from scheduler.inputs import Session, Vehicle

__all__ = [
    "CALIBRATION_WINDOWS",
    "GCV_PENALTIES",
    "MIN_TRAIN_DAYS",
    "PUBLIC_EVE_HOURS",
    "BoostedTrees",
    "EnsembleForecast",
    "ForecastScore",
    "LearForecaster",
    "LocalLear",
    "PriceForecaster",
    "RecalibratedLear",
    "ValidatedEnsemble",
    "availability_forecast",
    "evaluate",
    "make_price_forecaster",
    "public_cutoff",
    "task_forecasts",
    "weekly_naive",
]

LAGS_DAYS = (1, 2, 7)
PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
#: Calibration windows (days) of the recalibrated ensemble, as in epftoolbox's LEAR ensembles.
CALIBRATION_WINDOWS = (56, 84, 364, 728)


class PriceForecaster(Protocol):
    """What the planners call: forecasts of UTC days from the prices public before each day's auction
    result (``ahead=1``), or issued at 00:00 UTC the day before (``ahead=2``)."""

    def predict_day(self, prices: pd.Series, day: date) -> np.ndarray: ...

    def predict_series(self, prices: pd.Series, start: date, days: int, *, ahead: int = 1) -> pd.Series: ...


_daily_matrix = daily_matrix


def weekly_naive(prices: pd.Series, day: date) -> np.ndarray:
    """The 24 prices of the same weekday one week before ``day``."""
    table = _daily_matrix(prices)
    before = day - timedelta(days=7)
    if before not in table.index:
        raise MisalignedIntervalError(f"no prices for {before} (weekly-naive forecast of {day})")
    return table.loc[before].to_numpy(dtype=float)


def _features(table: pd.DataFrame, days: list[date], scaler: _Scaler) -> np.ndarray:
    """Inputs of the fitted-once model: D-1 (its hours from :data:`PUBLIC_EVE_HOURS` on repeating the last
    public one: they belong to Amsterdam's day D, not yet public), D-2 and D-7, weekday dummies."""
    rows = []
    for d in days:
        lagged = [scaler.forward(table.loc[d - timedelta(days=k)].to_numpy(dtype=float)) for k in LAGS_DAYS]
        lagged[0] = scaler.forward(mask_eve(table.loc[d - timedelta(days=1)].to_numpy(dtype=float)))
        weekday = np.zeros(7)
        weekday[d.weekday()] = 1.0
        rows.append(np.concatenate([*lagged, weekday]))
    return np.asarray(rows)


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """Closed-form ridge with an unpenalised intercept (columns standardised inside)."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    gram = z.T @ z + penalty * np.eye(z.shape[1])
    beta = np.linalg.solve(gram, z.T @ (y - y.mean(axis=0)))
    weights = beta / std[:, None]
    intercept = y.mean(axis=0) - mean @ weights
    return np.vstack([intercept, weights])


def _predict(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.asarray(coef[0] + x @ coef[1:])


@dataclass
class LearForecaster:
    """Fit on every complete day up to ``train_end`` (inclusive), then forecast any later day."""

    coef: np.ndarray
    scaler: _Scaler
    penalty: float
    train_end: date

    @classmethod
    def fit(cls, prices: pd.Series, train_end: date, train_days: int = 728) -> LearForecaster:
        table = _daily_matrix(prices[prices.index < pd.Timestamp(train_end + timedelta(days=1), tz="UTC")])
        days = [d for d in table.index if all(d - timedelta(days=k) in table.index for k in LAGS_DAYS)]
        days = days[-train_days:]
        if len(days) < 120:
            raise InvalidParameterError(f"only {len(days)} complete training days before {train_end}")
        values = table.loc[days].to_numpy(dtype=float)
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median))) or 1.0
        scaler = _Scaler(median, mad)
        x = _features(table, days, scaler)
        y = scaler.forward(values)
        split = len(days) - 56
        best, best_error = PENALTIES[0], np.inf
        for penalty in PENALTIES:  # choose the penalty on the last eight weeks of the training data
            coef = _ridge(x[:split], y[:split], penalty)
            error = np.abs(scaler.inverse(_predict(coef, x[split:])) - values[split:]).mean()
            if error < best_error:
                best, best_error = penalty, error
        return cls(_ridge(x, y, best), scaler, best, train_end)

    def predict_day(self, prices: pd.Series, day: date) -> np.ndarray:
        """24 hourly prices (EUR/MWh) for ``day``, from prices public before its auction result only."""
        return self._predict_from(_daily_matrix(prices), day)

    def _predict_from(self, table: pd.DataFrame, day: date) -> np.ndarray:
        table = table[table.index < day]  # the past only, whatever the table holds
        missing = [day - timedelta(days=k) for k in LAGS_DAYS if day - timedelta(days=k) not in table.index]
        if missing:
            raise MisalignedIntervalError(f"no prices for {missing[0]} (needed to forecast {day})")
        return np.asarray(self.scaler.inverse(_predict(self.coef, _features(table, [day], self.scaler)))[0])

    def predict_series(self, prices: pd.Series, start: date, days: int, *, ahead: int = 1) -> pd.Series:
        """Hourly forecasts for ``days`` days from ``start`` (each day from its own past only; ``ahead=2``:
        issued at 00:00 UTC the day before, see :func:`_series`)."""
        return _series(self._predict_from, _daily_matrix(prices), start, days, ahead)


class _Lagged:
    """Every day's raw inputs and targets on a contiguous day index (NaN where a day is missing)."""

    def __init__(self, table: pd.DataFrame, last_day: date) -> None:
        self.first: date = table.index[0]
        days = pd.date_range(pd.Timestamp(self.first), pd.Timestamp(max(last_day, self.first)), freq="D")
        self.values = table.reindex(days.date).to_numpy(dtype=float)  # (N, 24) targets
        n = len(self.values)
        eve = self.values.copy()
        eve[:, PUBLIC_EVE_HOURS:] = eve[:, [PUBLIC_EVE_HOURS - 1]]  # not yet public at the auction
        nan = np.full((1, 24), np.nan)
        lags = [
            np.vstack([np.repeat(nan, min(k, n), axis=0), source[: n - k]])
            for k, source in ((1, eve), (2, self.values), (7, self.values))
        ]
        self.lags = np.hstack(lags)  # (N, 72)
        self.weekday = np.eye(7)[[(self.first + timedelta(days=i)).weekday() for i in range(n)]]

    def row(self, day: date) -> int:
        return (day - self.first).days


@dataclass(frozen=True)
class _Fit:
    coef: np.ndarray  # (1 + 79, 24): intercept, then weights, per hour
    scaler: _Scaler
    penalties: np.ndarray  # (24,) the penalty chosen for each hour
    train_days: int

    def predict(self, lags: np.ndarray, weekday: np.ndarray) -> np.ndarray:
        x = np.hstack([self.scaler.forward(lags), weekday])
        return self.scaler.inverse(_predict(self.coef, x))


@dataclass(frozen=True)
class RecalibratedLear:
    """LEAR refitted every day on the last ``window`` days before it, for each window; the forecast is the
    mean of the windows' forecasts. ``RecalibratedLear()`` is the ensemble over
    :data:`CALIBRATION_WINDOWS`; ``RecalibratedLear((728,))`` one daily-recalibrated model."""

    windows: tuple[int, ...] = field(default=CALIBRATION_WINDOWS)

    def __post_init__(self) -> None:
        if not self.windows or min(self.windows) < MIN_TRAIN_DAYS:
            raise InvalidParameterError(
                f"calibration windows {self.windows}: at least one, each of >= {MIN_TRAIN_DAYS} days"
            )

    def fits(self, prices: pd.Series, day: date) -> list[_Fit]:
        """The models (one per window) that forecast ``day``, fitted on the days up to ``day`` - 2."""
        return self._fits(_Lagged(_daily_matrix(prices), day), day)

    def _fits(self, lagged: _Lagged, day: date) -> list[_Fit]:
        t = lagged.row(day)
        out = []
        for window in self.windows:
            rows = np.arange(max(t - 1 - window, 0), max(t - 1, 0))  # target days D-1-window .. D-2
            rows = rows[rows < len(lagged.values)]
            lags, targets = lagged.lags[rows], lagged.values[rows]
            ok = ~(np.isnan(lags).any(axis=1) | np.isnan(targets).any(axis=1))
            if ok.sum() < MIN_TRAIN_DAYS:
                raise InvalidParameterError(
                    f"only {int(ok.sum())} complete training days in the {window} days before {day} - 1"
                )
            lags, targets = lags[ok], targets[ok]
            median = float(np.median(targets))
            mad = float(np.median(np.abs(targets - median))) or 1.0
            scaler = _Scaler(median, mad)
            x = np.hstack([scaler.forward(lags), lagged.weekday[rows[ok]]])
            coef, penalties = _ridge_gcv(x, scaler.forward(targets))
            out.append(_Fit(coef, scaler, penalties, int(ok.sum())))
        return out

    def predict_members(self, prices: pd.Series, day: date) -> np.ndarray:
        """Each window's 24 forecasts for ``day`` (rows in the order of :attr:`windows`)."""
        return self._members(_Lagged(_daily_matrix(prices), day), day)

    def _members(self, lagged: _Lagged, day: date) -> np.ndarray:
        t = lagged.row(day)
        lags = lagged.lags[t : t + 1]
        if t < 7 or np.isnan(lags).any():
            missing = [
                day - timedelta(days=k) for k in LAGS_DAYS if k > t or np.isnan(lagged.values[t - k]).any()
            ]
            raise MisalignedIntervalError(f"no prices for {missing[0]} (needed to forecast {day})")
        weekday = lagged.weekday[t : t + 1]
        return np.vstack([fit.predict(lags, weekday)[0] for fit in self._fits(lagged, day)])

    def predict_day(self, prices: pd.Series, day: date) -> np.ndarray:
        """24 hourly prices (EUR/MWh) for ``day``, from prices public before its auction result only."""
        return np.asarray(self.predict_members(prices, day).mean(axis=0))

    def _predict_from(self, table: pd.DataFrame, day: date) -> np.ndarray:
        return np.asarray(self._members(_Lagged(table[table.index < day], day), day).mean(axis=0))

    def predict_series(self, prices: pd.Series, start: date, days: int, *, ahead: int = 1) -> pd.Series:
        """Hourly forecasts for ``days`` days from ``start``, each day's models refitted on its own past
        (``ahead=2``: issued at 00:00 UTC the day before, see :func:`_series`)."""
        table = _daily_matrix(prices)
        if ahead != 1:
            return _series(self._predict_from, table, start, days, ahead)
        lagged = _Lagged(table, start + timedelta(days=days - 1))
        values = [self._members(lagged, start + timedelta(days=i)).mean(axis=0) for i in range(days)]
        return pd.Series(np.concatenate(values), index=hourly_index(start, days))


def _series(
    predict_from: Callable[[pd.DataFrame, date], np.ndarray],
    table: pd.DataFrame,
    start: date,
    days: int,
    ahead: int,
) -> pd.Series:
    """Day-by-day forecasts; with ``ahead=2`` day D is issued at D-1 00:00 UTC: D-1's prices are replaced
    by the model's own forecast of D-1 (from the prices before D-1 22:00 - 24 h), and D's models are the
    ones fitted for D (on days up to D-2, all public by then)."""
    if days < 1 or ahead not in (1, 2):
        raise InvalidParameterError(f"days = {days} (>= 1), ahead = {ahead} (1 or 2)")
    values = []
    for i in range(days):
        d = start + timedelta(days=i)
        if ahead == 1:
            values.append(predict_from(table, d))
            continue
        eve = d - timedelta(days=1)
        past = table[table.index < eve]
        own = pd.DataFrame([predict_from(past, eve)], index=[eve], columns=table.columns)
        values.append(predict_from(pd.concat([past, own]), d))
    return pd.Series(np.concatenate(values), index=hourly_index(start, days))


@dataclass(frozen=True)
class ForecastScore:
    days: int
    mae: float
    mae_naive: float

    @property
    def rmae(self) -> float:
        return self.mae / self.mae_naive


def evaluate(prices: pd.Series, forecaster: PriceForecaster, start: date, days: int) -> ForecastScore:
    """MAE and rMAE (vs weekly naive) over ``days`` days from ``start`` (days without prices skipped)."""
    table = _daily_matrix(prices)
    forecast = _daily_matrix(forecaster.predict_series(prices, start, days))
    errors, naive = [], []
    for i in range(days):
        d = start + timedelta(days=i)
        if d not in table.index:
            continue
        actual = table.loc[d].to_numpy(dtype=float)
        errors.append(np.abs(forecast.loc[d].to_numpy(dtype=float) - actual))
        week_before = d - timedelta(days=7)
        if week_before not in table.index:
            raise MisalignedIntervalError(f"no prices for {week_before} (weekly-naive forecast of {d})")
        naive.append(np.abs(table.loc[week_before].to_numpy(dtype=float) - actual))
    return ForecastScore(len(errors), float(np.mean(errors)), float(np.mean(naive)))


ForecasterKind = Literal["ensemble", "recalibrated", "fitted-once"]
#: The forecaster the case study and the planners use unless told otherwise.
DEFAULT_FORECASTER: ForecasterKind = "ensemble"


def make_price_forecaster(
    kind: str = DEFAULT_FORECASTER,
    *,
    prices: pd.Series | None = None,
    train_end: date | None = None,
) -> PriceForecaster:
    """The price forecaster called ``kind``: ``ensemble`` (default, :class:`ValidatedEnsemble`),
    ``recalibrated`` (:class:`RecalibratedLear`) or ``fitted-once`` (:class:`LearForecaster` fitted on
    ``prices`` up to ``train_end``, both required). The first two refit themselves on each day's past."""
    if kind == "ensemble":
        return ValidatedEnsemble()
    if kind == "recalibrated":
        return RecalibratedLear()
    if kind == "fitted-once":
        if prices is None or train_end is None:
            raise InvalidParameterError("the fitted-once forecaster needs prices and train_end")
        return LearForecaster.fit(prices, train_end)
    raise InvalidParameterError(
        f"price forecaster {kind!r}: one of 'ensemble', 'recalibrated', 'fitted-once'"
    )


def task_forecasts(
    forecaster: PriceForecaster,
    prices: pd.Series,
    start: date,
    days: int,
    horizon_hours: int,
    knowledge: Literal["day-ahead", "interval"] = "day-ahead",
) -> list[pd.Series]:
    """For each day d from ``start``, the hourly forecasts over [d 00:00 UTC, d + ``horizon_hours``) as a
    planner starting at d 00:00 UTC may know them (at most 48 hours).

    ``day-ahead`` (the market's calendar): at d 00:00 UTC every price of Amsterdam's day d is public (since
    12:45 on d-1), so day d and day d+1 are day-ahead forecasts (d+1's from d's hours to 21:59 UTC).
    ``interval`` (each price public only when its hour starts): day d is a day-ahead forecast (it uses
    prices before d-1 22:00 only) and day d+1 a two-day-ahead one issued at d 00:00 UTC."""
    span = -(-horizon_hours // 24)
    if days < 1 or not 1 <= span <= 2:
        raise InvalidParameterError(f"{days} days of {horizon_hours}-hour horizons: days >= 1, 1-48 hours")
    if knowledge not in ("day-ahead", "interval"):
        raise InvalidParameterError(f"price knowledge {knowledge!r} must be 'day-ahead' or 'interval'")
    two_ahead = knowledge == "interval" and span == 2
    if isinstance(forecaster, ValidatedEnsemble):  # one run gives both (the members are fitted once)
        run = forecaster.run(prices, start, days + span - 1, ahead=2 if two_ahead else 1)
        first, later = run.series(1), run.series(2) if two_ahead else run.series(1)
    else:
        first = forecaster.predict_series(prices, start, days + span - 1)
        later = first
        if two_ahead:
            later = forecaster.predict_series(prices, start + timedelta(days=1), days, ahead=2)
    out = []
    for i in range(days):
        lo = pd.Timestamp(start + timedelta(days=i), tz="UTC")
        cut, hi = lo + pd.Timedelta(hours=24), lo + pd.Timedelta(hours=horizon_hours)
        parts = [first[(first.index >= lo) & (first.index < min(cut, hi))]]
        if span == 2:
            parts.append(later[(later.index >= cut) & (later.index < hi)])
        out.append(pd.concat(parts))
    return out


@lru_cache(maxsize=8)
def availability_forecast(
    day: date | str, config: FleetConfig, *, seed: int = 1_000_003, prefix: str = "forecast-"
) -> tuple[tuple[Vehicle, ...], tuple[Session, ...]]:
    """Expected vehicles and plug-ins for ``day``: a draw from the same ElaadNL distributions as the
    fleet generator (arrivals by quarter hour, connection time by arrival hour, energy by charger type),
    with ids prefixed so they never collide with real vehicles. The draw is a function of its arguments
    and its result immutable, so the last few are kept: a case-study day's plans under each price
    calendar share one."""
    vehicles, sessions = generate_fleet(str(day), config, seed=seed)
    return (
        tuple(replace(v, id=prefix + v.id, owner=prefix + v.owner) for v in vehicles),
        tuple(replace(s, id=prefix + s.id, vehicle_id=prefix + s.vehicle_id) for s in sessions),
    )
