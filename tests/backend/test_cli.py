"""The `v2g` command line on real data, through typer's runner."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from backend.cli import app

runner = CliRunner()


def test_schedule_writes_plot_and_integer_trades(tmp_path: Path) -> None:
    plot, trades = tmp_path / "day.png", tmp_path / "trades.csv"
    result = runner.invoke(
        app, ["schedule", "--evs", "40", "--date", "2023-07-02", "--plot", str(plot), "--trades", str(trades)]
    )
    assert result.exit_code == 0, result.output
    assert "uncontrolled" in result.output and "v2g" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(trades.open()))
    assert rows and all(int(r["energy_wh"]) > 0 for r in rows)
    assert {r["direction"] for r in rows} <= {"charge", "discharge"}


def test_schedule_refuses_a_malformed_price_file(tmp_path: Path) -> None:
    bad = tmp_path / "prices.csv"
    bad.write_text("utc,eur_mwh\n2023-07-02 00:00:00,abc\n")
    result = runner.invoke(app, ["schedule", "--evs", "5", "--prices", str(bad)])
    assert result.exit_code == 2
    assert "NonNumericValueError" in result.output and "prices.csv:2" in result.output
