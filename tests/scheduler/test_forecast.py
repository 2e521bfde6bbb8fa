"""The price forecaster learns only from the past and beats the weekly-naive forecast on real data."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from scheduler.datasets import load_prices
from scheduler.errors import InvalidParameterError, MisalignedIntervalError
from scheduler.forecast import (
    PUBLIC_EVE_HOURS,
    LearForecaster,
    RecalibratedLear,
    evaluate,
    public_cutoff,
    weekly_naive,
)


@pytest.fixture(scope="module")
def prices() -> pd.Series:
    return load_prices().eur_mwh


@pytest.fixture(scope="module")
def model(prices: pd.Series) -> LearForecaster:
    return LearForecaster.fit(prices, date(2022, 12, 31))


def test_forecast_uses_no_future_data(prices: pd.Series, model: LearForecaster) -> None:
    day = date(2023, 3, 15)
    before = model.predict_day(prices, day)
    future = prices.copy()
    future[future.index >= pd.Timestamp(day, tz="UTC")] += 1_000.0  # the day itself and everything after
    assert np.array_equal(model.predict_day(future, day), before)
    refit = LearForecaster.fit(future, date(2022, 12, 31))  # training on a perturbed 2023 changes nothing
    assert np.array_equal(refit.coef, model.coef)


def test_fitted_once_forecast_ignores_the_hours_of_amsterdams_next_day(
    prices: pd.Series, model: LearForecaster
) -> None:
    """D-1 22:00-23:59 UTC belong to Amsterdam's day D, published with D's prices: not an input of D."""
    day = date(2023, 3, 15)
    before = model.predict_day(prices, day)
    cutoff = public_cutoff(day)
    eve = prices.copy()
    eve[(eve.index >= cutoff) & (eve.index < pd.Timestamp(day, tz="UTC"))] += 1_000.0
    assert np.array_equal(model.predict_day(eve, day), before)
    assert np.array_equal(model.predict_series(eve, day, 1).to_numpy(), before)
    public = prices.copy()
    public[public.index == cutoff - pd.Timedelta(hours=1)] += 1_000.0  # D-1 21:00 UTC is public
    assert not np.allclose(model.predict_day(public, day), before)


def test_forecast_beats_weekly_naive_on_2023_first_quarter(prices: pd.Series, model: LearForecaster) -> None:
    score = evaluate(prices, model, date(2023, 1, 1), 90)
    assert score.days == 90
    assert score.rmae < 0.8, score


def test_weekly_naive_is_the_same_hours_a_week_before(prices: pd.Series) -> None:
    day = date(2023, 7, 9)
    expected = prices[pd.Timestamp(day - timedelta(days=7), tz="UTC") :].iloc[:24].to_numpy()
    assert np.array_equal(weekly_naive(prices, day), expected)


def test_forecast_refuses_a_day_without_its_lagged_prices(prices: pd.Series, model: LearForecaster) -> None:
    with pytest.raises(MisalignedIntervalError, match="needed to forecast"):
        model.predict_day(prices[prices.index < pd.Timestamp("2023-05-01", tz="UTC")], date(2023, 5, 3))


# Daily recalibration and the window ensemble, on a small synthetic series (hand-checkable).


def _synthetic(days: int = 120, seed: int = 7) -> pd.Series:
    stamps = pd.date_range("2022-01-01", periods=24 * days, freq="h", tz="UTC")
    hour, weekday = stamps.hour.to_numpy(), stamps.day_of_week.to_numpy()
    noise = np.random.default_rng(seed).normal(0.0, 3.0, len(stamps))
    return pd.Series(50 + 10 * np.sin(2 * np.pi * hour / 24) + 5 * weekday + noise, index=stamps)


def test_recalibrated_forecast_uses_only_prices_public_before_the_auction() -> None:
    prices, day = _synthetic(), date(2022, 4, 20)
    model = RecalibratedLear((28, 56))
    before = model.predict_day(prices, day)
    cutoff = pd.Timestamp(day, tz="UTC") - pd.Timedelta(hours=24 - PUBLIC_EVE_HOURS)  # D-1 22:00 UTC
    later = prices.copy()
    later[later.index >= cutoff] += 1_000.0  # D-1 from 22:00 UTC (Amsterdam's D), D and after
    assert np.array_equal(model.predict_day(later, day), before)
    eve = prices.copy()
    eve[eve.index == cutoff - pd.Timedelta(hours=1)] += 1_000.0  # D-1 21:00 UTC is public and an input
    assert not np.allclose(model.predict_day(eve, day), before)
    # ... but D-1 is no training target: the coefficients are those fitted on days up to D-2
    for fit, refit in zip(model.fits(prices, day), model.fits(eve, day), strict=True):
        assert np.array_equal(fit.coef, refit.coef)
        assert fit.train_days in (28, 56)


def test_recalibration_refits_every_day() -> None:
    prices, day = _synthetic(), date(2022, 4, 20)
    model = RecalibratedLear((28,))
    today, tomorrow = model.fits(prices, day)[0], model.fits(prices, day + timedelta(days=1))[0]
    assert not np.allclose(today.coef, tomorrow.coef)
    series = model.predict_series(prices, day, 2)
    assert np.array_equal(series.iloc[:24].to_numpy(), model.predict_day(prices, day))
    assert np.array_equal(series.iloc[24:].to_numpy(), model.predict_day(prices, day + timedelta(days=1)))


def test_ensemble_is_the_mean_of_its_windows() -> None:
    prices, day = _synthetic(), date(2022, 4, 20)
    members = [RecalibratedLear((w,)).predict_day(prices, day) for w in (28, 56, 84)]
    assert np.allclose(RecalibratedLear((28, 56, 84)).predict_day(prices, day), np.mean(members, axis=0))


def test_recalibrated_forecast_of_a_constant_price_is_that_price() -> None:
    stamps = pd.date_range("2022-01-01", periods=24 * 60, freq="h", tz="UTC")
    prices = pd.Series(42.0, index=stamps)
    assert np.allclose(RecalibratedLear((28,)).predict_day(prices, date(2022, 2, 25)), 42.0)


def test_recalibration_refuses_too_short_a_history() -> None:
    prices = _synthetic(days=30)
    with pytest.raises(InvalidParameterError, match="complete training days"):
        RecalibratedLear((28,)).predict_day(prices, date(2022, 1, 30))
    with pytest.raises(InvalidParameterError, match="calibration windows"):
        RecalibratedLear((7,))
