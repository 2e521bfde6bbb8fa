"""A 3-day case study on a real Dask cluster (local, one worker): four strategies, outputs written,
every row checkable, finished days kept across runs, a failed day reported without losing the others,
and every bad option answered with a named error."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import scheduler.case_study as case_study_module
from scheduler.case_study import TERMS, prices_known_from, run_from_args, saving_kept_pct
from scheduler.datasets import load_prices
from scheduler.errors import (
    ClusterUnreachableError,
    DataFileError,
    DateOutOfRangeError,
    InvalidDateError,
    InvalidParameterError,
    OutputConflictError,
    SchedulerError,
    SolverFailedError,
)
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.inputs import Horizon


def test_three_day_case_study_runs_and_orders_the_strategies(tmp_path: Path) -> None:
    run = run_from_args(
        [
            "--evs",
            "40",
            "--start",
            "2023-07-01",
            "--days",
            "3",
            "--out",
            str(tmp_path),
            "--replan-every",
            "8",
            "--workers",
            "1",
            "--forecaster",
            "lear",  # the default (validated) takes minutes to forecast; see test_case_study_forecasts
        ]
    )
    assert len(run.lines) == 7 and run.lines[0].startswith("uncontrolled")
    summary = run.figures["summary"]
    assert isinstance(summary, dict)
    # the headline forecast follows the market's calendar; forecast_interval is its stress test
    assert list(summary) == ["uncontrolled", "smart", "perfect_foresight", "forecast", "forecast_interval"]
    net = {k: v["net_cost_eur"] for k, v in summary.items()}
    assert net["perfect_foresight"] <= net["smart"] + 1e-6 <= net["uncontrolled"] + 2e-6
    assert net["perfect_foresight"] <= net["forecast"] + 1e-6  # hindsight is never beaten
    assert net["perfect_foresight"] <= net["forecast_interval"] + 1e-6
    for name, row in summary.items():
        assert row["saving_kept_pct"] == pytest.approx(
            100 * (net["uncontrolled"] - net[name]) / (net["uncontrolled"] - net["perfect_foresight"])
        )
    assert summary["perfect_foresight"]["saving_kept_pct"] == pytest.approx(100.0)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [d["day"] for d in stored["days"]] == ["2023-07-01", "2023-07-02", "2023-07-03"]
    for name in ("cumulative_net_cost.png", "peak_import.png", "totals.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "report.md").read_text()
    assert "each delivery day's prices public at 12:45 CET/CEST the day before" in report
    assert f"keeps {summary['forecast']['saving_kept_pct']:.1f} % of it with day-ahead knowledge" in report
    assert stored["meta"]["price_knowledge"] == "day-ahead" and stored["meta"]["publication"] == "12:45"
    assert "net = import cost − export revenue + wear + shortfall penalty + capacity charge" in report
    # every row of the table recomputes from its columns (each shown to the cent)
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| ")]
    rows = [r for r in rows if r[0].strip() in summary][: len(summary)]  # the first table (the check follows)
    assert [r[0].strip() for r in rows] == list(summary)
    for row in rows:
        imp, exp, wear, short, capacity, total = (float(c.replace(",", "")) for c in row[1:7])
        assert capacity == 0.0  # no tariff
        assert imp - exp + wear + short + capacity == pytest.approx(total, abs=0.03)
    # and every day's figures in results.json, exactly; shortfall valued alike in every strategy
    assert (
        stored["identity"]
        == "net = import cost − export revenue + wear + shortfall penalty + capacity charge"
    )
    for day in stored["days"]:
        for strategy in summary:
            k = day[strategy]
            assert k["import_cost_eur"] - k["export_revenue_eur"] + k["degradation_eur"] + k[
                "shortfall_penalty_eur"
            ] == pytest.approx(k["net_cost_eur"], abs=1e-9)
            assert k["shortfall_penalty_eur"] == pytest.approx(0.6 * k["shortfall_kwh"], abs=1e-9)
            assert max(k["month_peaks_kw"].values()) == pytest.approx(k["peak_import_kw"], abs=1e-9)
            assert "flows" not in k  # the days' own flows stay in out/days
    assert "No tariff (`--tariff`)" in report and "| 2023-07 (96 of 744 h) |" in report
    assert set(TERMS) < set(summary["forecast"])
    # the connection: each hour once (the days' own 24 hours, and the last day's night), as the table says
    for strategy, x in summary.items():
        hours = [d[strategy] for d in stored["days"]] + [stored["days"][-1][strategy]["tail"]]
        imported = sum(h["import_cost_eur"] for h in hours)
        assert x["import_cost_eur"] == pytest.approx(imported, abs=1e-9)
    # the independent check: the days' own flows re-summed per interval hold every limit and give the bill
    connection = stored["connection"]
    limit = connection["site_import_limit_kw"]
    assert limit == 120.0 and connection["start"] == "2023-07-01T00:00:00+00:00"
    for strategy, checked in connection["strategies"].items():
        assert checked["above_import_limit"] == 0 and checked["above_export_limit"] == 0
        assert checked["agrees"], (strategy, checked["recomputed"], summary[strategy])
        assert checked["intervals"] == 4 * 24  # three days and the last night, hourly
        assert max(v for v in checked["import_kw"] if v is not None) <= limit + 1e-6
    assert connection["strategies"]["perfect_foresight"]["max_import_kw"] == pytest.approx(limit)  # it binds
    assert "| perfect_foresight | 96 |" in report and "agrees with the table to the cent" in report
    assert run.lines[-2].startswith("check at the connection: 0 interval(s) above a site limit")


def test_case_study_with_the_dutch_tariff_bills_by_component_and_lowers_the_monthly_peak(
    tmp_path: Path,
) -> None:
    from scheduler.tariff import NL_EXAMPLE, load_tariff

    argv = ["--evs", "40", "--start", "2023-07-01", "--days", "3", "--replan-every", "8", "--workers", "1"]
    argv += ["--forecaster", "lear"]
    run = run_from_args([*argv, "--tariff", str(NL_EXAMPLE), "--out", str(tmp_path)])
    summary = run.figures["summary"]
    assert isinstance(summary, dict)
    stored = json.loads((tmp_path / "results.json").read_text())
    nl = load_tariff()
    for name, x in summary.items():
        bill = x["bill"]
        # the all-in import cost is the bill's import components; export revenue is the feed-in
        imported = bill["energy"] + bill["supplier_fee"] + bill["energy_tax"] + bill["network_energy"]
        assert x["import_cost_eur"] == pytest.approx(imported + bill["vat"], abs=1e-6)
        assert x["export_revenue_eur"] == pytest.approx(bill["feed_in"], abs=1e-6)
        assert bill["vat"] == 0.0 and bill["vat_deducted"] == pytest.approx(0.21 * imported, abs=1e-6)
        # the capacity charge is 3 EUR per kW of July's highest import at the connection, for the share of
        # July's 744 hours the run covers: three days and the last night, 96 hours
        hours = [d[name] for d in stored["days"]] + [stored["days"][-1][name]["tail"]]
        months: dict[str, float] = {}
        for part in hours:
            for label, peak in part["period_peaks_kw"].items():
                months[label] = max(months.get(label, 0.0), peak)
        assert list(months) == ["2023-07"] and sum(h["period_intervals"]["2023-07"] for h in hours) == 96
        assert x["capacity_charge_eur"] == pytest.approx(3.0 * months["2023-07"] * 96 / 744, abs=1e-9)
        assert x["monthly_peaks_kw"] == pytest.approx(months)
        net = (
            x["import_cost_eur"] - x["export_revenue_eur"] + x["degradation_eur"] + x["shortfall_penalty_eur"]
        )
        assert x["net_cost_eur"] == pytest.approx(net + x["capacity_charge_eur"], abs=1e-6)
        assert stored["connection"]["strategies"][name]["agrees"]
    # with the peak charge on, every optimised strategy ends the month below uncontrolled charging
    base = summary["uncontrolled"]["monthly_peaks_kw"]["2023-07"]
    for name in ("smart", "perfect_foresight", "forecast", "forecast_interval"):
        assert summary[name]["monthly_peaks_kw"]["2023-07"] < base - 1.0
    # (no ordering of smart and perfect_foresight here: each day is planned given the month's peak so far,
    # not for the month as a whole, so more flexibility on one day can cost more on the next)
    report = (tmp_path / "report.md").read_text()
    assert "| strategy | energy (day-ahead) | supplier fee | energy tax |" in report
    assert "With the peak charge on: smart: monthly peak" in report
    assert stored["meta"]["tariff_name"] == nl.name


def timeless(value: Any) -> Any:
    """``value`` without its run times (``seconds``), which no two runs share."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


CASE_ARGS = ["--evs", "30", "--start", "2023-07-01", "--days", "3", "--replan-every", "8", "--workers", "1"]
CASE_ARGS += ["--forecaster", "lear"]


def test_case_study_keeps_finished_days_and_reports_a_failed_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler.solve import solve as real_solve

    def solve_failing_on_the_second_day(problem: Any, **options: Any) -> Any:
        if options.get("context") == "2023-07-02":
            raise SolverFailedError("2023-07-02 smart round 1: HiGHS ended 'Unknown' after every recovery")
        return real_solve(problem, **options)

    monkeypatch.setattr(case_study_module, "solve", solve_failing_on_the_second_day)
    argv = [*CASE_ARGS, "--out", str(tmp_path)]
    first = run_from_args(argv)
    said = "SolverFailedError: 2023-07-02 smart round 1: HiGHS ended 'Unknown' after every recovery"
    assert first.failed == [{"day": "2023-07-02", "error": f"smart: {said}; perfect_foresight: {said}"}]
    assert any(line.startswith("FAILED 2023-07-02: smart: SolverFailedError") for line in first.lines)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [d["day"] for d in stored["days"]] == ["2023-07-01", "2023-07-03"]
    assert stored["failed"] == first.failed and stored["meta"]["days_failed"] == 1
    # the strategies that finished 07-02 carried it into 07-03: the check counts what they committed
    assert all(x["agrees"] for x in stored["connection"]["strategies"].values())
    assert "**1 day(s) failed**" in (tmp_path / "report.md").read_text()
    names = ("forecast", "forecast_interval", "perfect_foresight", "smart", "uncontrolled")
    assert sorted(p.name for p in (tmp_path / "days").iterdir()) == sorted(
        f"2023-07-0{d}.{name}.json" for d in (1, 2, 3) for name in names
    )

    monkeypatch.setattr(case_study_module, "solve", real_solve)
    second = run_from_args(argv)  # the two strategies that failed run again from their failed day
    assert second.skipped == 1 and second.failed == []
    again = json.loads((tmp_path / "results.json").read_text())
    assert [d["day"] for d in again["days"]] == ["2023-07-01", "2023-07-02", "2023-07-03"]
    assert again["days"][0] == stored["days"][0]
    for name in ("uncontrolled", "forecast", "forecast_interval"):  # kept: they had finished every day
        assert again["days"][2][name] == stored["days"][1][name]
    # smart's third day ran again, carrying what its second day, now planned, committed: the resumed run
    # is the run that never failed, day by day
    monkeypatch.setattr(case_study_module, "LINK_DAYS", 2)  # and across a link of the thread's tasks
    straight = run_from_args([*CASE_ARGS, "--out", str(tmp_path / "straight")])
    unbroken = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert straight.failed == [] and timeless(again["days"]) == timeless(unbroken["days"])
    assert timeless(again["summary"]) == timeless(unbroken["summary"])
    assert all(x["agrees"] for x in again["connection"]["strategies"].values())

    with pytest.raises(OutputConflictError, match="evs 30 here, 31 asked"):
        run_from_args([*argv, "--evs", "31"])


@pytest.mark.parametrize(
    ("argv", "error", "says"),
    [
        (["--days", "0"], InvalidParameterError, "argument --days: invalid integer >= 1 value: '0'"),
        (["--evs", "-5"], InvalidParameterError, "argument --evs"),
        (["--start", "2031-01-01"], DateOutOfRangeError, "covers 2015-01-01 to 2023-12-31"),
        (["--start", "2023-12-31", "--days", "2"], DateOutOfRangeError, "2023-12-31 to 2024-01-01"),
        (["--start", "2015-01-10"], DateOutOfRangeError, "the price forecaster trains on the prices before"),
        (["--start", "2023-02-30"], InvalidDateError, "day is out of range for month"),
        (["--start", "yesterday"], InvalidDateError, "'yesterday' is not a date"),
        (["--interval-minutes", "7"], InvalidParameterError, "must divide an hour"),
        (["--interval-minutes", "0"], InvalidParameterError, "must divide an hour"),
        (["--v2g-share", "nan"], InvalidParameterError, "v2g_share"),
        (["--price-knowledge", "tomorrow"], InvalidParameterError, "invalid choice: 'tomorrow'"),
        (["--prices", "/nonexistent/prices.csv"], DataFileError, "/nonexistent/prices.csv: cannot read"),
        (["--frobnicate"], InvalidParameterError, "unrecognized arguments: --frobnicate"),
        (["--scheduler", "no-port-here"], ClusterUnreachableError, "missing port number"),
    ],
)
def test_case_study_refuses_bad_options_with_a_named_error(
    tmp_path: Path, argv: list[str], error: type[SchedulerError], says: str
) -> None:
    with pytest.raises(error) as refused:
        run_from_args([*CASE_ARGS, *argv, "--out", str(tmp_path / "out")])
    assert says in str(refused.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_case_study_refuses_an_output_that_is_a_file(tmp_path: Path) -> None:
    taken = tmp_path / "results"
    taken.write_text("not a directory")
    with pytest.raises(InvalidParameterError, match="is a file, not a directory"):
        run_from_args([*CASE_ARGS, "--out", str(taken)])


def test_case_study_script_answers_a_bad_option_with_one_line_and_exit_2(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "case_study.py"
    done = subprocess.run(
        [sys.executable, str(script), "--days", "0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "InvalidParameterError: case study: argument --days: invalid integer >= 1 value: '0'"
    ]


def test_prices_known_from_follows_the_day_ahead_calendar() -> None:
    # 48 hourly intervals from 2023-03-15 00:00 UTC (CET = UTC+1). Delivery day 15 March (local) runs
    # 23:00 UTC on the 14th to 23:00 UTC on the 15th; its prices are public at 12:45 CET on the 14th =
    # 11:45 UTC, 12.25 h before the start: known from step −12 (the first step at or after it). The
    # hour from 23:00 UTC on the 15th is local 16 March: public at 11:45 UTC on the 15th, step 12; the
    # last hour is local 17 March, public at 11:45 UTC on the 16th, step 36.
    horizon = Horizon(datetime(2023, 3, 15, tzinfo=UTC), 48, 60)
    assert prices_known_from(horizon).tolist() == [-12] * 23 + [12] * 24 + [36]
    assert prices_known_from(horizon, "interval").tolist() == list(range(48))
    # summer (CEST = UTC+2): delivery day 2 July runs 22:00 UTC on the 1st to 22:00 UTC on the 2nd,
    # public at 10:45 UTC on the 1st (step −13.25 → −13); local 3 July at 10:45 UTC on the 2nd (10.75 → 11)
    summer = Horizon(datetime(2023, 7, 2, tzinfo=UTC), 48, 60)
    assert prices_known_from(summer).tolist() == [-13] * 22 + [11] * 24 + [35] * 2
    # the day the clocks go forward (26 March 2023 has 23 local hours): day 27 starts at 22:00 UTC on the
    # 26th and is public at 12:45 CEST = 10:45 UTC on the 26th, 34.75 h after the start
    spring = Horizon(datetime(2023, 3, 25, tzinfo=UTC), 72, 60)
    assert prices_known_from(spring).tolist() == [-12] * 23 + [12] * 23 + [35] * 24 + [59] * 2
    # a publication time of one's own, and the old calendar (12:00 UTC, UTC days)
    assert prices_known_from(horizon, publication=time(13, 30)).tolist() == [-11] * 23 + [13] * 24 + [37]
    old = prices_known_from(horizon, publication=time(12), market_tz="UTC")
    assert old.tolist() == [-12] * 24 + [12] * 24


def test_the_default_calendar_reveals_a_day_at_12_45_cet_the_day_before_and_not_earlier() -> None:
    # 15-min steps from 2023-01-10 00:00 UTC: 12:45 CET on the 10th is 11:45 UTC = step 47 exactly; the
    # prices of local 11 January (from 23:00 UTC on the 10th) are public at step 47, not at step 46.
    horizon = Horizon(datetime(2023, 1, 10, tzinfo=UTC), 192, 15)
    known = prices_known_from(horizon)
    tomorrow = np.arange(92, 188)  # 23:00 UTC on the 10th to 22:45 UTC on the 11th
    assert set(known[tomorrow].tolist()) == {47}
    publication = datetime(2023, 1, 10, 11, 45, tzinfo=UTC)
    assert horizon.start + 47 * horizon.step == publication
    assert horizon.start + 46 * horizon.step < publication
    assert set(known[:92].tolist()) == {-49}  # today: public at 11:45 UTC yesterday, 12.25 h before


def test_saving_kept_is_the_share_of_perfect_foresights_saving() -> None:
    # uncontrolled 100, perfect foresight 80 (saves 20): a strategy at 85 keeps 15 of 20 = 75 %
    assert saving_kept_pct(100.0, 80.0, 85.0) == pytest.approx(75.0)
    assert saving_kept_pct(100.0, 80.0, 105.0) == pytest.approx(-25.0)
    assert saving_kept_pct(100.0, 100.0, 100.0) == 100.0


def test_fleet_problem_keeps_sessions_whole_and_stops_where_the_prices_end() -> None:
    prices = load_prices().eur_mwh
    config = FleetConfig(n_evs=50, clip_to_day=False, horizon_hours=48, interval_minutes=60)
    problem = fleet_problem("2023-06-01", prices, config, seed=1)
    assert problem.horizon.intervals == 48
    assert max(s.departure for s in problem.sessions) > problem.horizon.start + timedelta(days=1)
    last = fleet_problem("2023-12-31", prices, config, seed=1)  # the series ends at 2023-12-31 23:00
    assert last.horizon.intervals == 24
    np.testing.assert_array_equal(last.prices.buy_eur_mwh, prices["2023-12-31"].to_numpy())


def test_the_connection_check_finds_what_stacked_days_hide() -> None:
    """Two days each within the 120 kW limit on their own, stacked where the first day's night overlaps
    the second day: the summed flows break the limit there, and the table's figures that ignored the
    overlap do not agree with the bill recomputed from the sums."""
    from scheduler.case_study import connection_check

    config = FleetConfig(n_evs=40, interval_minutes=60, clip_to_day=False, horizon_hours=48)
    prices = load_prices().window("2023-07-01", "2023-07-05")

    def day(start: str, own: list[float]) -> dict[str, Any]:
        return {"day": start[:10], "smart": {"flows": {"start": start, "own_net_kw": own}}}

    first = [0.0] * 20 + [100.0] * 8 + [0.0] * 20  # 20:00 to 04:00
    second = [90.0] * 4 + [0.0] * 44  # 00:00 to 04:00 of the second day
    results = [day("2023-07-01T00:00:00+00:00", first), day("2023-07-02T00:00:00+00:00", second)]
    da = prices.to_numpy()
    summed = np.array(first + [0.0] * 24) + np.array([0.0] * 24 + second)
    stacked_cost = (np.dot(da[:48], first) + np.dot(da[24:72], second)) / 1000.0
    summary = {
        "smart": {
            "import_cost_eur": stacked_cost,
            "export_revenue_eur": 0.0,
            "capacity_charge_eur": 0.0,
            "degradation_eur": 1.0,
            "shortfall_penalty_eur": 0.0,
            "net_cost_eur": stacked_cost + 1.0,
        }
    }
    checked = connection_check(results, summary, config, prices)["strategies"]["smart"]
    assert checked["intervals"] == 72 and checked["above_import_limit"] == 4  # 190 kW from 00:00 to 04:00
    assert checked["max_import_kw"] == pytest.approx(190.0)
    assert checked["import_kw"][24:28] == [190.0] * 4
    assert checked["recomputed"]["import_cost_eur"] == pytest.approx(np.dot(da[:72], summed) / 1000.0)
    assert checked["agrees"]  # energy prices are linear: stacking moves no euro without a capacity charge
    summary["smart"]["import_cost_eur"] += 0.01  # a cent the table has and the sums do not
    assert not connection_check(results, summary, config, prices)["strategies"]["smart"]["agrees"]


def test_a_day_whose_site_earlier_days_filled_leaves_its_cars_short_instead_of_failing() -> None:
    """What earlier days committed holds the site at its 120 kW limit for the whole day: no car of the
    day can charge there, so the hard-target plan is infeasible; the day is planned with the shortfall
    priced (named among its recoveries), and the connection still holds the limit."""
    from scheduler.case_study import Thread, build_tasks, run_day
    from scheduler.forecast import LearForecaster

    config = FleetConfig(n_evs=40, clip_to_day=False, horizon_hours=48, interval_minutes=60)
    task = build_tasks(
        load_prices().eur_mwh, datetime(2023, 7, 1).date(), 1, config, forecaster=LearForecaster.fit
    )[0]
    day = [datetime(2023, 7, 1, h, tzinfo=UTC) for h in range(24)]
    carry = {"smart": Thread(committed_kw={pd.Timestamp(t): 120.0 for t in day})}
    result = run_day(task, carry, ("smart",))
    smart = result["smart"]
    assert result["recoveries"]["smart"][0] in (
        "SiteLimitInfeasibleError→shortfall",
        "TargetUnreachableError→shortfall",
    )
    assert smart["shortfall_kwh"] > 0 and smart["shortfall_penalty_eur"] == pytest.approx(
        0.6 * smart["shortfall_kwh"]
    )
    assert smart["peak_import_kw"] == pytest.approx(120.0)  # the committed load alone, at the limit
    assert max(smart["flows"]["own_net_kw"][:24]) <= 1e-6  # nothing of this day's own in its hours


def test_a_sample_of_days_pays_one_day_of_capacity_for_each_day_it_holds(tmp_path: Path) -> None:
    """Every 2nd day of four: each sampled day's plan runs 48 hours, and each stands for one day of its
    month in the capacity charge (two days of July's 744 hours), not for the two days its plan covers."""
    from scheduler.tariff import NL_EXAMPLE

    argv = ["--evs", "30", "--start", "2023-07-01", "--days", "4", "--every", "2", "--replan-every", "8"]
    argv += ["--workers", "1", "--forecaster", "lear", "--tariff", str(NL_EXAMPLE), "--out", str(tmp_path)]
    run = run_from_args(argv)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [d["day"] for d in stored["days"]] == ["2023-07-01", "2023-07-03"]
    assert run.failed == []
    for name, x in stored["summary"].items():
        rows = [d[name] for d in stored["days"]]
        assert all("tail" not in r for r in rows)  # the whole 48-hour plan is the sampled day's
        assert sum(r["period_intervals"]["2023-07"] for r in rows) == 48
        peak = max(r["period_peaks_kw"]["2023-07"] for r in rows)
        assert x["capacity_charge_eur"] == pytest.approx(3.0 * peak * 48 / 744, abs=1e-9)
        assert stored["connection"]["strategies"][name]["agrees"]
