"""Tariff files: the Dutch example as read, all-in prices per interval, billing periods in local time, the
bill by component, and named errors for bad files."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scheduler.errors import DataFileError
from scheduler.inputs import Horizon, Prices, Problem, Session, Site
from scheduler.solve import solve
from scheduler.tariff import NL_EXAMPLE, Tariff, load_tariff
from tests.scheduler.conftest import vehicle


def test_the_dutch_example_reads_with_its_sources() -> None:
    nl = load_tariff(NL_EXAMPLE)
    assert nl.energy_tax_eur_kwh == 0.03942  # 2023, 50,001–10,000,000 kWh a year
    assert (nl.vat_rate, nl.vat_deductible) == (0.21, True)
    assert (nl.capacity_eur_per_kw, nl.capacity_period) == (3.0, "month")
    assert [p.name for p in nl.time_of_use] == ["normal"]
    assert any("Belastingdienst" in s for s in nl.sources) and len(nl.sources) >= 3


def test_all_in_prices_follow_the_local_time_of_use_periods() -> None:
    nl = load_tariff()
    # Monday 9 January 2023 (CET): the normal rate runs 07:00–23:00 local = 06:00–22:00 UTC.
    winter = pd.date_range("2023-01-09", periods=24, freq="h", tz="UTC")
    buy, sell = nl.prices(np.full(24, 100.0), winter)
    low = 100 + 1000 * (0.004 + 0.03942 + 0.0040)  # 147.42 EUR/MWh
    normal = 100 + 1000 * (0.004 + 0.03942 + 0.0065)  # 149.92 EUR/MWh
    np.testing.assert_allclose(buy, [low] * 6 + [normal] * 16 + [low] * 2)
    np.testing.assert_allclose(sell, np.full(24, 96.0))
    # Monday 3 July 2023 (CEST): 07:00 local = 05:00 UTC; a Saturday is low all day
    summer = pd.date_range("2023-07-03", periods=24, freq="h", tz="UTC")
    np.testing.assert_allclose(nl.prices(np.zeros(24), summer)[0][4:6], [47.42, 49.92])
    saturday = pd.date_range("2023-07-08 05:00", periods=3, freq="h", tz="UTC")
    np.testing.assert_allclose(nl.prices(np.zeros(3), saturday)[0], [47.42] * 3)
    # VAT a household cannot deduct: the import side × 1.21, feed-in unchanged
    household = Tariff("h", energy_tax_eur_kwh=0.1, vat_rate=0.21, vat_deductible=False)
    buy, sell = household.prices(np.array([50.0]), winter[:1])
    assert buy[0] == pytest.approx(150 * 1.21) and sell[0] == 50.0


def test_billing_periods_are_local_months_and_days() -> None:
    nl = load_tariff()
    stamps = pd.DatetimeIndex([datetime(2023, 1, 31, 22, tzinfo=UTC), datetime(2023, 1, 31, 23, tzinfo=UTC)])
    assert nl.billing_periods(stamps) == ["2023-01", "2023-02"]  # 00:00 CET on 1 February
    daily = Tariff("d", capacity_eur_per_kw=1.0, capacity_period="day")
    assert daily.billing_periods(stamps) == ["2023-01-31", "2023-02-01"]
    charge = nl.peak_charge(Horizon(datetime(2023, 1, 31, tzinfo=UTC), 48, 60), {"2023-01": 12.0})
    assert charge is not None and charge.labels == ("2023-01", "2023-02")
    assert charge.period_of.tolist() == [0] * 23 + [1] * 25
    assert charge.peak_so_far_kw.tolist() == [12.0, 0.0]
    assert Tariff("none").peak_charge(Horizon(datetime(2023, 1, 31, tzinfo=UTC), 2, 60)) is None


def test_the_bill_splits_a_schedule_into_its_components() -> None:
    nl = load_tariff()
    stamps = pd.date_range("2023-01-09 05:00", periods=2, freq="h", tz="UTC")  # 06:00 (low), 07:00 (normal)
    # 10 kWh imported at 05:00 UTC and 4 kWh exported at 06:00 UTC, day-ahead 80 and 120 EUR/MWh
    parts = nl.bill(np.array([10.0, 0.0]), np.array([0.0, 4.0]), np.array([80.0, 120.0]), stamps, 1.0)
    assert parts["energy"] == pytest.approx(0.80)
    assert parts["supplier_fee"] == pytest.approx(0.04)
    assert parts["energy_tax"] == pytest.approx(0.3942)
    assert parts["network_energy"] == pytest.approx(0.04)
    assert parts["vat"] == 0.0 and parts["vat_deducted"] == pytest.approx(0.21 * 1.2742)
    assert parts["feed_in"] == pytest.approx(4 * (0.120 - 0.004))
    assert nl.capacity_charge({"2023-01": 10.0, "2023-02": 5.0}) == pytest.approx(45.0)


def test_applied_to_a_problem_the_tariff_prices_the_time_of_use_and_the_peak() -> None:
    # One car needs 10 kWh stored (η 0.9: 100/9 kWh from the grid) between 05:00 and 08:00 UTC on a
    # Monday at a flat day-ahead 100 EUR/MWh: 05:00 is low (147.42), 06:00 and 07:00 normal (149.92).
    nl = load_tariff()
    a = vehicle("A", charge=10)
    horizon = Horizon(datetime(2023, 1, 9, 5, tzinfo=UTC), 3, 60)
    plug = Session("s-A", "A", horizon.start, horizon.end, 0.0, 10.0)
    problem = Problem(horizon, (a,), (plug,), Site.build(horizon, 20, 20), Prices.build(horizon, [100] * 3))
    # Without the capacity charge: 10 kW in the low hour, the remaining 10/9 kWh in a normal one.
    energy_only = solve(replace(nl, capacity_eur_per_kw=0.0).apply(problem), mip_gap=1e-9)
    np.testing.assert_allclose(energy_only.import_kw[0], 10.0, atol=1e-7)
    assert energy_only.objective_eur == pytest.approx(-(10 * 0.14742 + 10 / 9 * 0.14992), abs=1e-9)
    # With 3 EUR per kW of the month's peak, 0.0025 EUR/kWh of time-of-use saving is not worth a kW:
    # the import is flat, 100/27 kW each hour.
    priced = nl.apply(problem)
    assert priced.peak_charge is not None and priced.peak_charge.labels == ("2023-01",)
    schedule = solve(priced, mip_gap=1e-9)
    np.testing.assert_allclose(schedule.import_kw, [100 / 27] * 3, atol=1e-7)
    expected = 100 / 27 * (0.14742 + 2 * 0.14992) + 3.0 * 100 / 27
    assert schedule.objective_eur == pytest.approx(-expected, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name = 'x'\nfoo = 1\n", "unknown key(s) foo"),
        ("name = \n", "not valid TOML"),
        ("[capacity]\neur_per_kw = -1\n", "capacity_eur_per_kw = -1.0 must be >= 0"),
        ("[capacity]\nperiod = 'week'\n", "capacity period 'week' must be 'month' or 'day'"),
        (
            "[[network.time_of_use]]\ndays = ['mon']\nfrom = '7h'\neur_kwh = 0.1\n",
            "'7h' is not a time of day",
        ),
        ("[[network.time_of_use]]\ndays = ['monday']\neur_kwh = 0.1\n", "unknown day(s) ['monday']"),
        ("[[network.time_of_use]]\ndays = ['mon']\n", "eur_kwh = nan is not finite"),
    ],
)
def test_a_bad_tariff_file_is_a_named_error(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(DataFileError) as refused:
        load_tariff(path)
    assert says in str(refused.value) and str(path) in str(refused.value)
    with pytest.raises(DataFileError, match="cannot read the tariff file"):
        load_tariff(tmp_path / "missing.toml")
