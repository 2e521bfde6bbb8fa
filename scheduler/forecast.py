"""Day-ahead price forecasting trained only on the past, and an EV availability forecast.

Price model (LEAR-style, after Lago et al. 2021, "Forecasting day-ahead electricity prices: a review of
state-of-the-art algorithms, best practices and an open-access benchmark"): one linear model per hour of
the day on variance-stabilised prices (asinh of the price scaled by its training median and MAD), with
the previous day's 24 prices, the 24 of two days before and of one week before, and day-of-week
dummies as inputs; L2-regularised (ridge, closed form) instead of LEAR's LASSO, with the penalty chosen
on the last eight weeks of the training data. For a day D it uses prices up to D-1 only (the auction for
D closes on D-1 at noon, when D-1's own prices are long known).

Baseline: the weekly-naive forecast (the same hour one week earlier). rMAE = MAE / MAE(weekly naive).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

import numpy as np
import pandas as pd

from scheduler.errors import InvalidParameterError, MisalignedIntervalError
from scheduler.fleet import FleetConfig, generate_fleet
from scheduler.inputs import Session, Vehicle

LAGS_DAYS = (1, 2, 7)
PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)


def _daily_matrix(prices: pd.Series) -> pd.DataFrame:
    """Rows = UTC days, columns = hours 0..23 (complete days only)."""
    index = pd.DatetimeIndex(prices.index)
    frame = pd.DataFrame({"day": index.date, "hour": index.hour, "p": prices.to_numpy()})
    table = frame.pivot_table(index="day", columns="hour", values="p", aggfunc="first")
    return table.dropna()


def weekly_naive(prices: pd.Series, day: date) -> np.ndarray:
    """The 24 prices of the same weekday one week before ``day``."""
    table = _daily_matrix(prices)
    before = day - timedelta(days=7)
    if before not in table.index:
        raise MisalignedIntervalError(f"no prices for {before} (weekly-naive forecast of {day})")
    return table.loc[before].to_numpy(dtype=float)


@dataclass
class _Scaler:
    median: float
    mad: float

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(np.arcsinh((x - self.median) / self.mad))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(np.sinh(y) * self.mad + self.median)


def _features(table: pd.DataFrame, days: list[date], scaler: _Scaler) -> np.ndarray:
    rows = []
    for d in days:
        lagged = [scaler.forward(table.loc[d - timedelta(days=k)].to_numpy(dtype=float)) for k in LAGS_DAYS]
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
        """24 hourly prices (EUR/MWh) for ``day``, from prices before ``day`` only."""
        return self._predict_from(_daily_matrix(prices), day)

    def _predict_from(self, table: pd.DataFrame, day: date) -> np.ndarray:
        table = table[table.index < day]  # the past only, whatever the table holds
        missing = [day - timedelta(days=k) for k in LAGS_DAYS if day - timedelta(days=k) not in table.index]
        if missing:
            raise MisalignedIntervalError(f"no prices for {missing[0]} (needed to forecast {day})")
        return np.asarray(self.scaler.inverse(_predict(self.coef, _features(table, [day], self.scaler)))[0])

    def predict_series(self, prices: pd.Series, start: date, days: int) -> pd.Series:
        """Hourly forecasts for ``days`` days from ``start`` (each day from its own past only)."""
        table = _daily_matrix(prices)
        out = []
        for i in range(days):
            d = start + timedelta(days=i)
            stamps = pd.date_range(pd.Timestamp(d, tz="UTC"), periods=24, freq="h")
            out.append(pd.Series(self._predict_from(table, d), index=stamps))
        return pd.concat(out)


@dataclass(frozen=True)
class ForecastScore:
    days: int
    mae: float
    mae_naive: float

    @property
    def rmae(self) -> float:
        return self.mae / self.mae_naive


def evaluate(prices: pd.Series, forecaster: LearForecaster, start: date, days: int) -> ForecastScore:
    """MAE and rMAE (vs weekly naive) over ``days`` days from ``start``."""
    table = _daily_matrix(prices)
    errors, naive = [], []
    for i in range(days):
        d = start + timedelta(days=i)
        if d not in table.index:
            continue
        actual = table.loc[d].to_numpy(dtype=float)
        errors.append(np.abs(forecaster._predict_from(table, d) - actual))
        naive.append(np.abs(weekly_naive(prices, d) - actual))
    return ForecastScore(len(errors), float(np.mean(errors)), float(np.mean(naive)))


def availability_forecast(
    day: date | str, config: FleetConfig, *, seed: int = 1_000_003, prefix: str = "forecast-"
) -> tuple[tuple[Vehicle, ...], tuple[Session, ...]]:
    """Expected vehicles and plug-ins for ``day``: a draw from the same ElaadNL distributions as the
    fleet generator (arrivals by quarter hour, connection time by arrival hour, energy by charger type),
    with ids prefixed so they never collide with real vehicles."""
    vehicles, sessions = generate_fleet(str(day), config, seed=seed)
    return (
        tuple(replace(v, id=prefix + v.id, owner=prefix + v.owner) for v in vehicles),
        tuple(replace(s, id=prefix + s.id, vehicle_id=prefix + s.vehicle_id) for s in sessions),
    )
