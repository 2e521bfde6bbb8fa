"""The JSON log: one line per event, a refusal with its station and name as fields of their own; the
console keeps to warnings; libraries' plumbing stays out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.logs import configure
from backend.operations.field import RegisterBackwardsError, reject


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


class Recorder:
    def __init__(self) -> None:
        self.rows: list[object] = []

    def add(self, row: object) -> None:
        self.rows.append(row)


def test_each_refusal_is_one_json_line_with_its_station_and_name(
    tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "platform.jsonl"
    configure(verbose=False, log_file=str(log))
    session = Recorder()
    for station in ("CS1", "CS2"):
        reject(session, station, RegisterBackwardsError(f"{station}: import register 900 Wh after 1,000 Wh"))  # type: ignore[arg-type]
    logging.getLogger("backend.market").info("market clock: job 7 settle_metered")
    logging.getLogger("apscheduler.executors.default").info("Running job tick")  # plumbing: held back
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["level"], e.get("station"), e.get("refusal")) for e in events] == [
        ("WARNING", "CS1", "RegisterBackwardsError"),
        ("WARNING", "CS2", "RegisterBackwardsError"),
        ("INFO", None, None),
    ]
    assert (
        events[0]["message"] == "RegisterBackwardsError from CS1: CS1: import register 900 Wh after 1,000 Wh"
    )
    assert {"ts", "logger", "pid"} <= set(events[0])
    assert len(session.rows) == 2  # and each stored as a refusal
    # the console: the two warnings only, never the INFO line nor the scheduler's
    console = capsys.readouterr().err
    assert console.count("RegisterBackwardsError from") == 2 and "market clock" not in console
    assert "Running job" not in console
