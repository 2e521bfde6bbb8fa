"""The default price forecaster: LEAR models over several calibration windows and a gradient-boosted model,
combined with a weight chosen every day on the members' recent out-of-sample errors.

Members (each forecasts UTC day D from the prices public before D's auction result only, see
:mod:`scheduler.forecast_core`):

- :class:`LocalLear` (one per calibration window, :data:`LEAR_WINDOWS`): LEAR refitted every day (ridge,
  one penalty per hour by generalised cross-validation) on the target days D-1-window .. D-2; inputs
  D-1's public hours 0-21 UTC and the 24 prices of D-2, D-3 and D-7, and the weekday (a public holiday of
  :data:`HOLIDAY_COUNTRY` counts as a Sunday, for the target day as in training). Prices are
  normalised *per target day* by what is public before it: ``z = asinh((p - level) / scale)`` with
  ``level`` the median of the last :data:`LEVEL_DAYS` days' public prices and ``scale`` the median
  absolute deviation of the last :data:`SCALE_DAYS` days' (at least 1 EUR/MWh), so that one model
  serves the calm years and the crisis of 2022 alike and long windows stay useful.
- :class:`BoostedTrees`: scikit-learn's histogram gradient boosting (absolute error) on one row per
  hour: the hour and weekday (categorical), the day of the year, the same normalised lags as LEAR for
  that hour, D-1's public mean, maximum, minimum and last hour, the mean of D-2 and D-7 and the scale.
  Refitted at the start of every month on the :attr:`~BoostedTrees.window` days up to the month's
  first day minus two, so every day of the month is forecast by a model of its own past. It sees the
  calendar weekday (holidays as Sundays helped LEAR on 2021-2022, not the trees); an optional
  :attr:`~BoostedTrees.half_life` weights training days by age (off: a small gain, twice the run time).

The ensemble (:class:`ValidatedEnsemble`): the forecast of day D is ``(1 - w) * mean(LEAR members) +
w * boosted``, with ``w`` from :attr:`~ValidatedEnsemble.weights` the one whose combination had the least
MAE over the ``validation_days`` days D-1-validation_days .. D-2 (days whose prices are all public
before D's auction, each forecast out of sample by the same members). Selection uses the past only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import Protocol

import holidays
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor  # type: ignore[import-untyped]

from scheduler.errors import InvalidParameterError, MisalignedIntervalError
from scheduler.forecast_core import MIN_TRAIN_DAYS, PUBLIC_EVE_HOURS, daily_matrix, hourly_index, ridge_gcv

#: Calibration windows (days) of the ensemble's LEAR members.
LEAR_WINDOWS = (364, 728, 1092, 1456)
#: Days whose public prices give a target day's normalisation level (median) and scale (MAD).
LEVEL_DAYS = 7
SCALE_DAYS = 28
#: Smallest normalisation scale (EUR/MWh), so that a flat week does not blow inputs up.
MIN_SCALE = 1.0
#: Candidate weights of the boosted member in the ensemble.
BOOSTED_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))
#: The boosted member's weight on a day with no validation day before it.
DEFAULT_BOOSTED_WEIGHT = 0.5
#: Fewest complete training days the boosted member accepts.
MIN_BOOSTED_DAYS = 56
#: Country whose public holidays LEAR treats as Sundays (``None`` in :class:`ValidatedEnsemble`: none).
HOLIDAY_COUNTRY = "NL"
#: Lagged days (besides D-1's public hours) in every member's inputs.
_LAGS = (2, 3, 7)


class Panel:
    """Prices on a contiguous range of UTC days (NaN rows where a day is incomplete), from the first
    complete day of ``prices`` to ``last_day``; ``holiday`` marks the public holidays of
    ``holiday_country`` (a calendar fact, known in advance)."""

    def __init__(self, prices: pd.Series, last_day: date, holiday_country: str | None = None) -> None:
        table = daily_matrix(prices)
        if table.empty:
            raise MisalignedIntervalError("no complete day of hourly prices to forecast from")
        self.first: date = table.index[0]
        n = max((last_day - self.first).days + 1, 1)
        self.days = [self.first + timedelta(days=i) for i in range(n)]
        self.values = table.reindex(self.days).to_numpy(dtype=np.float64)  # (n, 24)
        self.holiday = np.zeros(n, dtype=bool)
        if holiday_country is not None:
            calendar = holidays.country_holidays(
                holiday_country, years=range(self.first.year, last_day.year + 1)
            )
            self.holiday = np.array([d in calendar for d in self.days])
        self.weekday = np.array([d.weekday() for d in self.days])
        self.day_of_year = np.array([d.timetuple().tm_yday for d in self.days])
        self.month_start = np.array([(d - d.replace(day=1)).days for d in self.days])  # rows since the 1st

    def __len__(self) -> int:
        return len(self.values)

    @cached_property
    def inputs(self) -> Inputs:
        """Every row's own inputs (D-1's public hours as published)."""
        return Inputs.of(self, np.arange(len(self)))

    @cached_property
    def trainable(self) -> np.ndarray:
        """Rows whose inputs and 24 prices are complete (usable as training days)."""
        return np.asarray(self.inputs.complete() & ~np.isnan(self.values).any(axis=1))

    def row(self, day: date) -> int:
        return (day - self.first).days

    def eve(self, rows: np.ndarray) -> np.ndarray:
        """D-1's public hours (``rows - 1``, hours 0..21) for target rows ``rows``; NaN before the panel."""
        out = np.full((len(rows), PUBLIC_EVE_HOURS), np.nan)
        ok = rows >= 1
        out[ok] = self.values[rows[ok] - 1, :PUBLIC_EVE_HOURS]
        return out

    def lagged(self, rows: np.ndarray, k: int) -> np.ndarray:
        out = np.full((len(rows), 24), np.nan)
        ok = rows >= k
        out[ok] = self.values[rows[ok] - k]
        return out

    def _window(self, rows: np.ndarray, eve: np.ndarray, days: int) -> np.ndarray:
        back = rows[:, None] + np.arange(-days, -1)[None, :]  # full days t-days .. t-2
        full = np.full((*back.shape, 24), np.nan)
        ok = back >= 0
        full[ok] = self.values[back[ok]]
        return np.hstack([full.reshape(len(rows), -1), eve])

    def normalisation(self, rows: np.ndarray, eve: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level (median of the last :data:`LEVEL_DAYS` days' public prices) and scale (their MAD over
        :data:`SCALE_DAYS` days, at least :data:`MIN_SCALE`) of each target row; NaN without history."""
        with np.errstate(all="ignore"):
            level = _nanmedian(self._window(rows, eve, LEVEL_DAYS))
            wide = self._window(rows, eve, SCALE_DAYS)
            centre = _nanmedian(wide)
            scale = np.maximum(_nanmedian(np.abs(wide - centre[:, None])), MIN_SCALE)
        few = rows < SCALE_DAYS
        level[few], scale[few] = np.nan, np.nan
        return level, scale


def _nanmedian(x: np.ndarray) -> np.ndarray:
    out = np.full(len(x), np.nan)
    some = ~np.isnan(x).all(axis=1)
    out[some] = np.nanmedian(x[some], axis=1)
    return out


@dataclass(frozen=True)
class Inputs:
    """A member's normalised inputs for some target rows (``eve`` = D-1's public hours used)."""

    rows: np.ndarray
    level: np.ndarray  # (m,)
    scale: np.ndarray  # (m,)
    eve: np.ndarray  # (m, 22) normalised
    lags: np.ndarray  # (m, 3, 24) normalised D-2, D-3, D-7
    weekday: np.ndarray  # (m,)

    @classmethod
    def of(cls, panel: Panel, rows: np.ndarray, eve: np.ndarray | None = None) -> Inputs:
        eve = panel.eve(rows) if eve is None else eve
        level, scale = panel.normalisation(rows, eve)
        lags = np.stack([panel.lagged(rows, k) for k in _LAGS], axis=1)
        return cls(
            rows,
            level,
            scale,
            np.arcsinh((eve - level[:, None]) / scale[:, None]),
            np.arcsinh((lags - level[:, None, None]) / scale[:, None, None]),
            panel.weekday[rows],
        )

    def complete(self) -> np.ndarray:
        gaps = np.isnan(self.level) | np.isnan(self.eve).any(axis=1) | np.isnan(self.lags).any(axis=(1, 2))
        return np.asarray(~gaps)

    def targets(self, panel: Panel) -> np.ndarray:
        return np.asarray(np.arcsinh((panel.values[self.rows] - self.level[:, None]) / self.scale[:, None]))

    def prices(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(np.sinh(z) * self.scale[:, None] + self.level[:, None])


def _missing(panel: Panel, inputs: Inputs) -> None:
    """Raise for the first target row whose inputs are incomplete, naming the day that is missing."""
    bad = np.flatnonzero(~inputs.complete())
    if not len(bad):
        return
    t = int(inputs.rows[bad[0]])
    day = panel.first + timedelta(days=t)
    need = [t - k for k in range(1, max(SCALE_DAYS, max(_LAGS)) + 1)]
    gone = [r for r in need if r < 0 or np.isnan(panel.values[r]).any()]
    when = panel.first + timedelta(days=gone[0]) if gone else day - timedelta(days=1)
    raise MisalignedIntervalError(f"no prices for {when} (needed to forecast {day})")


class Fitted(Protocol):
    """A member's models for a set of target rows; ``predict`` may take D-1's public hours from elsewhere."""

    def predict(self, panel: Panel, rows: np.ndarray, eve: np.ndarray | None = None) -> np.ndarray: ...


class Member(Protocol):
    @property
    def name(self) -> str: ...

    def feasible(self, panel: Panel, rows: np.ndarray) -> np.ndarray: ...

    def fit(self, panel: Panel, rows: np.ndarray) -> Fitted: ...


def _training_counts(ok: np.ndarray, rows: np.ndarray, window: int) -> np.ndarray:
    """Complete training rows in [t-1-window, t-2] for each t in ``rows`` (``ok`` per panel row)."""
    cum = np.concatenate([[0], np.cumsum(ok)])
    hi = np.clip(rows - 1, 0, len(ok))
    lo = np.clip(rows - 1 - window, 0, len(ok))
    return np.asarray(cum[hi] - cum[lo])


@dataclass(frozen=True)
class _LearFit:
    coef: dict[int, np.ndarray]  # target row -> (1 + 101, 24)

    def predict(self, panel: Panel, rows: np.ndarray, eve: np.ndarray | None = None) -> np.ndarray:
        inputs = Inputs.of(panel, rows, eve)
        _missing(panel, inputs)
        x = _lear_design(inputs, panel)
        z = np.stack([self.coef[int(t)][0] + x[i] @ self.coef[int(t)][1:] for i, t in enumerate(rows)])
        return inputs.prices(z)


def _lear_design(inputs: Inputs, panel: Panel) -> np.ndarray:
    """D-1's public hours, the lags and the day type (the weekday, 6 on a public holiday)."""
    day_type = np.where(panel.holiday[inputs.rows], 6, inputs.weekday)
    return np.hstack([inputs.eve, inputs.lags.reshape(len(inputs.rows), -1), np.eye(7)[day_type]])


@dataclass(frozen=True)
class LocalLear:
    """LEAR (ridge) refitted for every target day on the ``window`` days before it (see the module)."""

    window: int

    def __post_init__(self) -> None:
        if self.window < MIN_TRAIN_DAYS:
            raise InvalidParameterError(
                f"calibration window of {self.window} days: at least {MIN_TRAIN_DAYS}"
            )

    @property
    def name(self) -> str:
        return f"lear_{self.window}"

    def feasible(self, panel: Panel, rows: np.ndarray) -> np.ndarray:
        enough = _training_counts(panel.trainable, rows, self.window) >= MIN_TRAIN_DAYS
        return np.asarray(enough & panel.inputs.complete()[rows])

    def fit(self, panel: Panel, rows: np.ndarray) -> _LearFit:
        inputs, ok = panel.inputs, panel.trainable
        x, y = _lear_design(inputs, panel), inputs.targets(panel)
        coef = {}
        for t in map(int, rows):
            train = np.arange(max(t - 1 - self.window, 0), max(t - 1, 0))
            train = train[ok[train]]
            if len(train) < MIN_TRAIN_DAYS:
                raise InvalidParameterError(
                    f"only {len(train)} complete training days in the {self.window} days before "
                    f"{panel.first + timedelta(days=t - 1)}"
                )
            coef[t] = ridge_gcv(x[train], y[train])[0]
        return _LearFit(coef)


def _boosted_design(inputs: Inputs, day_of_year: np.ndarray) -> np.ndarray:
    """One row per (target row, hour), hour-major within a day."""
    m = len(inputs.rows)
    hour = np.tile(np.arange(24), m)
    r = np.repeat(np.arange(m), 24)
    eve = inputs.eve
    columns = [
        hour,
        inputs.weekday[r],
        day_of_year[r],
        eve[r, np.minimum(hour, PUBLIC_EVE_HOURS - 1)],
        *(inputs.lags[r, j, hour] for j in range(len(_LAGS))),
        eve.mean(axis=1)[r],
        eve.max(axis=1)[r],
        eve.min(axis=1)[r],
        eve[r, PUBLIC_EVE_HOURS - 1],
        inputs.lags[:, 0].mean(axis=1)[r],
        inputs.lags[:, 2].mean(axis=1)[r],
        np.log(inputs.scale)[r],
    ]
    return np.column_stack(columns)


@dataclass(frozen=True)
class _BoostedFit:
    models: dict[int, HistGradientBoostingRegressor]  # month's first row -> model
    start_of: dict[int, int]  # target row -> its month's first row

    def predict(self, panel: Panel, rows: np.ndarray, eve: np.ndarray | None = None) -> np.ndarray:
        inputs = Inputs.of(panel, rows, eve)
        _missing(panel, inputs)
        x = _boosted_design(inputs, panel.day_of_year[rows])
        z = np.empty(len(rows) * 24)
        month = np.repeat([self.start_of[int(t)] for t in rows], 24)
        for key, model in self.models.items():
            here = month == key
            if here.any():
                z[here] = model.predict(x[here])
        return inputs.prices(z.reshape(-1, 24))


@dataclass(frozen=True)
class BoostedTrees:
    """Gradient-boosted trees on lags and calendar features, refitted monthly (see the module)."""

    window: int = 1092
    max_iter: int = 150
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 40
    half_life: float | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        return "boosted"

    def __post_init__(self) -> None:
        if (
            self.window < MIN_BOOSTED_DAYS
            or self.max_iter < 1
            or (self.half_life is not None and self.half_life <= 0)
        ):
            raise InvalidParameterError(
                f"boosted trees: window {self.window} days (>= {MIN_BOOSTED_DAYS}), "
                f"max_iter {self.max_iter} (>= 1), half_life {self.half_life} (> 0 or None)"
            )

    def feasible(self, panel: Panel, rows: np.ndarray) -> np.ndarray:
        starts = rows - panel.month_start[rows]
        enough = _training_counts(panel.trainable, starts, self.window) >= MIN_BOOSTED_DAYS
        return np.asarray(enough & panel.inputs.complete()[rows])

    def fit(self, panel: Panel, rows: np.ndarray) -> _BoostedFit:
        inputs, ok = panel.inputs, panel.trainable
        start_of = {int(t): int(t - panel.month_start[t]) for t in rows}
        models = {}
        for t0 in sorted(set(start_of.values())):
            train = np.arange(max(t0 - 1 - self.window, 0), max(t0 - 1, 0))
            train = train[ok[train]]
            if len(train) < MIN_BOOSTED_DAYS:
                raise InvalidParameterError(
                    f"only {len(train)} complete training days for the boosted model of the month from "
                    f"{panel.first + timedelta(days=t0)} (at least {MIN_BOOSTED_DAYS})"
                )
            sub = Inputs(
                train, inputs.level[train], inputs.scale[train], inputs.eve[train], inputs.lags[train],
                inputs.weekday[train],
            )  # fmt: skip
            model = HistGradientBoostingRegressor(
                loss="absolute_error",
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                categorical_features=[0, 1],
                random_state=self.seed,
            )
            age = None if self.half_life is None else np.repeat(0.5 ** ((t0 - train) / self.half_life), 24)
            model.fit(
                _boosted_design(sub, panel.day_of_year[train]), sub.targets(panel).ravel(), sample_weight=age
            )
            models[t0] = model
        return _BoostedFit(models, start_of)


@dataclass(frozen=True)
class EnsembleForecast:
    """One run of :class:`ValidatedEnsemble` over ``days`` (rows of the arrays, from ``start``)."""

    start: date
    members: dict[str, np.ndarray]  # name -> (days, 24) each member's own day-ahead forecast
    boosted_weight: np.ndarray  # (days,) the weight chosen for each day
    forecast: np.ndarray  # (days, 24) the ensemble's day-ahead forecast
    two_ahead: np.ndarray | None = None  # (days, 24) issued at D-1 00:00 UTC, when asked for

    def series(self, ahead: int = 1) -> pd.Series:
        values = self.forecast if ahead == 1 else self.two_ahead
        if values is None:
            raise InvalidParameterError("this run has no two-day-ahead forecast (ask with ahead=2)")
        return pd.Series(values.ravel(), index=hourly_index(self.start, len(values)))


@dataclass(frozen=True)
class ValidatedEnsemble:
    """LEAR members over ``lear_windows`` (their mean) and ``boosted``, weighted by validation on the
    ``validation_days`` fully public days before each forecast day (see the module); LEAR counts the
    public holidays of ``holiday_country`` as Sundays (``None``: no holidays)."""

    lear_windows: tuple[int, ...] = LEAR_WINDOWS
    boosted: BoostedTrees | None = field(default_factory=BoostedTrees)
    validation_days: int = 91
    weights: tuple[float, ...] = BOOSTED_WEIGHTS
    holiday_country: str | None = HOLIDAY_COUNTRY

    def __post_init__(self) -> None:
        if not self.lear_windows or self.validation_days < 1 or not self.weights:
            raise InvalidParameterError(
                f"ensemble: {self.lear_windows} LEAR windows (at least one), {self.validation_days} "
                f"validation days (>= 1), boosted weights {self.weights} (at least one)"
            )
        if any(not 0.0 <= w <= 1.0 for w in self.weights):
            raise InvalidParameterError(f"boosted weights {self.weights} must lie in [0, 1]")
        for window in self.lear_windows:
            LocalLear(window)

    def members(self) -> list[Member]:
        out: list[Member] = [LocalLear(w) for w in self.lear_windows]
        if self.boosted is not None:
            out.append(self.boosted)
        return out

    def run(self, prices: pd.Series, start: date, days: int, *, ahead: int = 1) -> EnsembleForecast:
        """Every member's forecast, the chosen weights and the ensemble's forecast for ``days`` days."""
        if days < 1 or ahead not in (1, 2):
            raise InvalidParameterError(f"days = {days} (>= 1), ahead = {ahead} (1 or 2)")
        panel = Panel(prices, start + timedelta(days=days - 1), self.holiday_country)
        first = panel.row(start)
        if first < 1:
            raise MisalignedIntervalError(
                f"no prices for {start - timedelta(days=1)} (needed to forecast {start})"
            )
        targets = np.arange(first, first + days)
        _missing(panel, Inputs.of(panel, targets))  # a target without its inputs is named first
        # rows whose member forecasts the choice needs: validation days of every target (and of D-1's
        # own forecast for ahead=2), then the targets
        lo = max(first - 2 - self.validation_days, 0)
        rows = np.arange(lo, first + days)
        members = self.members()
        able = np.ones(len(rows), dtype=bool)
        for member in members:
            able &= member.feasible(panel, rows)
        able[rows >= first] = True  # a target that cannot be forecast raises, named, in fit
        fits: list[Fitted] = []
        own = np.full((len(members), len(rows), 24), np.nan)
        for j, member in enumerate(members):
            fitted = member.fit(panel, rows[able])
            fits.append(fitted)
            own[j, able] = fitted.predict(panel, rows[able])
        lear = own[: len(self.lear_windows)].mean(axis=0)
        boosted = own[-1] if self.boosted is not None else lear
        weights = np.asarray(self.weights if self.boosted is not None else (0.0,))
        candidates = (1 - weights)[:, None, None] * lear[None] + weights[:, None, None] * boosted[None]
        chosen = self._choose(panel, rows, candidates, weights)
        combined = (1 - chosen)[:, None] * lear + chosen[:, None] * boosted
        at = targets - lo
        two_ahead = None
        if ahead == 2:
            eve = combined[at - 1, :PUBLIC_EVE_HOURS]  # the ensemble's own forecast of D-1
            if np.isnan(eve).any():
                raise InvalidParameterError(f"too little history to forecast {start - timedelta(days=1)}")
            second = np.stack([fitted.predict(panel, targets, eve) for fitted in fits])
            lear2 = second[: len(self.lear_windows)].mean(axis=0)
            boosted2 = second[-1] if self.boosted is not None else lear2
            two_ahead = (1 - chosen[at])[:, None] * lear2 + chosen[at][:, None] * boosted2
        return EnsembleForecast(
            start,
            {m.name: own[j, at] for j, m in enumerate(members)},
            chosen[at],
            combined[at],
            two_ahead,
        )

    def _choose(
        self, panel: Panel, rows: np.ndarray, candidates: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Per row t, the weight whose combination had the least MAE on the rows t-1-validation .. t-2
        that every member forecast and whose prices are complete (sorted ``weights``; ties: the lower)."""
        order = np.argsort(weights, kind="stable")
        weights, candidates = weights[order], candidates[order]
        actual = panel.values[rows]
        error = np.abs(candidates - actual[None]).mean(axis=2)  # (g, rows)
        usable = ~np.isnan(error).any(axis=0)
        cum = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(np.where(usable, error, 0.0), 1)], 1)
        count = np.concatenate([[0], np.cumsum(usable)])
        i = np.arange(len(rows))
        hi = np.clip(i - 1, 0, len(rows))  # positions < i - 1, i.e. rows <= t - 2
        lo = np.clip(i - 1 - self.validation_days, 0, len(rows))
        n = count[hi] - count[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = (cum[:, hi] - cum[:, lo]) / n
        best = np.where(n > 0, weights[np.argmin(np.where(n > 0, mae, 0.0), axis=0)], np.nan)
        default = weights[np.argmin(np.abs(weights - DEFAULT_BOOSTED_WEIGHT))]
        return np.where(np.isnan(best), default, best)

    def predict_series(self, prices: pd.Series, start: date, days: int, *, ahead: int = 1) -> pd.Series:
        """Hourly forecasts for ``days`` days from ``start``: ``ahead=1`` each day from the prices public
        before its auction result; ``ahead=2`` each day D issued at D-1 00:00 UTC (prices before it)."""
        return self.run(prices, start, days, ahead=ahead).series(ahead)

    def predict_day(self, prices: pd.Series, day: date) -> np.ndarray:
        """24 hourly prices (EUR/MWh) for ``day``, from prices public before its auction result only."""
        return np.asarray(self.run(prices, day, 1).forecast[0])
