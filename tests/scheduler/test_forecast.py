"""The price forecaster learns only from the past and beats the weekly-naive forecast on real data."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from scheduler.datasets import load_prices
from scheduler.errors import MisalignedIntervalError
from scheduler.forecast import LearForecaster, evaluate, weekly_naive


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
