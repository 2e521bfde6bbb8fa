"""The validated ensemble and the planners' forecasts use only prices public when they are made."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pytest

from scheduler.datasets import load_prices
from scheduler.errors import InvalidParameterError, MisalignedIntervalError
from scheduler.forecast import (
    BoostedTrees,
    LearForecaster,
    PriceForecaster,
    RecalibratedLear,
    ValidatedEnsemble,
    make_price_forecaster,
    public_cutoff,
    task_forecasts,
)

DAY = date(2022, 6, 20)


def _synthetic(days: int = 200, seed: int = 11) -> pd.Series:
    """Hourly prices with a daily and a weekly shape, a slow drift and noise (UTC, from 2022-01-01)."""
    stamps = pd.date_range("2022-01-01", periods=24 * days, freq="h", tz="UTC")
    hour, weekday = stamps.hour.to_numpy(), stamps.day_of_week.to_numpy()
    rng = np.random.default_rng(seed)
    level = 60 + np.cumsum(rng.normal(0.0, 0.3, len(stamps)))
    shape = 15 * np.sin(2 * np.pi * (hour - 6) / 24) - 8 * (weekday >= 5)
    return pd.Series(level + shape + rng.normal(0.0, 4.0, len(stamps)), index=stamps)


def _small() -> ValidatedEnsemble:
    return ValidatedEnsemble(
        lear_windows=(28, 56),
        boosted=BoostedTrees(window=84, max_iter=15, min_samples_leaf=20),
        validation_days=14,
    )


@pytest.fixture(scope="module")
def prices() -> pd.Series:
    return _synthetic()


@pytest.fixture(scope="module")
def model() -> ValidatedEnsemble:
    return _small()


def _bumped(prices: pd.Series, since: pd.Timestamp, until: pd.Timestamp | None = None) -> pd.Series:
    out = prices.copy()
    hit = (out.index >= since) & (
        out.index < (until if until is not None else out.index[-1] + pd.Timedelta("1h"))
    )
    out[hit] += 1_000.0
    return out


def test_ensemble_forecast_uses_only_prices_public_before_the_auction(
    prices: pd.Series, model: ValidatedEnsemble
) -> None:
    before = model.predict_day(prices, DAY)
    assert before.shape == (24,) and np.isfinite(before).all()
    cutoff = public_cutoff(DAY)
    assert cutoff == pd.Timestamp("2022-06-19 22:00", tz="UTC")
    # D-1 from 22:00 UTC (Amsterdam's day D, published with D at 12:45 on D-1), D and everything after
    assert np.array_equal(model.predict_day(_bumped(prices, cutoff), DAY), before)
    # D-1 21:00 UTC is public before the auction and an input
    eve = _bumped(prices, cutoff - pd.Timedelta("1h"), cutoff)
    assert not np.allclose(model.predict_day(eve, DAY), before)


def test_two_day_ahead_forecast_uses_only_prices_before_its_issue(
    prices: pd.Series, model: ValidatedEnsemble
) -> None:
    issued = pd.Timestamp(DAY - timedelta(days=1), tz="UTC")  # D-1 00:00 UTC
    before = model.predict_series(prices, DAY, 1, ahead=2)
    assert len(before) == 24 and before.index[0] == pd.Timestamp(DAY, tz="UTC")
    assert np.array_equal(model.predict_series(_bumped(prices, issued), DAY, 1, ahead=2), before)
    last = _bumped(prices, issued - pd.Timedelta("3h"), issued)  # D-2 21:00-23:00 UTC: public by then
    assert not np.allclose(model.predict_series(last, DAY, 1, ahead=2), before)
    # it is not the day-ahead forecast, which knows D-1's hours
    assert not np.allclose(before.to_numpy(), model.predict_day(prices, DAY))


def test_ensemble_weight_is_chosen_on_the_fully_public_days_before(
    prices: pd.Series, model: ValidatedEnsemble
) -> None:
    k = model.validation_days
    history = model.run(prices, DAY - timedelta(days=k + 1), k + 1)  # D-1-k .. D-1
    today = model.run(prices, DAY, 1)
    actual = prices[(prices.index >= pd.Timestamp(DAY - timedelta(days=k + 1), tz="UTC"))]
    actual_days = actual.to_numpy()[: 24 * k].reshape(k, 24)  # D-1-k .. D-2: every price public
    lear = np.mean([history.members["lear_28"], history.members["lear_56"]], axis=0)[:k]
    boosted = history.members["boosted"][:k]
    mae = [np.abs((1 - w) * lear + w * boosted - actual_days).mean() for w in model.weights]
    assert today.boosted_weight[0] == model.weights[int(np.argmin(mae))]
    lear_today = (today.members["lear_28"] + today.members["lear_56"]) / 2
    w = today.boosted_weight[0]
    assert np.allclose(today.forecast[0], (1 - w) * lear_today[0] + w * today.members["boosted"][0])
    # the weight is the one of a validation period that ends with D-2: D-1's actual prices play no part
    assert history.boosted_weight.shape == (k + 1,)


def test_series_agrees_with_day_by_day_forecasts(prices: pd.Series, model: ValidatedEnsemble) -> None:
    series = model.predict_series(prices, DAY, 3)
    index = pd.DatetimeIndex(series.index)
    assert len(series) == 72 and index.freq == "h" and str(index.tz) == "UTC"
    for i in range(3):
        day = model.predict_day(prices, DAY + timedelta(days=i))
        assert np.allclose(series.to_numpy()[24 * i : 24 * (i + 1)], day, rtol=0, atol=1e-9)


def test_ensemble_forecast_is_close_on_a_regular_series(prices: pd.Series, model: ValidatedEnsemble) -> None:
    run = model.run(prices, DAY, 7)
    actual = prices[pd.Timestamp(DAY, tz="UTC") :].to_numpy()[: 7 * 24].reshape(7, 24)
    naive = prices[pd.Timestamp(DAY - timedelta(days=7), tz="UTC") :].to_numpy()[: 7 * 24].reshape(7, 24)
    assert np.abs(run.forecast - actual).mean() < np.abs(naive - actual).mean()
    assert set(run.members) == {"lear_28", "lear_56", "boosted"}


def test_missing_training_days_are_skipped_and_missing_inputs_named(
    prices: pd.Series, model: ValidatedEnsemble
) -> None:
    holed = prices.drop(prices.index[(prices.index >= "2022-05-01") & (prices.index < "2022-05-01 05:00")])
    assert np.isfinite(model.predict_day(holed, DAY)).all()  # a day of the training windows is incomplete
    gap = prices.drop(
        prices.index[
            pd.DatetimeIndex(prices.index).normalize() == pd.Timestamp(DAY - timedelta(days=2), tz="UTC")
        ]
    )
    with pytest.raises(MisalignedIntervalError, match=f"no prices for {DAY - timedelta(days=2)}"):
        model.predict_day(gap, DAY)
    with pytest.raises(MisalignedIntervalError, match="no complete day"):
        model.predict_day(prices.iloc[:10], DAY)


def test_public_holidays_count_as_sundays_and_move_only_their_own_forecasts(prices: pd.Series) -> None:
    """Ascension Day 2022 (Thursday 26 May) is a Dutch public holiday: LEAR sees a Sunday, for the target
    day as in training. The next day's model (trained on 28 April - 25 May, no holiday) and
    inputs are those without holidays; prices not public before the auction still change nothing."""
    ascension = date(2022, 5, 26)
    lear_only = ValidatedEnsemble(lear_windows=(28,), boosted=None, validation_days=1)
    plain = replace(lear_only, holiday_country=None)
    run, bare = lear_only.run(prices, ascension, 2), plain.run(prices, ascension, 2)
    assert np.isfinite(run.forecast).all()
    assert not np.allclose(run.forecast[0], bare.forecast[0])
    assert np.array_equal(run.forecast[1], bare.forecast[1])
    again = lear_only.predict_day(_bumped(prices, public_cutoff(ascension)), ascension)
    assert np.array_equal(again, run.forecast[0])
    with pytest.raises(InvalidParameterError, match="half_life"):
        BoostedTrees(half_life=0.0)
    weighted = replace(
        _small(), boosted=BoostedTrees(window=84, max_iter=15, min_samples_leaf=20, half_life=30.0)
    )
    aged = weighted.run(prices, ascension, 1)
    assert not np.allclose(aged.members["boosted"], _small().run(prices, ascension, 1).members["boosted"])
    assert np.array_equal(
        weighted.predict_day(_bumped(prices, public_cutoff(ascension)), ascension), aged.forecast[0]
    )


def test_bad_parameters_and_short_histories_are_named_errors(prices: pd.Series) -> None:
    with pytest.raises(InvalidParameterError, match="LEAR windows"):
        ValidatedEnsemble(lear_windows=())
    with pytest.raises(InvalidParameterError, match="calibration window"):
        ValidatedEnsemble(lear_windows=(7,))
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        ValidatedEnsemble(weights=(0.5, 1.5))
    with pytest.raises(InvalidParameterError, match="boosted trees"):
        BoostedTrees(window=10)
    with pytest.raises(InvalidParameterError, match="ahead"):
        _small().predict_series(prices, DAY, 1, ahead=3)
    with pytest.raises(InvalidParameterError, match="complete training days"):
        _small().predict_day(prices, date(2022, 2, 15))
    with pytest.raises(InvalidParameterError, match="price forecaster 'nope'"):
        make_price_forecaster("nope")
    with pytest.raises(InvalidParameterError, match="needs prices and train_end"):
        make_price_forecaster("fitted-once")
    assert isinstance(make_price_forecaster(), ValidatedEnsemble)
    assert isinstance(make_price_forecaster("recalibrated"), RecalibratedLear)


def test_legacy_forecasters_two_days_ahead_use_only_prices_before_their_issue(prices: pd.Series) -> None:
    issued = pd.Timestamp(DAY - timedelta(days=1), tz="UTC")
    models: list[PriceForecaster] = [RecalibratedLear((28,)), LearForecaster.fit(prices, date(2022, 5, 31))]
    for model in models:
        before = model.predict_series(prices, DAY, 2, ahead=2)
        later = _bumped(prices, issued)
        assert np.array_equal(model.predict_series(later, DAY, 1, ahead=2), before.iloc[:24])
        assert not np.allclose(before.to_numpy()[:24], model.predict_day(prices, DAY))


@pytest.mark.parametrize("knowledge", ["day-ahead", "interval"])
def test_task_forecasts_use_only_what_the_planner_knows_at_the_start(
    prices: pd.Series, knowledge: Literal["day-ahead", "interval"]
) -> None:
    """A planner starting day d at 00:00 UTC knows Amsterdam's day d (``day-ahead``: published at 12:45
    on d-1), i.e. the prices before d 22:00 UTC, or (``interval``) the prices before d 00:00 UTC."""
    model = RecalibratedLear((28,))
    start = DAY
    tasks = task_forecasts(model, prices, start, 2, 48, knowledge)
    assert [len(t) for t in tasks] == [48, 48]
    assert tasks[1].index[0] == pd.Timestamp(start + timedelta(days=1), tz="UTC")
    for i, task in enumerate(tasks):
        d = pd.Timestamp(start + timedelta(days=i), tz="UTC")
        known = d + pd.Timedelta("22h") if knowledge == "day-ahead" else d
        again = task_forecasts(model, _bumped(prices, known), start + timedelta(days=i), 1, 48, knowledge)
        assert np.array_equal(again[0].to_numpy(), task.to_numpy())
    if knowledge == "day-ahead":  # the second day of a task is the next day's day-ahead forecast
        assert np.array_equal(tasks[0].to_numpy()[24:], tasks[1].to_numpy()[:24])
    else:
        assert not np.allclose(tasks[0].to_numpy()[24:], tasks[1].to_numpy()[:24])
    with pytest.raises(InvalidParameterError, match="1-48 hours"):
        task_forecasts(model, prices, start, 1, 72)


def test_task_forecasts_of_the_ensemble_are_its_day_ahead_and_two_day_ahead_series(
    prices: pd.Series, model: ValidatedEnsemble
) -> None:
    tasks = task_forecasts(model, prices, DAY, 2, 36, "interval")
    assert [len(t) for t in tasks] == [36, 36]
    assert np.allclose(tasks[0].to_numpy()[:24], model.predict_day(prices, DAY), rtol=0, atol=1e-9)
    second = model.predict_series(prices, DAY + timedelta(days=1), 1, ahead=2).to_numpy()[:12]
    assert np.allclose(tasks[0].to_numpy()[24:], second, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_default_ensemble_on_real_prices_uses_no_future_data() -> None:
    """The default ensemble on the Dutch prices: perturbing what is not public changes nothing."""
    real = load_prices().eur_mwh
    day = date(2023, 3, 15)
    model = ValidatedEnsemble()
    before = model.predict_day(real, day)
    assert np.array_equal(model.predict_day(_bumped(real, public_cutoff(day)), day), before)
