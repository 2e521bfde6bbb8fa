"""The case study's sample-average strategies (``--scenarios``), its day sample (``--every``) and its
pluggable forecaster (``--forecaster``): run end to end on a local Dask cluster of one worker."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scheduler.case_study import FORECASTERS, build_tasks, run_from_args
from scheduler.datasets import load_prices
from scheduler.errors import InvalidParameterError
from scheduler.fleet import FleetConfig
from scheduler.forecast import weekly_naive
from scheduler.scenarios import ERROR_WINDOW_DAYS

ARGS = ["--evs", "12", "--start", "2023-07-01", "--replan-every", "8", "--workers", "1"]
ARGS += ["--forecaster", "lear"]  # the default (validated) takes minutes to forecast


def test_scenarios_add_the_sample_average_plans_beside_the_forecast_ones(tmp_path: Path) -> None:
    run = run_from_args([*ARGS, "--days", "3", "--every", "2", "--scenarios", "3", "--out", str(tmp_path)])
    summary = run.figures["summary"]
    assert isinstance(summary, dict)
    assert list(summary) == [
        "uncontrolled", "smart", "perfect_foresight", "forecast", "forecast_interval", "saa", "saa_interval",
    ]  # fmt: skip
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [d["day"] for d in stored["days"]] == ["2023-07-01", "2023-07-03"]  # every second day
    assert stored["meta"]["scenarios"] == 3 and stored["meta"]["every"] == 2
    best = summary["perfect_foresight"]["net_cost_eur"]
    for name in ("saa", "saa_interval"):
        assert summary[name]["net_cost_eur"] >= best - 1e-6  # hindsight is never beaten
        assert summary[name]["shortfall_kwh"] == pytest.approx(0.0, abs=1e-6)
    report = (tmp_path / "report.md").read_text()
    assert "2023-07-01 for 3 days, every 2th day (2 days)" in report
    assert "saa keeps" in report and "sample average over 3 scenarios" in report
    # a re-run with other scenarios is another configuration, never mixed in
    with pytest.raises(Exception, match="scenarios 3 here, 4 asked"):
        run_from_args([*ARGS, "--days", "3", "--every", "2", "--scenarios", "4", "--out", str(tmp_path)])


def test_saa_runs_under_interval_knowledge_alone(tmp_path: Path) -> None:
    argv = [*ARGS, "--days", "1", "--price-knowledge", "interval", "--no-interval-stress", "--scenarios", "2"]
    run = run_from_args([*argv, "--out", str(tmp_path)])
    summary = run.figures["summary"]
    assert isinstance(summary, dict)
    assert list(summary) == ["uncontrolled", "smart", "perfect_foresight", "forecast", "saa"]
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["forecaster"] == "lear"


class _WeeklyNaive:
    """A forecaster as the case study sees one: the same hour a week before, from the past only."""

    def predict_series(self, prices: pd.Series, start: date, days: int, *, ahead: int = 1) -> pd.Series:
        prices = prices[prices.index >= pd.Timestamp(start - timedelta(days=7), tz="UTC")]  # all it reads
        frames = [
            pd.Series(weekly_naive(prices, start + timedelta(days=i)),
                      pd.date_range(pd.Timestamp(start + timedelta(days=i), tz="UTC"), periods=24, freq="h"))
            for i in range(days)
        ]  # fmt: skip
        return pd.concat(frames)


def test_the_price_forecaster_is_pluggable() -> None:
    prices = load_prices().eur_mwh
    config = FleetConfig(n_evs=3, interval_minutes=60, clip_to_day=False, horizon_hours=48)
    fitted: list[date] = []

    def factory(series: pd.Series, train_end: date) -> _WeeklyNaive:
        fitted.append(train_end)
        return _WeeklyNaive()

    tasks = build_tasks(prices, date(2023, 5, 10), 2, config, scenarios=2, forecaster=factory)
    # trained before the start, and once more before the window of past errors the scenarios draw on
    assert fitted == [date(2023, 5, 9), date(2023, 5, 10) - timedelta(days=ERROR_WINDOW_DAYS + 1)]
    week_before = prices["2023-05-03":"2023-05-04"].to_numpy()
    assert np.array_equal(tasks[0].forecast_hourly, week_before)
    errors = tasks[0].forecast_errors
    assert errors is not None
    last = prices["2023-05-09"].to_numpy() - prices["2023-05-02"].to_numpy()
    assert np.allclose(errors[-1], last)  # the day before, as the weekly-naive forecast missed it
    assert sorted(FORECASTERS) == ["ensemble", "lear", "recalibrated", "validated"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--scenarios", "-1"), ("--scenarios", "nan"), ("--every", "0"), ("--forecaster", "x")],
)
def test_bad_scenario_options_are_named_errors(tmp_path: Path, option: str, value: str) -> None:
    with pytest.raises(InvalidParameterError, match=option):
        run_from_args([*ARGS, "--days", "1", option, value, "--out", str(tmp_path)])


def test_a_billing_period_pays_the_share_of_its_hours_the_run_covers() -> None:
    from scheduler.case_study import billed_share
    from scheduler.tariff import load_tariff

    nl = load_tariff()
    assert billed_share("2023-01", 744, nl, 60) == 1.0  # January whole
    assert billed_share("2023-03", 743 * 4, nl, 15) == 1.0  # March loses an hour to summer time
    assert billed_share("2023-07", 96, nl, 60) == pytest.approx(96 / 744)  # three days and a night
    assert billed_share("2024-01", 23, nl, 60) == pytest.approx(23 / 744)  # a year's last night
