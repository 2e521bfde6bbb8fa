"""A 3-day case study on a real Dask cluster (local, one worker): four strategies, outputs written."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler.case_study import run_from_args


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
