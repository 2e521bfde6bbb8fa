"""Day-ahead price forecasting trained only on the past, and an EV availability forecast.

Price model (LEAR-style, after Lago et al. 2021, "Forecasting day-ahead electricity prices: a review of
state-of-the-art algorithms, best practices and an open-access benchmark"): one linear model per hour of
the day on variance-stabilised prices (asinh of the price scaled by its training median and MAD), with
the previous day's 24 prices, the 24 of two days before and of one week before, and day-of-week
dummies as inputs; L2-regularised (ridge, closed form) instead of LEAR's LASSO, with the penalty chosen
on the last eight weeks of the training data. For a day D it uses prices up to D-1 only (the auction for
D closes on D-1 at noon, when D-1's own prices are long known).

Daily recalibration (:class:`RecalibratedLear`, after epftoolbox's LEAR): for each day D the same
model is refitted on a rolling calibration window, on the information public before D's auction
result: that result (12:45 Europe/Amsterdam on D-1) covers Amsterdam day D, which starts at 22:00 or
23:00 UTC on D-1, so the forecast of UTC day D uses D-1's hours 0-21 UTC only (hours 22-23 repeat hour
21, in training as in forecasting) and trains on target days up to D-2. Each fit is one ridge solve
for all 24 hours (one SVD of the window's inputs), the penalty chosen per hour by generalised
cross-validation. With several windows (:data:`CALIBRATION_WINDOWS`) the forecast is the mean of one
such model per window.

Baseline: the weekly-naive forecast (the same hour one week earlier). rMAE = MAE / MAE(weekly naive).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta

import numpy as np
import pandas as pd

from scheduler.errors import InvalidParameterError, MisalignedIntervalError
from scheduler.fleet import FleetConfig, generate_fleet
from scheduler.inputs import Session, Vehicle

LAGS_DAYS = (1, 2, 7)
PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
#: Calibration windows (days) of the recalibrated ensemble, as in epftoolbox's LEAR ensembles.
CALIBRATION_WINDOWS = (56, 84, 364, 728)
#: Hours (UTC) of the eve D-1 public before the auction result for day D (Amsterdam midnight is at
#: 22:00 UTC in summer, 23:00 in winter).
PUBLIC_EVE_HOURS = 22
#: Ridge penalties the recalibrated models choose from, per hour, by generalised cross-validation.
GCV_PENALTIES = tuple(float(p) for p in np.logspace(-2, 3, 11))
#: Fewest usable training days a recalibrated model accepts.
MIN_TRAIN_DAYS = 28


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


def _ridge_gcv(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge for all columns of ``y`` at once (unpenalised intercept, standardised inputs), each column's
    penalty from :data:`GCV_PENALTIES` by generalised cross-validation; one SVD for everything."""
    n = len(x)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    y_mean = y.mean(axis=0)
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uty = u.T @ (y - y_mean)  # (k, 24)
    lam = np.asarray(GCV_PENALTIES)[:, None]  # (L, 1)
    shrink = s**2 / (s**2 + lam)  # (L, k)
    fitted_part = np.einsum("lk,kh->lkh", shrink, uty)
    residual = (
        ((y - y_mean) ** 2).sum(axis=0)
        - 2 * np.einsum("lkh,kh->lh", fitted_part, uty)
        + (fitted_part**2).sum(axis=1)
    )  # (L, 24): |y - Uy_hat|^2 with U orthonormal
    dof = shrink.sum(axis=1) + 1.0  # (L,)
    gcv = residual / np.maximum(n - dof, 1e-9)[:, None] ** 2
    best = gcv.argmin(axis=0)  # (24,)
    gain = s[None, :] / (s[None, :] ** 2 + np.asarray(GCV_PENALTIES)[best][:, None])  # (24, k)
    beta = vt.T @ (gain.T * uty)  # (p, 24)
    weights = beta / std[:, None]
    intercept = y_mean - mean @ weights
    return np.vstack([intercept, weights]), np.asarray(GCV_PENALTIES)[best]


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

    def predict_series(self, prices: pd.Series, start: date, days: int) -> pd.Series:
        """Hourly forecasts for ``days`` days from ``start``, each day's models refitted on its own past."""
        table = _daily_matrix(prices)
        lagged = _Lagged(table, start + timedelta(days=days - 1))
        out = []
        for i in range(days):
            d = start + timedelta(days=i)
            stamps = pd.date_range(pd.Timestamp(d, tz="UTC"), periods=24, freq="h")
            out.append(pd.Series(self._members(lagged, d).mean(axis=0), index=stamps))
        return pd.concat(out)


@dataclass(frozen=True)
class ForecastScore:
    days: int
    mae: float
    mae_naive: float

    @property
    def rmae(self) -> float:
        return self.mae / self.mae_naive


def evaluate(
    prices: pd.Series, forecaster: LearForecaster | RecalibratedLear, start: date, days: int
) -> ForecastScore:
    """MAE and rMAE (vs weekly naive) over ``days`` days from ``start``."""
    table = _daily_matrix(prices)
    errors, naive = [], []
    for i in range(days):
        d = start + timedelta(days=i)
        if d not in table.index:
            continue
        actual = table.loc[d].to_numpy(dtype=float)
        errors.append(np.abs(forecaster._predict_from(table, d) - actual))
        week_before = d - timedelta(days=7)
        if week_before not in table.index:
            raise MisalignedIntervalError(f"no prices for {week_before} (weekly-naive forecast of {d})")
        naive.append(np.abs(table.loc[week_before].to_numpy(dtype=float) - actual))
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
