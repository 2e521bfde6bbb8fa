"""Input validation: every bad input is refused with its named error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scheduler.errors import (
    DepartureBeforeArrivalError,
    DuplicateIdError,
    InputError,
    InvalidParameterError,
    MisalignedIntervalError,
    NonFiniteValueError,
    OverlappingSessionsError,
    TargetAboveCapacityError,
    UnknownVehicleError,
)
from scheduler.inputs import DREvent, Horizon, Prices, Session, Site, Vehicle
from tests.scheduler.conftest import START, hours, session, small_problem, vehicle


def test_session_refuses_departure_before_arrival() -> None:
    with pytest.raises(DepartureBeforeArrivalError, match="s1"):
        Session("s1", "A", hours(2), hours(1), 0, 1)


def test_session_refuses_naive_times_and_negative_energy() -> None:
    with pytest.raises(InputError, match="time zone"):
        Session("s1", "A", datetime(2023, 1, 1), datetime(2023, 1, 2), 0, 1)
    with pytest.raises(InvalidParameterError, match="arrival_kwh"):
        Session("s1", "A", hours(0), hours(1), -1, 1)
    with pytest.raises(InvalidParameterError, match="negative"):
        Session.from_energy("s1", vehicle("A"), hours(0), hours(1), 0, -2)


def test_problem_refuses_target_above_capacity() -> None:
    a = vehicle("A", battery=40)
    with pytest.raises(TargetAboveCapacityError, match="s-A"):
        small_problem([a], [session(a, 0, 41)], buy=[1, 1, 1])


def test_problem_refuses_unknown_vehicle() -> None:
    a = vehicle("A")
    ghost = Session("s-x", "ghost", hours(0), hours(1), 0, 1)
    with pytest.raises(UnknownVehicleError, match="'ghost'"):
        small_problem([a], [ghost], buy=[1, 1, 1])


def test_problem_refuses_duplicate_ids_and_overlapping_sessions() -> None:
    a = vehicle("A")
    with pytest.raises(DuplicateIdError):
        small_problem([a, a], [], buy=[1, 1, 1])
    first = Session("s1", "A", hours(0), hours(2), 0, 1)
    second = Session("s2", "A", hours(1), hours(3), 0, 1)
    with pytest.raises(OverlappingSessionsError, match="s1 and s2"):
        small_problem([a], [first, second], buy=[1, 1, 1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_prices_refuse_non_finite(bad: float) -> None:
    with pytest.raises(NonFiniteValueError, match="interval 1"):
        Prices.build(Horizon(START, 3, 60), [1.0, bad, 2.0])


def test_prices_refuse_misaligned_series() -> None:
    horizon = Horizon(START, 3, 60)
    with pytest.raises(MisalignedIntervalError, match="2 values for 3"):
        Prices.build(horizon, [1.0, 2.0])
    hourly = pd.Series([1.0, 2.0], index=pd.date_range(START, periods=2, freq="h"))
    with pytest.raises(MisalignedIntervalError, match="no price for hour"):
        Prices.from_hourly(horizon, hourly)


def test_horizon_refuses_misaligned_start() -> None:
    with pytest.raises(MisalignedIntervalError):
        Horizon(START + timedelta(minutes=7), 4, 15)
    assert Horizon.day("2023-07-02").intervals == 96


def test_prices_from_hourly_repeat_each_hour_per_interval() -> None:
    horizon = Horizon(START, 8, 15)
    hourly = pd.Series([10.0, 20.0], index=pd.date_range(START, periods=2, freq="h", tz=UTC))
    prices = Prices.from_hourly(horizon, hourly, sell_spread_eur_mwh=5)
    assert prices.buy_eur_mwh.tolist() == [10] * 4 + [20] * 4
    assert prices.sell_eur_mwh.tolist() == [5] * 4 + [15] * 4


def test_vehicle_and_site_refuse_out_of_range_parameters() -> None:
    with pytest.raises(InvalidParameterError, match="eta_charge"):
        Vehicle("A", "o", 40, 10, eta_charge=1.2)
    with pytest.raises(InvalidParameterError, match="soc_min"):
        Vehicle("A", "o", 40, 10, soc_min=0.9, soc_max=0.5)
    with pytest.raises(InvalidParameterError, match="non-finite"):
        Vehicle("A", "o", float("nan"), 10)
    with pytest.raises(InvalidParameterError, match="import_limit_kw"):
        Site.build(Horizon(START, 2, 60), [-1, 1], 1)


def test_dr_event_applies_to_every_overlapping_interval() -> None:
    event = DREvent("e", hours(0.5), timedelta(minutes=30), 1.0)
    assert event.mask(Horizon(START, 4, 15)).tolist() == [False, False, True, True]
    assert event.mask(Horizon(START, 3, 60)).tolist() == [True, False, False]
    with pytest.raises(InvalidParameterError):
        DREvent("e", hours(0), timedelta(0), 1.0)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2023-13-45", "month must be in 1..12"),
        ("2023-02-30", "day is out of range for month"),
        ("yesterday", "'yesterday' is not a date (YYYY-MM-DD)"),
        ("", "'' is not a date"),
    ],
)
def test_parse_day_names_what_is_wrong(text: str, says: str) -> None:
    from scheduler.errors import InvalidDateError
    from scheduler.inputs import parse_day

    with pytest.raises(InvalidDateError) as refused:
        parse_day(text)
    assert says in str(refused.value)


def test_parse_day_takes_a_date_or_the_utc_day_of_a_moment() -> None:
    from scheduler.inputs import parse_day

    assert parse_day("2023-07-02") == datetime(2023, 7, 2, tzinfo=UTC)
    assert parse_day("2023-07-02T01:30+02:00") == datetime(2023, 7, 1, tzinfo=UTC)


@pytest.mark.parametrize("day", ["1999-01-01", "2031-01-01"])
def test_fleet_problem_refuses_a_day_without_prices(day: str) -> None:
    from scheduler.datasets import load_prices
    from scheduler.errors import DateOutOfRangeError
    from scheduler.fleet import fleet_problem

    with pytest.raises(
        DateOutOfRangeError, match=f"no prices for {day}: the price series covers 2015-01-01 to"
    ):
        fleet_problem(day, load_prices().eur_mwh)


def test_missing_price_file_is_a_named_data_file_error(tmp_path: Path) -> None:
    from scheduler.datasets import load_prices
    from scheduler.errors import DataFileError

    with pytest.raises(DataFileError, match="cannot read the file: No such file or directory"):
        load_prices(tmp_path / "missing.csv")
    with pytest.raises(DataFileError, match="cannot read the file: Is a directory"):
        load_prices(tmp_path)
