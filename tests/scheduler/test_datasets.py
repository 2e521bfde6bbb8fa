"""Loaders of the shipped public data: real rows, and broken files with named errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scheduler.datasets import (
    ELAAD_DIR,
    EV_SPECS,
    EV_SPECS_V2G,
    PRICES_NL,
    load_elaad,
    load_ev_specs,
    load_prices,
)
from scheduler.errors import (
    DistributionError,
    DuplicateTimestampError,
    MalformedTimestampError,
    MissingColumnError,
    NonNumericValueError,
    PriceGapError,
    SpecError,
    UnsortedTimestampError,
)

HEADER = "utc,eur_mwh\n"


def write(tmp_path: Path, text: str, name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- real data ----------------------------------------------------------------


def test_load_prices_real_file_known_rows_and_the_one_gap() -> None:
    prices = load_prices(PRICES_NL)
    series = prices.eur_mwh
    assert str(pd.DatetimeIndex(series.index).tz) == "UTC"
    assert series.index.is_monotonic_increasing and series.index.is_unique
    assert series[pd.Timestamp("2015-01-01 00:00", tz="UTC")] == pytest.approx(34.94)
    assert series[pd.Timestamp("2023-12-31 23:00", tz="UTC")] == pytest.approx(0.10)
    # 2015-01-01 .. 2023-12-31 hourly, with the single upstream gap filled.
    assert len(series) == 3287 * 24  # every hour of 2015..2023 (3,287 days)
    assert [(g.start, g.hours) for g in prices.gaps] == [(pd.Timestamp("2023-12-30 23:00", tz="UTC"), 1)]
    # Negative prices are kept: 2023 reaches -500 EUR/MWh.
    year = prices.window("2023-01-01", "2024-01-01")
    assert year.min() == -500.0
    assert (year < 0).sum() >= 300


def test_load_prices_gap_policies(tmp_path: Path) -> None:
    path = write(
        tmp_path, HEADER + "2023-01-01 00:00:00,10\n2023-01-01 01:00:00,20\n2023-01-01 04:00:00,50\n"
    )
    interpolated = load_prices(path)
    assert interpolated.eur_mwh.tolist() == [10, 20, 30, 40, 50]
    assert [(g.start.hour, g.hours) for g in interpolated.gaps] == [(2, 2)]
    assert load_prices(path, gap_policy="ffill").eur_mwh.tolist() == [10, 20, 20, 20, 50]
    skipped = load_prices(path, gap_policy="skip")
    assert skipped.eur_mwh.tolist() == [10, 20, 50]
    assert skipped.gaps == interpolated.gaps
    with pytest.raises(PriceGapError) as err:
        load_prices(path, gap_policy="error")
    assert err.value.line == 4 and "2023-01-01 02:00 UTC (2 h)" in str(err.value)


def test_load_elaad_real_distributions() -> None:
    elaad = load_elaad(ELAAD_DIR)
    assert elaad.arrival_weekday.shape == (96, 3)
    assert elaad.arrival_weekend.columns.tolist() == ["private", "public"]
    assert elaad.arrival_weekday.sum().round(6).tolist() == [100.0, 100.0, 100.0]
    assert elaad.energy_demand_kwh.loc[0, "private"] == pytest.approx(99.9)
    assert elaad.energy_demand_kwh.loc[50, "private"] == pytest.approx(19.4)
    assert elaad.connection_time_h.loc[0, "private"] == pytest.approx(72.0)
    assert elaad.duration_given_hour.shape == (24, 48)
    np.testing.assert_allclose(elaad.duration_given_hour.sum(axis=1), 1.0)


def test_load_ev_specs_real_files() -> None:
    fleet = {m.name: m for m in load_ev_specs(EV_SPECS)}
    assert fleet["Nissan Leaf"].battery_kwh == 39 and fleet["Nissan Leaf"].max_ac_charge_kw == 3.6
    v2g = {m.name: m for m in load_ev_specs(EV_SPECS_V2G)}
    assert len(v2g) == 8
    assert v2g["Peugeot 208"].max_ac_discharge_kw == 7.4
    assert all(m.max_ac_discharge_kw > 0 for m in v2g.values())


# --- broken price files -----------------------------------------------------------


def test_load_prices_raises_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "utc,price\n2023-01-01 00:00:00,1\n")
    with pytest.raises(MissingColumnError) as err:
        load_prices(path)
    assert err.value.path == path and err.value.line == 1 and "'eur_mwh'" in str(err.value)


def test_load_prices_raises_duplicate_hour_with_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + "2023-01-01 00:00:00,1\n2023-01-01 01:00:00,2\n2023-01-01 01:00:00,2\n",
    )
    with pytest.raises(DuplicateTimestampError) as err:
        load_prices(path)
    assert err.value.line == 4
    assert "repeats line 3" in str(err.value)


def test_load_prices_raises_non_numeric_price(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "2023-01-01 00:00:00,1\n2023-01-01 01:00:00,n/a\n")
    with pytest.raises(NonNumericValueError) as err:
        load_prices(path)
    assert err.value.line == 3 and "'n/a'" in str(err.value)


@pytest.mark.parametrize("cell", ["", "inf", "nan"])
def test_load_prices_raises_on_empty_or_non_finite_price(tmp_path: Path, cell: str) -> None:
    path = write(tmp_path, HEADER + f"2023-01-01 00:00:00,{cell}\n")
    with pytest.raises(NonNumericValueError) as err:
        load_prices(path)
    assert err.value.line == 2


def test_load_prices_raises_malformed_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "2023-01-01 00:00:00,1\n31/12/2022 01:00,2\n")
    with pytest.raises(MalformedTimestampError) as err:
        load_prices(path)
    assert err.value.line == 3


def test_load_prices_raises_when_not_on_the_hour(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "2023-01-01 00:30:00,1\n")
    with pytest.raises(MalformedTimestampError, match="not the start of an hour"):
        load_prices(path)


def test_load_prices_raises_unsorted(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "2023-01-01 02:00:00,1\n2023-01-01 01:00:00,2\n")
    with pytest.raises(UnsortedTimestampError) as err:
        load_prices(path)
    assert err.value.line == 3


# --- broken ElaadNL and spec files ------------------------------------------------


@pytest.fixture
def elaad_copy(tmp_path: Path) -> Path:
    target = tmp_path / "elaad"
    shutil.copytree(ELAAD_DIR, target)
    return target


def test_load_elaad_raises_on_missing_column(elaad_copy: Path) -> None:
    path = elaad_copy / "distribution-of-arrival.csv"
    path.write_text(path.read_text(encoding="utf-8-sig").replace('"workplace"', '"depot"'))
    with pytest.raises(MissingColumnError, match="workplace"):
        load_elaad(elaad_copy)


def test_load_elaad_raises_on_increasing_quantiles(elaad_copy: Path) -> None:
    path = elaad_copy / "distribution-of-energy-demand.csv"
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    lines[11] = "10,99,7,9"  # percentile 10 above percentile 9
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DistributionError) as err:
        load_elaad(elaad_copy)
    assert err.value.line == 12 and "private" in err.value.reason


def test_load_elaad_raises_on_joint_rows_not_summing_to_one(elaad_copy: Path) -> None:
    joint = np.load(elaad_copy / "time_of_connection_vs_hour.npy")
    joint[5, 0] += 0.5
    np.save(elaad_copy / "time_of_connection_vs_hour.npy", joint)
    with pytest.raises(DistributionError, match="hour 5"):
        load_elaad(elaad_copy)


def test_load_ev_specs_raises_on_missing_field(tmp_path: Path) -> None:
    specs = json.loads(EV_SPECS.read_text())
    del specs["Nissan Leaf"]["battery_capacity"]
    path = write(tmp_path, json.dumps(specs, indent=4), "specs.json")
    with pytest.raises(SpecError) as err:
        load_ev_specs(path)
    assert "Nissan Leaf" in str(err.value) and "battery_capacity" in str(err.value)
    assert err.value.line is not None and '"Nissan Leaf"' in path.read_text().splitlines()[err.value.line - 1]


def test_load_ev_specs_raises_on_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, '{"a": {\n  "battery_capacity": 1,,\n}}', "specs.json")
    with pytest.raises(SpecError) as err:
        load_ev_specs(path)
    assert err.value.line == 2


def test_load_dr_events_reads_openadr_fields_and_schedules_obey_them(tmp_path: Path) -> None:
    from scheduler.datasets import load_dr_events
    from scheduler.fleet import FleetConfig, fleet_problem
    from scheduler.index import build_index
    from scheduler.schedule import kpis
    from scheduler.solve import solve

    path = write(
        tmp_path,
        "id,start,duration_s,import_limit_kw\n"
        "evening,2023-03-15T17:00:00Z,7200,20\nnight,2023-03-15T22:30:00+00:00,1800,5\n",
        "dr.csv",
    )
    events = load_dr_events(path)
    assert [(e.id, e.start.hour, e.duration.total_seconds(), e.import_limit_kw) for e in events] == [
        ("evening", 17, 7200.0, 20.0),
        ("night", 22, 1800.0, 5.0),
    ]
    base = fleet_problem("2023-03-15", load_prices().eur_mwh, FleetConfig(n_evs=30, site_kw_per_ev=6), seed=2)
    from dataclasses import replace

    problem = replace(base, dr_events=events)
    idx = build_index(problem, check_targets=False)
    mask = events[0].mask(problem.horizon) | events[1].mask(problem.horizon)
    schedule = solve(replace(problem, shortfall_penalty_eur_kwh=5.0))
    assert (schedule.import_kw[mask] <= idx.import_limit_kw[mask] + 1e-6).all()
    assert idx.import_limit_kw[mask].max() == 20.0
    assert kpis(schedule, idx, mask).dr_compliance == 1.0


def test_load_dr_events_refuses_a_time_without_zone_and_a_repeated_id(tmp_path: Path) -> None:
    from scheduler.datasets import load_dr_events

    naive = write(tmp_path, "id,start,duration_s,import_limit_kw\na,2023-03-15T17:00:00,60,1\n", "a.csv")
    with pytest.raises(MalformedTimestampError) as err:
        load_dr_events(naive)
    assert err.value.line == 2
    twice = write(
        tmp_path,
        "id,start,duration_s,import_limit_kw\na,2023-03-15T17:00:00Z,60,1\na,2023-03-15T18:00:00Z,60,1\n",
        "b.csv",
    )
    with pytest.raises(DuplicateTimestampError, match="repeats line 2"):
        load_dr_events(twice)
