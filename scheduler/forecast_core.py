"""What every price forecaster shares: the UTC day table, the public-information rule and a ridge solve.

The public-information rule. The day-ahead auction's result for delivery day D (a day in
Europe/Amsterdam time) is public at about 12:45 CET/CEST on D-1. Amsterdam day D starts at 22:00 UTC
(summer) or 23:00 UTC (winter) on UTC day D-1, so a forecast of UTC day D made before D's auction
result may use the prices of UTC day D-1 up to 21:59 UTC only (:data:`PUBLIC_EVE_HOURS`), and those of
every earlier day. :func:`public_cutoff` is that moment. Every forecaster here forecasts UTC day D from
the prices before ``public_cutoff(D)`` only; the hours 22-23 UTC of D-1 repeat hour 21 wherever a
model's inputs need them, in training as in forecasting.

A forecast issued at D-1 00:00 UTC with only the prices before that moment (the ``interval`` stress
test of the rolling planner, two days ahead) is a two-day-ahead forecast: ``ahead=2`` in the
forecasters' ``predict_series``, where D-1's unknown prices are replaced by the forecaster's own
forecast of D-1 and the models are those fitted for D (on days up to D-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

#: Hours (UTC) of the eve D-1 public before the auction result for day D (Amsterdam midnight is at
#: 22:00 UTC in summer, 23:00 in winter).
PUBLIC_EVE_HOURS = 22
#: Ridge penalties the recalibrated models choose from, per hour, by generalised cross-validation.
GCV_PENALTIES = tuple(float(p) for p in np.logspace(-2, 3, 11))
#: Fewest usable training days a recalibrated model accepts.
MIN_TRAIN_DAYS = 28


def public_cutoff(day: date) -> pd.Timestamp:
    """The first hour (UTC) a forecast of UTC ``day`` may not use: D-1 at :data:`PUBLIC_EVE_HOURS`:00."""
    return pd.Timestamp(day - timedelta(days=1), tz="UTC") + pd.Timedelta(hours=PUBLIC_EVE_HOURS)


def daily_matrix(prices: pd.Series) -> pd.DataFrame:
    """Rows = UTC days, columns = hours 0..23 (complete days only)."""
    index = pd.DatetimeIndex(prices.index)
    frame = pd.DataFrame({"day": index.date, "hour": index.hour, "p": prices.to_numpy()})
    table = frame.pivot_table(index="day", columns="hour", values="p", aggfunc="first")
    return table.reindex(columns=range(24)).dropna()


def mask_eve(values: np.ndarray) -> np.ndarray:
    """``values`` (..., 24) with hours from :data:`PUBLIC_EVE_HOURS` on replaced by the last public one."""
    out = np.array(values, dtype=np.float64, copy=True)
    out[..., PUBLIC_EVE_HOURS:] = out[..., [PUBLIC_EVE_HOURS - 1]]
    return out


@dataclass
class Scaler:
    """Variance stabilisation: asinh of the price less ``median``, in units of ``mad``."""

    median: float
    mad: float

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(np.arcsinh((x - self.median) / self.mad))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(np.sinh(y) * self.mad + self.median)


def ridge_gcv(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge for all columns of ``y`` at once (unpenalised intercept, standardised inputs), each column's
    penalty from :data:`GCV_PENALTIES` by generalised cross-validation; one SVD for everything.

    Returns ``(coef, penalties)``: ``coef`` stacks the intercepts (row 0) over the weights."""
    n = len(x)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    y_mean = y.mean(axis=0)
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uty = u.T @ (y - y_mean)  # (k, outputs)
    lam = np.asarray(GCV_PENALTIES)[:, None]  # (L, 1)
    shrink = s**2 / (s**2 + lam)  # (L, k)
    fitted_part = shrink[:, :, None] * uty[None]
    residual = (
        ((y - y_mean) ** 2).sum(axis=0)
        - 2 * np.einsum("lkh,kh->lh", fitted_part, uty)
        + (fitted_part**2).sum(axis=1)
    )  # (L, outputs): |y - Uy_hat|^2 with U orthonormal
    dof = shrink.sum(axis=1) + 1.0  # (L,)
    gcv = residual / np.maximum(n - dof, 1e-9)[:, None] ** 2
    best = gcv.argmin(axis=0)
    gain = s[None, :] / (s[None, :] ** 2 + np.asarray(GCV_PENALTIES)[best][:, None])  # (outputs, k)
    beta = vt.T @ (gain.T * uty)  # (p, outputs)
    weights = beta / std[:, None]
    intercept = y_mean - mean @ weights
    return np.vstack([intercept, weights]), np.asarray(GCV_PENALTIES)[best]


def hourly_index(start: date, days: int) -> pd.DatetimeIndex:
    """The UTC hours of ``days`` days from ``start``."""
    return pd.date_range(pd.Timestamp(start, tz="UTC"), periods=24 * days, freq="h")
