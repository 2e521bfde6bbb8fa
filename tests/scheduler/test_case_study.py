"""A 3-day case study on a real Dask cluster (local, one worker): four strategies, outputs written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from scheduler.case_study import prices_known_from, run_from_args
from scheduler.datasets import load_prices
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
        ]
    )
    assert len(run.lines) == 5 and run.lines[0].startswith("uncontrolled")
    summary = run.figures["summary"]
    assert isinstance(summary, dict)
    assert set(summary) == {"uncontrolled", "smart", "perfect_foresight", "forecast"}
    net = {k: v["net_cost_eur"] for k, v in summary.items()}
    assert net["perfect_foresight"] <= net["smart"] + 1e-6 <= net["uncontrolled"] + 2e-6
    assert net["perfect_foresight"] <= net["forecast"] + 1e-6  # hindsight is never beaten
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [d["day"] for d in stored["days"]] == ["2023-07-01", "2023-07-02", "2023-07-03"]
    for name in ("cumulative_net_cost.png", "peak_import.png", "totals.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "perfect_foresight" in (tmp_path / "report.md").read_text()


def test_prices_known_from_follows_the_day_ahead_calendar() -> None:
    # 48 hourly intervals from 2023-03-15 00:00 UTC: the first day was public at 12:00 the day before
    # (step −12), the second at 12:00 on the first day (step 12); "interval" reveals each at its start.
    horizon = Horizon(datetime(2023, 3, 15, tzinfo=UTC), 48, 60)
    day_ahead = prices_known_from(horizon, "day-ahead")
    assert day_ahead.tolist() == [-12] * 24 + [12] * 24
    assert prices_known_from(horizon, "interval").tolist() == list(range(48))
    quarter = prices_known_from(Horizon(datetime(2023, 3, 15, tzinfo=UTC), 192, 15), "day-ahead")
    assert quarter.tolist() == [-48] * 96 + [48] * 96


def test_fleet_problem_keeps_sessions_whole_and_stops_where_the_prices_end() -> None:
    prices = load_prices().eur_mwh
    config = FleetConfig(n_evs=50, clip_to_day=False, horizon_hours=48, interval_minutes=60)
    problem = fleet_problem("2023-06-01", prices, config, seed=1)
    assert problem.horizon.intervals == 48
    assert max(s.departure for s in problem.sessions) > problem.horizon.start + timedelta(days=1)
    last = fleet_problem("2023-12-31", prices, config, seed=1)  # the series ends at 2023-12-31 23:00
    assert last.horizon.intervals == 24
    np.testing.assert_array_equal(last.prices.buy_eur_mwh, prices["2023-12-31"].to_numpy())
