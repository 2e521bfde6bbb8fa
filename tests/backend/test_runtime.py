"""Each process of the platform sets its interpreter up the same way (:mod:`backend.runtime`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backend.cli import app
from backend.runtime import GC_THRESHOLDS


@pytest.fixture
def default_gc() -> Iterator[None]:
    """CPython's own thresholds during the test, this process's again after it."""
    kept = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*kept)


@pytest.mark.usefixtures("default_gc")
def test_every_v2g_command_collects_garbage_at_the_platforms_thresholds(tmp_path: Path) -> None:
    # a command refused for its input has still set its process up as every command does
    bad = tmp_path / "prices.csv"
    bad.write_text("utc,eur_mwh\n2023-07-02 00:00:00,abc\n")
    result = CliRunner().invoke(app, ["schedule", "--evs", "5", "--prices", str(bad)])
    assert result.exit_code == 2, result.output
    assert gc.get_threshold() == GC_THRESHOLDS


def collections(thresholds: tuple[int, int, int]) -> list[int]:
    """The collections of each generation while a re-plan's kind of burst is made: 30,000 dicts of a
    dict each, alive together until their station answers, then let go; three times."""
    kept = gc.get_threshold()
    counts = [0, 0, 0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counts[info["generation"]] += 1

    gc.collect()
    gc.set_threshold(*thresholds)
    gc.callbacks.append(count)
    try:
        for _ in range(3):
            burst = [{"period": {"limit": k}} for k in range(30_000)]
            del burst
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*kept)
    return counts


def test_the_thresholds_leave_a_burst_of_short_lived_containers_young() -> None:
    # CPython's defaults look at the young ones some 250 times and promote the survivors (each promotion
    # of old objects a step towards a traversal of the whole heap); the platform's, a few times, none older
    assert collections((700, 10, 10))[1] > 10
    young, middle, old = collections(GC_THRESHOLDS)
    assert young <= 3 and middle == old == 0
