"""The case study's tasks carry forecasts issued only from prices public at their day's 00:00 UTC: the
day-ahead calendar's (all of Amsterdam's day d public) and the interval calendar's (no price of day d
public), each checked by perturbing what is not yet public. Run with the validated ensemble (LEAR members
on short windows only, fast) and with the fitted-once LEAR."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from scheduler.case_study import (
    DEFAULT_FORECASTER,
    FORECASTERS,
    ForecasterFactory,
    PriceForecaster,
    build_tasks,
    run_from_args,
)
from scheduler.datasets import load_prices
from scheduler.errors import DateOutOfRangeError
from scheduler.fleet import FleetConfig
from scheduler.forecast import ValidatedEnsemble

DAY = date(2023, 7, 1)
CONFIG = FleetConfig(n_evs=3, interval_minutes=60, clip_to_day=False, horizon_hours=48)


def _small_ensemble(prices: pd.Series, train_end: date) -> PriceForecaster:
    return ValidatedEnsemble(lear_windows=(56, 84), boosted=None, validation_days=14)


FACTORIES: dict[str, ForecasterFactory] = {"ensemble": _small_ensemble, "lear": FORECASTERS["lear"]}


@pytest.fixture(scope="module")
def prices() -> pd.Series:
    series: pd.Series = load_prices().eur_mwh
    return series[series.index < pd.Timestamp(DAY + timedelta(days=4), tz="UTC")]


def _perturbed(prices: pd.Series, after: pd.Timestamp) -> pd.Series:
    rng = np.random.default_rng(7)
    noise = pd.Series(rng.normal(0.0, 80.0, len(prices)), prices.index)
    return prices.where(prices.index < after, prices + noise + 150.0)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_the_interval_forecast_of_the_next_day_uses_no_price_of_the_day(prices: pd.Series, kind: str) -> None:
    factory = FACTORIES[kind]
    [task] = build_tasks(prices, DAY, 1, CONFIG, interval_stress=True, forecaster=factory)
    assert task.forecast_hourly_interval is not None and len(task.forecast_hourly_interval) == 48
    # day d's prices are not public at d 00:00 UTC under interval knowledge: nothing from then on counts
    changed = _perturbed(prices, pd.Timestamp(DAY, tz="UTC"))
    [moved] = build_tasks(changed, DAY, 1, CONFIG, interval_stress=True, forecaster=factory)
    assert moved.forecast_hourly_interval is not None
    assert np.array_equal(moved.forecast_hourly_interval, task.forecast_hourly_interval)
    assert np.isfinite(task.forecast_hourly_interval).all()
    # the day-ahead forecast of day d+1 does read day d's public hours (the look-ahead fixed here)
    assert not np.allclose(moved.forecast_hourly[24:], task.forecast_hourly[24:])
    assert np.array_equal(moved.forecast_hourly[:24], task.forecast_hourly[:24])  # day d: before d-1 22:00
    # the interval run plans with its own forecasts, the day-ahead runs with theirs
    assert task.forecasts_for("interval") is task.forecast_hourly_interval
    assert task.forecasts_for("day-ahead") is task.forecast_hourly


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_the_day_ahead_forecast_uses_no_price_after_the_publication(prices: pd.Series, kind: str) -> None:
    factory = FACTORIES[kind]
    [task] = build_tasks(prices, DAY, 1, CONFIG, forecaster=factory)
    assert task.forecast_hourly_interval is None  # no interval run asked for
    # at d 00:00 UTC Amsterdam's day d (to d 22:00 UTC in summer) is public; d+1's prices come at 12:45
    # CET on d, so a day-ahead forecast issued at d 00:00 UTC reads nothing from d 22:00 UTC on
    cut = pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(hours=22)
    [moved] = build_tasks(_perturbed(prices, cut), DAY, 1, CONFIG, forecaster=factory)
    assert np.array_equal(moved.forecast_hourly, task.forecast_hourly)
    assert len(task.forecast_hourly) == 48 and np.isfinite(task.forecast_hourly).all()


def test_the_validated_ensemble_is_the_command_line_default_and_needs_history() -> None:
    assert DEFAULT_FORECASTER == "validated"
    assert isinstance(FORECASTERS["validated"](pd.Series(dtype=float), DAY), ValidatedEnsemble)
    with pytest.raises(DateOutOfRangeError, match="the price forecaster trains on the prices before"):
        run_from_args(["--evs", "3", "--start", "2015-01-10", "--days", "1", "--workers", "1"])


def test_the_scenarios_draw_on_the_errors_of_the_same_forecasts(prices: pd.Series) -> None:
    """The validated ensemble refits itself every day: one run covers the window of past errors, whose
    last day's errors are those of the day-ahead forecast the day before's task planned with."""
    tasks = build_tasks(prices, DAY - timedelta(days=1), 2, CONFIG, scenarios=2, forecaster=_small_ensemble)
    errors = tasks[1].forecast_errors
    assert errors is not None and np.isfinite(errors).all()
    yesterday = tasks[0].actual_hourly.to_numpy()[:24] - tasks[0].forecast_hourly[:24]
    assert np.allclose(errors[-1], yesterday)


def test_the_forecasters_native_libraries_run_on_one_thread_and_get_their_threads_back(
    prices: pd.Series,
) -> None:
    """OpenMP's waiting threads on a shared core made the year's forecast 5x slower: the case study
    forecasts on FORECAST_THREADS threads, and leaves the process's own limits as they were."""
    from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

    from scheduler.case_study import FORECAST_THREADS

    seen: list[set[int]] = []

    def spying(prices: pd.Series, train_end: date) -> PriceForecaster:
        seen.append({pool["num_threads"] for pool in threadpool_info()})
        return _small_ensemble(prices, train_end)

    before = {pool["num_threads"] for pool in threadpool_info()}
    build_tasks(prices, DAY, 1, CONFIG, forecaster=spying)
    assert FORECAST_THREADS == 1 and seen == [{1}]
    assert {pool["num_threads"] for pool in threadpool_info()} == before


def test_tracked_tasks_carry_the_persistence_of_their_own_past_errors(prices: pd.Series) -> None:
    from scheduler.scenarios import ERROR_WINDOW_DAYS, error_persistence

    plain = build_tasks(prices, DAY, 2, CONFIG, forecaster=_small_ensemble)
    assert [t.error_decay for t in plain] == [0.0, 0.0] and plain[0].forecast_errors is None
    tracked = build_tasks(prices, DAY, 2, CONFIG, forecaster=_small_ensemble, track_errors=True)
    for task in tracked:
        assert task.forecast_errors is not None and task.forecast_errors.shape == (ERROR_WINDOW_DAYS, 24)
        assert np.isfinite(task.forecast_errors).all()  # out-of-sample errors on every past day
        assert 0.3 < task.error_decay == error_persistence(task.forecast_errors) < 1.0
    # the same forecasts: tracking changes how the plan uses them, not what they are
    assert np.array_equal(tracked[1].forecast_hourly, plain[1].forecast_hourly)
