"""The case study: a fleet over many days of real prices, four strategies, one table.

Strategies (names as in ``results.json``):

- ``uncontrolled``: full power from arrival (site limit shared), see :mod:`scheduler.baselines`;
- ``smart``: optimal charging without V2G, perfect foresight of the day's prices and sessions;
- ``perfect_foresight``: optimal V2G with perfect foresight;
- ``forecast``: V2G planned with price forecasts (by default the validated ensemble, refitted every day
  on the prices public before it) and an ElaadNL availability forecast, re-planned every
  ``replan_every`` intervals as vehicles really arrive (rolling horizon, warm-started); costs are
  realised at actual prices, and any energy an owner leaves without is charged at
  ``shortfall_value_eur_kwh`` (default 0.60 EUR/kWh, a public fast-charging price) into its net cost.
- ``saa`` (with ``--scenarios S``): the same rolling plan as a sample average over S scenarios
  (:mod:`scheduler.scenarios`): the price forecast plus whole days of the forecaster's own errors on the
  ``ERROR_WINDOW_DAYS`` days before the day, and S draws of the availability forecast; the committed
  interval's flows are one decision for every scenario, the rest each scenario's recourse
  (:func:`~scheduler.horizon.saa_rolling_horizon`). ``saa_interval`` is its stress test, as
  ``forecast_interval`` is ``forecast``'s.

The price forecaster is pluggable (``--forecaster``, :data:`FORECASTERS`, default ``validated``): a factory
that trains on the prices up to a day and then forecasts any later day from the days before it. Each day's
runs plan with the forecasts issued from the prices public at its 00:00 UTC under their own calendar
(:func:`scheduler.forecast.task_forecasts`): under ``interval`` knowledge the next day is forecast two days
ahead, from no price of the day itself. The command line's forecast strategies track their errors
(``--track-errors``, the default): as each price becomes public, the forecast of the hours still unknown
moves by the error just seen, fading by the persistence ρ of the forecaster's errors on the 56 days
before the day (:func:`scheduler.scenarios.error_persistence`); the library's :func:`build_tasks` does
so with ``track_errors=True``.

What the ``forecast`` strategy knows of prices (``price_knowledge``): ``day-ahead`` (default) follows the
market's calendar, each delivery day's prices (a day in Europe/Amsterdam time) public at 12:45 CET/CEST
the day before (``--publication``), forecasts only for hours not yet published; ``interval`` reveals each
price only when its interval starts, so every decision is taken on forecasts, as an aggregator that must
commit before its prices are settled. The stress test ``forecast_interval`` (the same plan under
``interval`` knowledge) runs beside the headline unless ``--no-interval-stress``. With ``day-ahead``
knowledge and departure times known at plug-in, re-planning loses little to perfect foresight unless the
site limit binds: sessions interact only through the site, so a surprise arrival changes no other
session's optimum.

The run is one operation of one grid connection, not a stack of independent days. Each day's fleet is a
new draw of sessions arriving that day, planned on a horizon of ``horizon_hours`` (default 48 h, so
evening arrivals can use the night) and kept whole in that day's plan. Each strategy is a thread of days
(:class:`Thread`): what a day's sessions are committed to after the day ends (a car plugged in at 20:00
charging through the night) is the next day's site base load where it imports and generation where it
exports, so the next day's plan sees it, and every site limit and the peak of the capacity charge hold
on the connection's summed flows at every interval. The connection's figures (import cost, export
revenue, peaks, the bill) count each hour once: each day's own 24 hours, whose flows are its sessions'
plus what earlier days committed, and the last day's night. Wear and shortfall are each session's, in
the day it arrived. :func:`connection_check` re-sums the days' own flows per interval independently of
that bookkeeping, checks them against the limits and recomputes the bill; the report shows both, and
``results.json`` carries the summed flows of every interval.

With ``--tariff FILE`` (see :mod:`scheduler.tariff`) every strategy's objective and bill are the tariff's
all-in prices and its capacity charge on each billing period's peak import. Each day is planned given
the peak its billing periods reached on the days before (a peak already paid for is free to use): the
plan is optimal for its day given the month so far, not for the month as a whole, so strategies with
perfect foresight of the day are no longer bounds on the others over a month, and "saving kept" can
pass 100 %. A billing period the run covers only in part (a run of a few days; the month the last
night reaches into) pays the share of its hours the run covers (:func:`billed_share`).

The strategies run in parallel on a Dask cluster (a local one by default, or any scheduler address),
each strategy's days in order in one task, the costliest first. A re-run with the same ``--out``
continues each strategy after the days it finished in order (:class:`DayStore`), and gives the answer of
a run that never stopped.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from scheduler.baselines import uncontrolled
from scheduler.cluster import dask_client
from scheduler.datasets import PRICES_NL, load_prices
from scheduler.errors import (
    DateOutOfRangeError,
    InfeasibleScheduleError,
    InvalidParameterError,
    MisalignedIntervalError,
    OutputConflictError,
)
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.forecast import (
    LearForecaster,
    RecalibratedLear,
    ValidatedEnsemble,
    availability_forecast,
    make_price_forecaster,
    task_forecasts,
)
from scheduler.horizon import (
    DAY_AHEAD_PUBLICATION,
    MARKET_TIME_ZONE,
    PriceKnowledge,
    RollingResult,
    prices_known_from,
    rolling_horizon,
    saa_rolling_horizon,
)
from scheduler.index import build_index
from scheduler.inputs import Problem, parse_day
from scheduler.scenarios import ERROR_WINDOW_DAYS, error_persistence, forecast_errors, scenarios_for
from scheduler.schedule import SHORTFALL_VALUE_EUR_KWH, Kpis, Schedule, kpis
from scheduler.solve import solve
from scheduler.tariff import Tariff, load_tariff, local_period_hours

logger = logging.getLogger(__name__)

#: Every strategy a run can hold, in table order; ``forecast_interval`` is the stress test of ``forecast``
#: (the same plan when each price is public only once its interval starts), absent when not run; ``saa``
#: and ``saa_interval`` are the sample-average plans, run with ``--scenarios``.
STRATEGIES = (
    "uncontrolled",
    "smart",
    "perfect_foresight",
    "forecast",
    "forecast_interval",
    "saa",
    "saa_interval",
)
__all__ = ["FORECASTERS", "STRATEGIES", "prices_known_from", "run_from_args"]


class PriceForecaster(Protocol):
    """What the case study asks of a price forecaster: hourly forecasts (UTC index) for ``days`` days from
    ``start``, each day from the prices public before its auction result (``ahead=1``) or, with
    ``ahead=2``, issued at 00:00 UTC of the day before it (from the prices before that moment only)."""

    def predict_series(self, prices: pd.Series, start: date, days: int, *, ahead: int = 1) -> pd.Series: ...


#: A forecaster trained on the prices up to a day (inclusive); it then forecasts the days after it.
ForecasterFactory = Callable[[pd.Series, date], PriceForecaster]


def _validated(prices: pd.Series, train_end: date) -> PriceForecaster:
    return make_price_forecaster("ensemble")  # refits itself every day on the days before it


def _recalibrated(prices: pd.Series, train_end: date) -> PriceForecaster:
    return RecalibratedLear((728,))  # refits itself every day on the days before it


def _ensemble(prices: pd.Series, train_end: date) -> PriceForecaster:
    return RecalibratedLear()


#: The price forecasters ``--forecaster`` can name: ``validated`` (the default) the validated ensemble of
#: daily-recalibrated LEAR models and gradient-boosted trees (:class:`~scheduler.forecast.ValidatedEnsemble`),
#: ``lear`` fitted once on the two years before the start, ``recalibrated`` refitted every day,
#: ``ensemble`` a daily-refitted LEAR ensemble over several calibration windows (see
#: :mod:`scheduler.forecast`).
FORECASTERS: dict[str, ForecasterFactory] = {
    "validated": _validated,
    "lear": LearForecaster.fit,
    "recalibrated": _recalibrated,
    "ensemble": _ensemble,
}
DEFAULT_FORECASTER = "validated"
#: Threads the forecasters' native libraries (OpenMP for the boosted trees, BLAS for the ridge fits) may
#: use while a case study forecasts its days. One: the validated ensemble forecast 2023 in 28 s on one
#: thread and 36 s (72 CPU s) on two, and with the second core busy OpenMP's waiting threads made the
#: same forecast take over 3 minutes.
FORECAST_THREADS = 1


class _Issued:
    """Forecasts already made (day-ahead ones and, when asked for, two-day-ahead ones), served to
    :func:`~scheduler.forecast.task_forecasts` for each price calendar without forecasting again."""

    def __init__(self, one: pd.Series, two: pd.Series | None) -> None:
        self.one, self.two = one, two

    def predict_series(self, prices: pd.Series, start: date, days: int, *, ahead: int = 1) -> pd.Series:
        series = self.one if ahead == 1 else self.two
        if series is None:
            raise InvalidParameterError("no two-day-ahead forecasts were made")
        lo = pd.Timestamp(start, tz="UTC")
        return series[(series.index >= lo) & (series.index < lo + pd.Timedelta(days=days))]

    def predict_day(self, prices: pd.Series, day: date) -> np.ndarray:
        return self.predict_series(prices, day, 1).to_numpy()


def issued_forecasts(
    model: PriceForecaster, prices: pd.Series, start: date, days: int, *, two_ahead: bool
) -> tuple[pd.Series, pd.Series | None]:
    """``model``'s day-ahead forecasts of the ``days`` days from ``start`` and, with ``two_ahead``, its
    forecasts of the same days issued at 00:00 UTC of the day before each (one run of the validated
    ensemble gives both)."""
    if isinstance(model, ValidatedEnsemble):
        run = model.run(prices, start, days, ahead=2 if two_ahead else 1)
        return run.series(1), run.series(2) if two_ahead else None
    one = model.predict_series(prices, start, days)
    return one, model.predict_series(prices, start, days, ahead=2) if two_ahead else None


@dataclass(frozen=True)
class DayTask:
    day: date
    actual_hourly: pd.Series  # the day and the next (as far as the series goes)
    forecast_hourly: np.ndarray  # the same hours, forecast as public at the day's 00:00 UTC (day-ahead)
    config: FleetConfig
    seed: int
    replan_every: int
    mip_gap: float
    shortfall_value_eur_kwh: float = SHORTFALL_VALUE_EUR_KWH
    price_knowledge: PriceKnowledge = "day-ahead"
    publication: clock_time = DAY_AHEAD_PUBLICATION
    interval_stress: bool = False  # also run ``forecast_interval`` (and ``saa_interval``)
    tariff: Tariff | None = None  # prices are day-ahead prices when None
    scenarios: int = 0  # also run ``saa`` over this many scenarios (0: not)
    #: the forecaster's errors on the ``ERROR_WINDOW_DAYS`` days before ``day`` (rows of 24 hours), the
    #: pool the price scenarios are drawn from (when ``scenarios`` > 0)
    forecast_errors: np.ndarray | None = None
    #: the same hours as forecast from the prices public at the day's 00:00 UTC under ``interval``
    #: knowledge (the next day forecast two days ahead); used by every run under ``interval`` knowledge
    #: (``forecast_hourly`` when None)
    forecast_hourly_interval: np.ndarray | None = None
    #: ρ of the forecast strategies' error tracking (0: not tracked), from ``forecast_errors``
    #: (:func:`scheduler.scenarios.error_persistence`)
    error_decay: float = 0.0
    #: hours from the day's start to the next task's (24 in a continuous run; ``every`` days in a sample):
    #: the day's own hours at the connection; its plan's later hours are committed for the next day
    step_hours: int = 24

    def forecasts_for(self, knowledge: PriceKnowledge) -> np.ndarray:
        """The hourly forecasts a run under ``knowledge`` plans with."""
        if knowledge == "interval" and self.forecast_hourly_interval is not None:
            return self.forecast_hourly_interval
        return self.forecast_hourly


def plan_with_forecasts(
    problem: Problem,
    forecast_hourly: np.ndarray,
    config: FleetConfig,
    *,
    seed: int,
    replan_every: int,
    mip_gap: float = 1e-4,
    shortfall_value_eur_kwh: float = SHORTFALL_VALUE_EUR_KWH,
    price_knowledge: PriceKnowledge = "day-ahead",
    publication: clock_time = DAY_AHEAD_PUBLICATION,
    tariff: Tariff | None = None,
    context: str = "",
    error_decay: float = 0.0,
) -> RollingResult:
    """The ``forecast`` strategy: rolling re-planning with hourly price forecasts (used for both buy and
    sell) where prices are not yet public (see :func:`~scheduler.horizon.prices_known_from`), and an
    ElaadNL availability forecast drawn with ``seed``. With a ``tariff``, ``problem`` holds its all-in
    prices (:meth:`~scheduler.tariff.Tariff.apply`) and the forecasts, day-ahead prices, are made all-in
    by the same tariff. ``error_decay`` > 0 tracks the forecast's errors as prices become public
    (``error_decay_per_hour`` of :func:`~scheduler.horizon.saa_rolling_horizon`)."""
    forecast = np.repeat(
        np.asarray(forecast_hourly, dtype=np.float64), 60 // problem.horizon.interval_minutes
    )
    if len(forecast) != problem.horizon.intervals:
        raise MisalignedIntervalError(
            f"{len(forecast_hourly)} hourly forecasts for a horizon of {problem.horizon.intervals} intervals"
        )
    buy_forecast, sell_forecast = forecast, forecast
    if tariff is not None:
        buy_forecast, sell_forecast = tariff.prices(forecast, problem.horizon.timestamps)
    vehicles, sessions = availability_forecast(problem.horizon.start.date(), config, seed=seed)
    return rolling_horizon(
        problem,
        buy_forecast_eur_mwh=buy_forecast,
        sell_forecast_eur_mwh=sell_forecast,
        session_forecast=sessions,
        forecast_vehicles=vehicles,
        prices_known_from=prices_known_from(problem.horizon, price_knowledge, publication=publication),
        replan_every=replan_every,
        mip_gap=mip_gap,
        shortfall_value_eur_kwh=shortfall_value_eur_kwh,
        context=context,
        error_decay_per_hour=error_decay,
    )


def plan_with_scenarios(
    problem: Problem,
    forecast_hourly: np.ndarray,
    errors: np.ndarray,
    config: FleetConfig,
    *,
    scenarios: int,
    seed: int,
    replan_every: int,
    mip_gap: float = 1e-4,
    shortfall_value_eur_kwh: float = SHORTFALL_VALUE_EUR_KWH,
    price_knowledge: PriceKnowledge = "day-ahead",
    publication: clock_time = DAY_AHEAD_PUBLICATION,
    tariff: Tariff | None = None,
    context: str = "",
    error_decay: float = 0.0,
) -> RollingResult:
    """The ``saa`` strategy: :func:`plan_with_forecasts` as a sample-average plan over ``scenarios``
    scenarios (:func:`scheduler.scenarios.scenarios_for`): price paths of the forecast plus ``errors``
    (the forecaster's past errors, whole days), arrival draws of the availability forecast from ``seed``
    (draw 0 is the point forecast's own); ``error_decay`` as :func:`plan_with_forecasts`."""
    drawn = scenarios_for(
        problem.horizon, forecast_hourly, errors, config, scenarios, seed=seed, tariff=tariff
    )
    return saa_rolling_horizon(
        problem,
        drawn,
        prices_known_from=prices_known_from(problem.horizon, price_knowledge, publication=publication),
        replan_every=replan_every,
        mip_gap=mip_gap,
        shortfall_value_eur_kwh=shortfall_value_eur_kwh,
        context=context,
        error_decay_per_hour=error_decay,
    )


@dataclass
class Thread:
    """What one strategy carries from a day to the next, as an aggregator running one connection does:
    the peak import each billing period has reached (kW, by label), and the net import (kW, by UTC
    interval start; export < 0) that earlier days' sessions are committed to after the end of their own
    day (a car plugged in at 20:00 charging through the night)."""

    peaks: dict[str, float] = field(default_factory=dict)
    committed_kw: dict[pd.Timestamp, float] = field(default_factory=dict)

    def copy(self) -> Thread:
        return Thread(dict(self.peaks), dict(self.committed_kw))


#: Per strategy, its :class:`Thread`.
Carry = dict[str, Thread]


def run_day(task: DayTask, carry: Carry | None = None, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every strategy (or those in ``only``) on one day: KPIs and seconds per strategy, and the solver
    recoveries each took. Energy an owner leaves without is valued at ``shortfall_value_eur_kwh`` in
    every strategy. Each strategy's problem carries its :class:`Thread` (``carry``, updated in place):
    the flows earlier days committed into this day's hours are the site's base load (import) or
    generation (export), so every limit and the peak hold on the connection's summed flows; its import
    and export cost, peaks and bill are the connection's over the day's own hours (``step_hours``), and
    the rest of its horizon (``tail``) is committed for the next day.

    A day that fails after every recovery is returned as ``{"day": ..., "error": "Name: message"}``
    (never raised), so that one day cannot lose the others."""
    try:
        return _run_day(task, {} if carry is None else carry, only)
    except Exception as exc:  # a day's failure is a result of the study, reported with its name
        logger.exception("case study day %s failed", task.day)
        return {"day": task.day.isoformat(), "error": f"{type(exc).__name__}: {exc}"}


def run_link(tasks: list[DayTask], thread: Thread, name: str) -> tuple[list[dict[str, Any]], Thread]:
    """``name``'s days in order from ``thread``: their results, and the thread after them (what the next
    link of days carries)."""
    carry = {name: thread.copy()}
    return [run_day(task, carry, (name,)) for task in tasks], carry[name]


def _thread_of(link: tuple[list[dict[str, Any]], Thread]) -> Thread:
    return link[1]


#: Days per Dask task of a strategy's thread: each link's days are kept as soon as it finishes.
LINK_DAYS = 14


def with_committed(problem: Problem, committed_kw: dict[pd.Timestamp, float]) -> Problem:
    """``problem`` with the net import earlier days committed to in its intervals added to the site:
    as base load where it imports, as generation where it exports."""
    stamps = problem.horizon.timestamps
    flows = np.array([committed_kw.get(t, 0.0) for t in stamps], dtype=np.float64)
    if not flows.any():
        return problem
    site = problem.site
    flows = np.clip(flows, -site.export_limit_kw, site.import_limit_kw)  # solver tolerance, nothing more
    return replace(
        problem,
        site=replace(
            site,
            base_load_kw=site.base_load_kw + np.maximum(flows, 0.0),
            pv_kw=site.pv_kw + np.maximum(-flows, 0.0),
        ),
    )


def _interval_counts(labels: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts


def _at_connection(
    net_kw: np.ndarray,
    buy_eur_mwh: np.ndarray,
    sell_eur_mwh: np.ndarray,
    day_ahead_eur_mwh: np.ndarray,
    stamps: pd.DatetimeIndex,
    dt_h: float,
    tariff: Tariff | None,
    counted: int | None = None,
) -> dict[str, Any]:
    """The connection's figures over some hours from its net import (kW per interval): import cost and
    export revenue at the problem's prices (all-in with a tariff), peaks, each local month's (and billing
    period's) peak, and with a tariff the bill by component. The intervals each month and billing period
    is covered for (what its capacity charge is prorated by) are the first ``counted`` only (all by
    default): a sampled day stands for one day of its month, though its plan runs on."""
    imported, exported = np.maximum(net_kw, 0.0), np.maximum(-net_kw, 0.0)
    months = month_labels(stamps)
    part: dict[str, Any] = {
        "import_cost_eur": float(np.dot(buy_eur_mwh, imported) * dt_h / 1000.0),
        "export_revenue_eur": float(np.dot(sell_eur_mwh, exported) * dt_h / 1000.0),
        "peak_import_kw": float(imported.max(initial=0.0)),
        "peak_export_kw": float(exported.max(initial=0.0)),
        "month_peaks_kw": _peaks_by_label(months, imported),
        "month_intervals": _interval_counts(months[:counted]),
    }
    if tariff is not None:
        periods = tariff.billing_periods(stamps)
        part["bill"] = tariff.bill(imported, exported, day_ahead_eur_mwh, stamps, dt_h)
        part["period_peaks_kw"] = _peaks_by_label(periods, imported)
        part["period_intervals"] = _interval_counts(periods[:counted])
    return part


def month_labels(timestamps: pd.DatetimeIndex) -> list[str]:
    """The local (Europe/Amsterdam) month of each interval start, as the report's monthly peaks use."""
    return list(pd.DatetimeIndex(timestamps).tz_convert(MARKET_TIME_ZONE).strftime("%Y-%m"))


def _peaks_by_label(labels: list[str], import_kw: np.ndarray) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for label, value in zip(labels, np.asarray(import_kw, dtype=np.float64).tolist(), strict=True):
        peaks[label] = max(peaks.get(label, 0.0), value)
    return peaks


def _run_day(task: DayTask, carry: Carry, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    context = task.day.isoformat()
    market = fleet_problem(context, task.actual_hourly, task.config, seed=task.seed)  # day-ahead prices
    tariff = task.tariff
    stamps = market.horizon.timestamps
    dt = market.horizon.dt_h
    n = market.horizon.intervals
    own_hours = min(n, task.step_hours * 60 // market.horizon.interval_minutes)  # the day's own intervals
    day_intervals = 24 * 60 // market.horizon.interval_minutes
    out: dict[str, Any] = {"day": context, "seconds": {}, "recoveries": {}}

    def wanted(name: str) -> bool:
        return only is None or name in only

    def problem_for(name: str) -> Problem:
        thread = carry.setdefault(name, Thread())
        problem = with_committed(market, thread.committed_kw)
        return problem if tariff is None else tariff.apply(problem, thread.peaks)

    def record(name: str, problem: Problem, schedule: Schedule, figures: Kpis | None = None) -> None:
        if figures is None:
            valued = build_index(
                replace(problem, shortfall_penalty_eur_kwh=task.shortfall_value_eur_kwh), check_targets=False
            )
            figures = kpis(schedule, valued)
        own = schedule.charge_kw.sum(axis=0) - schedule.discharge_kw.sum(axis=0)  # this day's sessions
        net = own + (problem.site.base_load_kw - problem.site.pv_kw)  # and what earlier days committed
        buy, sell = problem.prices.buy_eur_mwh, problem.prices.sell_eur_mwh
        da = market.prices.buy_eur_mwh

        def part(window: slice, counted: int | None = None) -> dict[str, Any]:
            return _at_connection(
                net[window], buy[window], sell[window], da[window], stamps[window], dt, tariff, counted
            )

        row: dict[str, Any] = figures.as_dict()
        del row["peak_charge_eur"]  # the bill's capacity charge is the run's, on the connection's peaks
        row.update(part(slice(0, own_hours), min(own_hours, day_intervals)))
        row["net_cost_eur"] = (
            row["import_cost_eur"]
            - row["export_revenue_eur"]
            + row["degradation_eur"]
            + row["shortfall_penalty_eur"]
        )
        if own_hours < n:
            row["tail"] = part(slice(own_hours, n))
        row["flows"] = {
            "start": stamps[0].isoformat(),
            "own_net_kw": own.tolist(),
            # what earlier days committed into the day's own hours (the check counts it where the day
            # before is not among the finished days, e.g. another strategy failed on it)
            "committed_in_kw": (net[:own_hours] - own[:own_hours]).tolist(),
            "committed_out_kw": net[own_hours:].tolist(),
        }
        out[name] = row
        thread = carry[name]
        thread.peaks = _max_peaks([{"period_peaks_kw": thread.peaks}, row], "period_peaks_kw")
        thread.committed_kw = dict(zip(stamps[own_hours:], net[own_hours:].tolist(), strict=True))

    def timed(name: str, started: float) -> None:
        out["seconds"][name] = round(time.perf_counter() - started, 3)

    if wanted("uncontrolled"):
        t = time.perf_counter()
        plain = problem_for("uncontrolled")
        record("uncontrolled", plain, uncontrolled(plain))
        out["recoveries"]["uncontrolled"] = []
        timed("uncontrolled", t)
    for name, v2g in (("smart", False), ("perfect_foresight", True)):
        if not wanted(name):
            continue
        t = time.perf_counter()
        problem = problem_for(name)
        taken: list[str] = []
        try:
            schedule = solve(problem, v2g=v2g, mip_gap=task.mip_gap, strategy=name, context=context)
        except InfeasibleScheduleError as exc:
            # what earlier days committed holds the site at its limit when a car of this day must charge
            # (a car plugged in at midnight, needing energy at once): that car leaves short, the energy
            # valued at the shortfall price as in every strategy, and the day is planned
            logger.info("%s %s: %s; planned with the shortfall priced", context, name, exc)
            # priced far above any energy or peak price, so only the car that cannot be served leaves
            # short (the KPIs value that energy at the run's shortfall price, as everywhere)
            problem = replace(problem, shortfall_penalty_eur_kwh=UNSERVABLE_EUR_KWH)
            schedule = solve(problem, v2g=v2g, mip_gap=task.mip_gap, strategy=name, context=context)
            taken.append(f"{type(exc).__name__}→shortfall")
        record(name, problem, schedule)
        out["recoveries"][name] = taken + list(schedule.recoveries)
        timed(name, t)
    runs: list[tuple[str, PriceKnowledge]] = [("forecast", task.price_knowledge)]
    if task.interval_stress and task.price_knowledge != "interval":
        runs.append(("forecast_interval", "interval"))
    if task.scenarios:
        runs += [(name.replace("forecast", "saa"), knowledge) for name, knowledge in runs]
    for name, knowledge in runs:
        if not wanted(name):
            continue
        t = time.perf_counter()
        problem = problem_for(name)
        common: dict[str, Any] = {
            "seed": task.seed + 7_919,
            "replan_every": task.replan_every,
            "mip_gap": task.mip_gap,
            "shortfall_value_eur_kwh": task.shortfall_value_eur_kwh,
            "price_knowledge": knowledge,
            "publication": task.publication,
            "tariff": tariff,
            "context": f"{context} {name}",
            "error_decay": task.error_decay,
        }
        if name.startswith("saa"):
            if task.forecast_errors is None:
                raise InvalidParameterError(f"{context}: the saa strategy needs the forecaster's past errors")
            rolled = plan_with_scenarios(
                problem,
                task.forecasts_for(knowledge),
                task.forecast_errors,
                task.config,
                scenarios=task.scenarios,
                **common,
            )
        else:
            rolled = plan_with_forecasts(problem, task.forecasts_for(knowledge), task.config, **common)
        record(name, problem, rolled.schedule, rolled.kpis)
        out[f"{name}_solves"] = rolled.solves
        out["recoveries"][name] = list(rolled.recoveries)
        timed(name, t)
    return out


def build_tasks(
    prices: pd.Series,
    start: date,
    days: int,
    config: FleetConfig,
    *,
    seed: int = 0,
    replan_every: int = 1,
    mip_gap: float = 1e-4,
    price_knowledge: PriceKnowledge = "day-ahead",
    shortfall_value_eur_kwh: float = SHORTFALL_VALUE_EUR_KWH,
    publication: clock_time = DAY_AHEAD_PUBLICATION,
    interval_stress: bool = False,
    tariff: Tariff | None = None,
    scenarios: int = 0,
    forecaster: ForecasterFactory = LearForecaster.fit,
    every: int = 1,
    track_errors: bool = False,
) -> list[DayTask]:
    """One task per day (per ``every``-th day of the ``days`` from ``start``: a sample spread over the
    period); the forecaster is trained on the days before ``start`` only (``lear`` here by default, as
    earlier callers had it; the command line's default is ``validated``, :data:`DEFAULT_FORECASTER`).
    Each task carries the forecasts a planner starting at its day's 00:00 UTC may know under its price
    knowledge (:func:`scheduler.forecast.task_forecasts`): under ``interval`` knowledge (``price_knowledge``
    or the stress test) a second array whose next day is forecast two days ahead, from the prices before
    the day's 00:00 UTC only.

    With ``scenarios`` > 0 or ``track_errors`` each task also carries the forecaster's errors on the
    :data:`~scheduler.scenarios.ERROR_WINDOW_DAYS` days before its day, out of sample: on the days of the
    run, the errors of the run's own forecasts; on the window before ``start``, those of the same kind of
    forecaster trained on the prices before that window. With ``track_errors`` each task's forecast
    strategies track their errors with the persistence of those past errors (its ``error_decay``).

    Raises :class:`InvalidParameterError` for fewer than one day or a negative number of scenarios and
    :class:`DateOutOfRangeError` when a day has no prices or ``start`` leaves the forecaster too little
    history."""
    if days < 1:
        raise InvalidParameterError(f"days = {days}: a case study covers at least one day")
    if replan_every < 1:
        raise InvalidParameterError(f"replan_every = {replan_every} must be >= 1")
    if every < 1:
        raise InvalidParameterError(f"every = {every} must be >= 1")
    if scenarios < 0:
        raise InvalidParameterError(f"scenarios = {scenarios} must be >= 0 (0: no sample-average plan)")
    if len(prices) == 0:
        raise DateOutOfRangeError("the price series is empty")
    first, last = prices.index.min().date(), prices.index.max().date()
    end = start + timedelta(days=days - 1)
    if start < first or end > last:
        raise DateOutOfRangeError(
            f"days {start} to {end} are not all in the price series, which covers {first} to {last}"
        )
    span = -(-config.horizon_hours // 24)  # days a problem covers
    calendars: list[PriceKnowledge] = [price_knowledge]
    if interval_stress and price_knowledge != "interval":
        calendars.append("interval")
    with threadpool_limits(FORECAST_THREADS):
        try:
            model = forecaster(prices, start - timedelta(days=1))
            window_start = start - timedelta(days=ERROR_WINDOW_DAYS)
            # the validated ensemble refits itself on each day's past: one run covers the window of past
            # errors too (its fixed cost, the validation days, is paid once)
            needs_errors = scenarios > 0 or track_errors
            first = window_start if needs_errors and isinstance(model, ValidatedEnsemble) else start
            one, two = issued_forecasts(
                model, prices, first, (start - first).days + days + span - 1,
                two_ahead="interval" in calendars and span == 2,
            )  # fmt: skip
            issued = _Issued(one, two)
            per_day = {
                knowledge: task_forecasts(issued, prices, start, days, config.horizon_hours, knowledge)
                for knowledge in calendars
            }
            history = one
            if needs_errors and first == start:  # out of sample: a model trained before the window
                before = forecaster(prices, window_start - timedelta(days=1))
                history = pd.concat([before.predict_series(prices, window_start, ERROR_WINDOW_DAYS), one])
        except (InvalidParameterError, MisalignedIntervalError) as exc:
            raise DateOutOfRangeError(
                f"start {start}: the price forecaster trains on the prices before it, and {exc}"
            ) from exc
    tasks = []
    for i in range(0, days, every):
        d = start + timedelta(days=i)
        lo = pd.Timestamp(d, tz="UTC")
        hi = lo + pd.Timedelta(hours=config.horizon_hours)
        actual = prices[(prices.index >= lo) & (prices.index < hi)]
        forecast = {k: series[i].reindex(actual.index).to_numpy() for k, series in per_day.items()}
        errors = forecast_errors(prices, history, d) if needs_errors else None
        tasks.append(
            DayTask(
                d, actual, forecast[price_knowledge], config, seed, replan_every, mip_gap,
                shortfall_value_eur_kwh=shortfall_value_eur_kwh, price_knowledge=price_knowledge,
                publication=publication, interval_stress=interval_stress, tariff=tariff,
                scenarios=scenarios,
                forecast_errors=errors,
                forecast_hourly_interval=forecast.get("interval"),
                error_decay=error_persistence(errors) if track_errors and errors is not None else 0.0,
                step_hours=24 * every,
            )
        )  # fmt: skip
    return tasks


#: The identity every row of the table and of ``results.json`` obeys (EUR).
NET_IDENTITY = "net = import cost − export revenue + wear + shortfall penalty + capacity charge"
TERMS = ("import_cost_eur", "export_revenue_eur", "degradation_eur", "shortfall_penalty_eur")
#: The energy part of a tariff's bill, by component (see :meth:`scheduler.tariff.Tariff.bill`).
BILL = ("energy", "supplier_fee", "energy_tax", "network_energy", "vat", "feed_in", "vat_deducted")


def _summed(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    """Per label, the sum of the rows' counts under ``key`` (intervals covered per month or period)."""
    total: dict[str, int] = {}
    for row in rows:
        for label, count in row.get(key, {}).items():
            total[label] = total.get(label, 0) + int(count)
    return dict(sorted(total.items()))


def _max_peaks(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Per label, the highest of the days' peaks (a billing period's or a month's peak import, kW)."""
    peaks: dict[str, float] = {}
    for row in rows:
        for label, value in row.get(key, {}).items():
            peaks[label] = max(peaks.get(label, 0.0), float(value))
    return dict(sorted(peaks.items()))


def _step(result: dict[str, Any], days: int) -> str:
    """The ISO day ``days`` after ``result``'s (before it, when negative)."""
    return (date.fromisoformat(str(result["day"])) + timedelta(days=days)).isoformat()


def connection_parts(results: list[dict[str, Any]], strategy: str, every: int = 1) -> list[dict[str, Any]]:
    """``strategy``'s figures at the connection, hour by hour once: each finished day's own hours, and
    the rest of its horizon (``tail``) where no finished day follows it (the run's last day, or a day
    before a failed one): those hours' flows are then its sessions' alone."""
    finished = {str(r["day"]) for r in results}
    parts = []
    for r in results:
        row = r[strategy]
        parts.append(row)
        if "tail" in row and _step(r, every) not in finished:
            parts.append(row["tail"])
    return parts


#: A month the run covers to within this share counts as whole in the mean of monthly peaks (a run from
#: 00:00 UTC misses the local month's first hour or two); the bill prorates exactly (:func:`billed_share`).
WHOLE_MONTH_SHARE = 0.99


def month_hours(label: str) -> float:
    """The hours of a local (Europe/Amsterdam) month ``YYYY-MM``."""
    return local_period_hours(label, MARKET_TIME_ZONE)


def billed_share(label: str, covered_intervals: int, tariff: Tariff, interval_minutes: int) -> float:
    """The share of a billing period's capacity charge a run pays: the share of the period's hours its
    flows cover (1 for a period covered whole; the last day's tail in the next month pays that part)."""
    return min(covered_intervals * interval_minutes / 60.0 / tariff.period_hours(label), 1.0)


def summarise(
    results: list[dict[str, Any]], config: FleetConfig, tariff: Tariff | None = None, *, every: int = 1
) -> dict[str, dict[str, Any]]:
    """Totals per strategy over the finished days at the connection (each term of the net cost, and the
    net cost), change against uncontrolled, V2G revenue (a part of the export revenue and avoided import,
    not a term of its own), daily and monthly peak import, and the solver recoveries taken.

    Import cost, export revenue, peaks and the bill are the connection's, each hour once
    (:func:`connection_parts`); wear and shortfall are the sessions' (each session in the day it
    arrived). With a ``tariff``, import cost and export revenue are all-in (the bill's energy components,
    also given one by one under ``bill``), and the capacity charge is billed on each billing period's
    peak import, in proportion to the share of the period's hours the run covers (:func:`billed_share`:
    a run of three days in July pays 3/31 of July's charge, plus the part of August its last night
    reaches)."""
    days = len(results)
    table: dict[str, dict[str, Any]] = {}
    parts = {s: connection_parts(results, s, every) for s in strategies_in(results)}

    def capacity(strategy: str) -> float:
        if tariff is None:
            return 0.0
        peaks = _max_peaks(parts[strategy], "period_peaks_kw")
        covered = _summed(parts[strategy], "period_intervals")
        return tariff.capacity_charge(
            {
                label: kw * billed_share(label, covered.get(label, 0), tariff, config.interval_minutes)
                for label, kw in peaks.items()
            }
        )

    charges = {s: capacity(s) for s in parts}
    base_net = (
        _net(parts["uncontrolled"], results, "uncontrolled", charges["uncontrolled"]) if results else 0.0
    )
    for strategy, mine in parts.items():
        rows = [r[strategy] for r in results]
        peaks = np.array([r["peak_import_kw"] for r in rows]) if rows else np.zeros(1)
        months = _max_peaks(mine, "month_peaks_kw")
        covered = {m: n * config.interval_minutes / 60.0 for m, n in _summed(mine, "month_intervals").items()}
        whole = [m for m in months if covered.get(m, 0.0) >= WHOLE_MONTH_SHARE * month_hours(m)] or list(
            months
        )
        net = _net(mine, results, strategy, charges[strategy])
        table[strategy] = {
            "import_cost_eur": sum(p["import_cost_eur"] for p in mine),
            "export_revenue_eur": sum(p["export_revenue_eur"] for p in mine),
            "degradation_eur": sum(r["degradation_eur"] for r in rows),
            "shortfall_penalty_eur": sum(r["shortfall_penalty_eur"] for r in rows),
            "capacity_charge_eur": charges[strategy],
            "net_cost_eur": net,
            "change_vs_uncontrolled_pct": (net - base_net) / abs(base_net) * 100 if base_net else 0.0,
            "v2g_revenue_eur": sum(r["v2g_revenue_eur"] for r in rows),
            "peak_import_kw_mean": float(peaks.mean()),
            "peak_import_kw_std": float(peaks.std()),
            "monthly_peak_kw_mean": float(np.mean([months[m] for m in whole])) if months else 0.0,
            "monthly_peaks_kw": months,
            "month_hours_covered": dict(sorted(covered.items())),
            "shortfall_kwh": sum(r["shortfall_kwh"] for r in rows),
            "eur_per_ev_per_year": net / max(config.n_evs, 1) / max(days, 1) * 365,
            "seconds": sum(r_["seconds"][strategy] for r_ in results),
            "recoveries": sum(len(r_.get("recoveries", {}).get(strategy, ())) for r_ in results),
        }
        if tariff is not None:
            table[strategy]["bill"] = {part: sum(p["bill"][part] for p in mine) for part in BILL}
    best = table["perfect_foresight"]["net_cost_eur"] if "perfect_foresight" in table else base_net
    for row in table.values():
        row["saving_kept_pct"] = saving_kept_pct(base_net, best, row["net_cost_eur"])
    return table


def _net(
    parts: list[dict[str, Any]], results: list[dict[str, Any]], strategy: str, capacity_eur: float
) -> float:
    """The connection's import − export over ``parts``, the sessions' wear and shortfall over the days,
    plus the capacity charge."""
    energy = sum(float(p["import_cost_eur"]) - float(p["export_revenue_eur"]) for p in parts)
    sessions = sum(
        float(r[strategy]["degradation_eur"]) + float(r[strategy]["shortfall_penalty_eur"]) for r in results
    )
    return energy + sessions + capacity_eur


#: What the plan of a day that earlier days' commitments leave infeasible pays per kWh a car leaves
#: without: far above any energy or capacity price, so only what cannot be delivered is left short.
UNSERVABLE_EUR_KWH = 100.0

#: Power above a limit the check forgives: the solver's feasibility tolerance (kW).
CHECK_TOLERANCE_KW = 1e-6


def connection_check(
    results: list[dict[str, Any]],
    summary: dict[str, dict[str, Any]],
    config: FleetConfig,
    prices: pd.Series,
    tariff: Tariff | None = None,
    every: int = 1,
) -> dict[str, Any]:
    """The independent check of a run. Per strategy, every finished day's own sessions' net flows (their
    whole horizon, whatever the planner carried between days; and what was committed into a finished day
    whose day before is not finished, as when another strategy failed on it) are re-summed per interval
    at the one connection, checked against the site's import and export limits, and the connection's bill is
    recomputed from those sums and the day-ahead ``prices`` (hourly, UTC); beside it the report's figures
    (``summary``) and whether they agree to the cent. Returns the summed import and export of every
    interval (kW from ``start``, one value per interval, None where no day's horizon reaches) and the
    limits, as ``results.json`` carries them so that anyone can check the limits and the bill again."""
    step = pd.Timedelta(minutes=config.interval_minutes)
    dt = step / pd.Timedelta(hours=1)
    limit = config.site_kw_per_ev * max(config.n_evs, 1)
    document: dict[str, Any] = {
        "site_import_limit_kw": limit,
        "site_export_limit_kw": limit,
        "interval_minutes": config.interval_minutes,
        "strategies": {},
    }
    if not results:
        return document
    first = min(pd.Timestamp(r[s]["flows"]["start"]) for r in results for s in summary)
    spans = [
        (int((pd.Timestamp(r[s]["flows"]["start"]) - first) / step), len(r[s]["flows"]["own_net_kw"]))
        for r in results
        for s in summary
    ]
    n = max(a + k for a, k in spans)
    index = pd.date_range(first, periods=n, freq=step)
    document["start"] = first.isoformat()
    day_ahead = prices.reindex(index.floor("h")).to_numpy(dtype=np.float64)
    finished = {str(r["day"]) for r in results}
    day_intervals = 24 * 60 // config.interval_minutes
    for strategy, row in summary.items():
        net = np.zeros(n)
        covered = np.zeros(n, dtype=bool)
        billed = np.zeros(n, dtype=bool)  # the hours the capacity charge is prorated by
        for r in results:
            flows = r[strategy]["flows"]
            at = int((pd.Timestamp(flows["start"]) - first) / step)
            own = np.asarray(flows["own_net_kw"], dtype=np.float64)
            net[at : at + len(own)] += own
            covered[at : at + len(own)] = True
            own_hours = len(own) - len(flows.get("committed_out_kw", []))
            # a day stands for its own day (a sampled day too), and the last one for its night as well
            billed[at : at + min(own_hours, day_intervals)] = True
            if _step(r, every) not in finished:
                billed[at + own_hours : at + len(own)] = True
            if _step(r, -every) not in finished:  # its own flows are not summed here, what it committed is
                carried = np.asarray(flows.get("committed_in_kw", []), dtype=np.float64)
                net[at : at + len(carried)] += carried
        imported = np.where(covered, np.maximum(net, 0.0), 0.0)
        exported = np.where(covered, np.maximum(-net, 0.0), 0.0)
        stamps, da = index[covered], day_ahead[covered]
        if tariff is not None:
            buy, sell = tariff.prices(da, stamps)
            labels = tariff.billing_periods(stamps)
            peaks = _peaks_by_label(labels, imported[covered])
            counts = _interval_counts(tariff.billing_periods(index[billed]))
            capacity = tariff.capacity_charge(
                {
                    label: kw * billed_share(label, counts.get(label, 0), tariff, config.interval_minutes)
                    for label, kw in peaks.items()
                }
            )
        else:
            buy, sell, capacity = da, da, 0.0
        checked = {
            "import_cost_eur": float(np.dot(buy, imported[covered]) * dt / 1000.0),
            "export_revenue_eur": float(np.dot(sell, exported[covered]) * dt / 1000.0),
            "capacity_charge_eur": capacity,
        }
        checked["net_cost_eur"] = (
            checked["import_cost_eur"]
            - checked["export_revenue_eur"]
            + row["degradation_eur"]
            + row["shortfall_penalty_eur"]
            + capacity
        )
        document["strategies"][strategy] = {
            "intervals": int(covered.sum()),
            "max_import_kw": float(imported.max(initial=0.0)),
            "max_export_kw": float(exported.max(initial=0.0)),
            "above_import_limit": int(np.sum(imported > limit + CHECK_TOLERANCE_KW)),
            "above_export_limit": int(np.sum(exported > limit + CHECK_TOLERANCE_KW)),
            "recomputed": checked,
            "agrees": all(abs(checked[k] - row[k]) < 0.005 for k in checked),
            "import_kw": [round(float(v), 4) if c else None for v, c in zip(imported, covered, strict=True)],
            "export_kw": [round(float(v), 4) if c else None for v, c in zip(exported, covered, strict=True)],
        }
    return document


def strategies_in(results: list[dict[str, Any]]) -> list[str]:
    """The strategies every one of ``results`` holds, in table order (the first four when empty)."""
    if not results:
        return list(STRATEGIES[:4])
    return [s for s in STRATEGIES if all(s in r for r in results)]


def paired_se_pts(results: list[dict[str, Any]], summary: dict[str, dict[str, Any]], a: str, b: str) -> float:
    """The standard error of ``b``'s saving kept minus ``a``'s, in points: the day-by-day differences of
    their net costs (paired by day: the same fleet and prices) as a sample, scaled to the total saving of
    perfect foresight. NaN for fewer than two days."""
    differences = np.array([r[b]["net_cost_eur"] - r[a]["net_cost_eur"] for r in results], dtype=np.float64)
    saving = summary["uncontrolled"]["net_cost_eur"] - summary["perfect_foresight"]["net_cost_eur"]
    if len(differences) < 2 or abs(saving) < 1e-9:
        return float("nan")
    return float(100.0 * differences.std(ddof=1) * np.sqrt(len(differences)) / abs(saving))


def saving_kept_pct(base_net: float, best_net: float, net: float) -> float:
    """The share of perfect foresight's saving against uncontrolled charging that ``net`` keeps, in %:
    100·(base − net)/(base − best); 100 when perfect foresight saves nothing."""
    saving = base_net - best_net
    return 100.0 * (base_net - net) / saving if abs(saving) > 1e-9 else 100.0


def strategies_of(task: DayTask) -> list[str]:
    """The strategies a run of ``task``'s options holds, the costliest first (each is a thread of days
    of its own: what it committed on one day is its own next day's base load)."""
    forecasts = ["forecast"]
    if task.interval_stress and task.price_knowledge != "interval":
        forecasts.append("forecast_interval")
    if task.scenarios:
        forecasts = [name.replace("forecast", "saa") for name in forecasts] + forecasts
    return [*forecasts, "perfect_foresight", "smart", "uncontrolled"]


def run_on_dask(
    tasks: list[DayTask],
    *,
    scheduler: str | None = None,
    workers: int = 2,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    todo: Callable[[str], list[DayTask]] | None = None,
    carry: Callable[[str, list[DayTask]], Thread] | None = None,
) -> list[dict[str, Any]]:
    """Run the days on a Dask cluster: ``scheduler`` (an address) or a local cluster of ``workers``.

    Each strategy runs its days in order, each day carrying what the days before it committed
    (:class:`Thread`): the operation of one connection is a thread, not a stack of days, and the
    strategies are what runs in parallel. A strategy's days go in links of :data:`LINK_DAYS` days, each a
    task that waits for the thread the one before left, so that each link is kept as it finishes.
    ``todo(strategy)`` gives the days a strategy still has to run (all by default) and
    ``carry(strategy, days)`` what it carries into the first of them (from days an earlier run
    finished).

    ``on_result(strategy, result)`` is called with each strategy's day as soon as its task finishes, so a
    caller can keep it. Returns one result per day, the strategies merged; a day any strategy failed on is
    ``{"day": ..., "error": ...}`` (a link that never returned, a lost worker, fails all its days and
    the links after it)."""
    from dask.distributed import as_completed

    if not tasks:
        return []
    names = strategies_of(tasks[0])
    merged: dict[str, dict[str, Any]] = {}
    with dask_client(scheduler, workers) as client:
        futures: dict[str, tuple[str, list[DayTask], Any]] = {}
        for rank, name in enumerate(names):
            days = todo(name) if todo is not None else list(tasks)
            if not days:
                continue
            thread: Any = carry(name, days) if carry is not None else Thread()
            for i in range(0, len(days), LINK_DAYS):  # each link waits for the thread its last one left
                link = days[i : i + LINK_DAYS]
                future = client.submit(run_link, link, thread, name, pure=False, priority=-rank)
                thread = client.submit(_thread_of, future, pure=False, priority=-rank)
                futures[future.key] = (name, link, future)
        for future in as_completed([f for _, _, f in futures.values()]):
            name, link, _ = futures[future.key]
            try:
                finished: list[dict[str, Any]] = future.result()[0]
            except Exception as exc:  # the task never returned: a lost worker, a cancelled future
                error = f"{type(exc).__name__}: {exc}"
                finished = [{"day": t.day.isoformat(), "error": error} for t in link]
            for result in finished:
                if "error" in result:
                    result = {"day": result["day"], "error": f"{name}: {result['error']}"}
                if on_result is not None:
                    on_result(name, result)
                merge_day(merged.setdefault(str(result["day"]), {"day": result["day"]}), result)
    return sorted(merged.values(), key=lambda r: str(r["day"]))


def merge_day(into: dict[str, Any], part: dict[str, Any]) -> None:
    """One strategy's day (``part``) into the day's result; an error of any strategy is the day's (the
    errors in table order)."""
    if "error" in part:
        errors = [e for e in (*into.get("error", "").split("; "), part["error"]) if e]
        order = {name: i for i, name in enumerate(STRATEGIES)}
        errors.sort(key=lambda e: order.get(e.split(":")[0], len(order)))
        into["error"] = "; ".join(errors)
        return
    for key, value in part.items():
        if key in ("seconds", "recoveries"):
            into.setdefault(key, {}).update(value)
        elif key != "day":
            into[key] = value


class DayStore:
    """One JSON file per strategy and finished day under ``out/days`` (``2023-01-05.smart.json``), written
    as the day finishes (atomically), and marked with the fingerprint of the configuration it was computed
    with. A re-run with the same ``--out`` and configuration continues each strategy after the days it
    finished in order: from its first day missing or failed, since every later day carried what that day
    committed."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.directory = Path(out) / "days"
        self.fingerprint = fingerprint

    def _path(self, day: str, strategy: str) -> Path:
        return self.directory / f"{day}.{strategy}.json"

    def load(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The days already finished (failed ones excluded), by strategy and day;
        :class:`OutputConflictError` when a stored day was computed with another configuration."""
        import json

        done: dict[str, dict[str, dict[str, Any]]] = {}
        if not self.directory.is_dir():
            return done
        for path in sorted(self.directory.glob("*.json")):
            try:
                stored = json.loads(path.read_text())
                config, result = stored["config"], stored["result"]
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("%s is unreadable; that day runs again", path)
                continue
            if config != self.fingerprint:
                keys = set(config) | set(self.fingerprint)
                differ = sorted(k for k in keys if config.get(k) != self.fingerprint.get(k))
                shown = ", ".join(
                    f"{k} {config.get(k)!r} here, {self.fingerprint.get(k)!r} asked" for k in differ
                )
                raise OutputConflictError(
                    f"{self.directory} holds days of another configuration ({shown}); "
                    "use another --out or remove that directory"
                )
            strategy = stored.get("strategy")
            if isinstance(strategy, str) and "error" not in result:
                done.setdefault(strategy, {})[str(result["day"])] = result
        return done

    def write(self, strategy: str, result: dict[str, Any]) -> None:
        import json

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(str(result["day"]), strategy)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps({"config": self.fingerprint, "strategy": strategy, "result": result}))
        partial.replace(path)


def thread_after(days: list[dict[str, Any]], interval_minutes: int) -> Thread:
    """What a strategy carries after its finished ``days`` (its rows of them, in order): the peaks each
    billing period reached, and what the last of them committed after its own hours."""
    thread = Thread(peaks=_max_peaks(days, "period_peaks_kw"))
    if days:
        flows = days[-1]["flows"]
        n = len(flows["own_net_kw"])
        stamps = pd.date_range(pd.Timestamp(flows["start"]), periods=n, freq=f"{interval_minutes}min")
        out = flows["committed_out_kw"]
        thread.committed_kw = dict(zip(stamps[n - len(out) :], map(float, out), strict=True))
    return thread


def write_outputs(
    out: Any,
    results: list[dict[str, Any]],
    summary: dict[str, dict[str, float]],
    meta: dict[str, Any],
    failed: list[dict[str, Any]] | None = None,
    connection: dict[str, Any] | None = None,
) -> list[str]:
    """results.json, three PNG plots and report.md in ``out``; returns the file names. ``connection``: the
    independent check (:func:`connection_check`), its summed flows in ``results.json`` and its verdict in
    the report. The days' own flows stay in ``out/days``."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    failed = failed or []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    days_shown = [
        {
            k: ({x: y for x, y in v.items() if x != "flows"} if isinstance(v, dict) else v)
            for k, v in r.items()
        }
        for r in results
    ]
    document = {
        "meta": meta,
        "identity": NET_IDENTITY,
        "summary": summary,
        "connection": connection,
        "days": days_shown,
        "failed": failed,
    }
    (out / "results.json").write_text(json.dumps(document, indent=1))
    days = pd.to_datetime([r["day"] for r in results])
    names = list(summary)

    fig, ax = plt.subplots(figsize=(10, 5), constrained_layout=True)
    for s in names:
        ax.plot(days, np.cumsum([r[s]["net_cost_eur"] for r in results]), label=s)
    ax.set_ylabel("cumulative net cost, EUR")
    ax.set_title(f"{meta['evs']} EVs, {meta['start']} + {meta['days']} days")
    ax.legend()
    fig.savefig(out / "cumulative_net_cost.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5), constrained_layout=True)
    for s in names:
        ax.plot(days, [r[s]["peak_import_kw"] for r in results], label=s, linewidth=0.8)
    ax.set_ylabel("daily peak import, kW")
    ax.legend()
    fig.savefig(out / "peak_import.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    ax.bar(names, [summary[s]["net_cost_eur"] for s in names], color="tab:blue", label="net cost")
    ax.bar(
        names,
        [-summary[s]["v2g_revenue_eur"] for s in names],
        color="tab:orange",
        label="V2G revenue (shown negative)",
    )
    ax.set_ylabel("EUR over the period")
    ax.legend()
    fig.savefig(out / "totals.png", dpi=110)
    plt.close(fig)

    lines = [
        f"# Case study: {meta['evs']} EVs, {meta['start']} for {meta['days']} days"
        + (f", every {meta['every']}th day ({len(results)} days)" if meta.get("every", 1) > 1 else ""),
        "",
        "Assumptions: a new fleet of ElaadNL sessions arriving each day (charger type "
        f"{meta['charger_type']}), {meta['v2g_share']:.0%} V2G-capable, {meta['charger_kw']} kW chargers, "
        f"η {meta['eta']} each way, degradation {meta['degradation_eur_kwh']} EUR/kWh of "
        f"{'throughput (charged + discharged)' if meta['degradation_basis'] == 'throughput' else 'discharge'}"
        f", site limit ±{meta['site_kw_per_ev']} kW per EV; sessions kept whole on a "
        f"{meta['horizon_hours']}-hour horizon in {meta['interval_minutes']}-min intervals (a car plugged "
        f"in for part of an interval has that share of its power there); one connection run day after day: "
        "what a day's sessions do after its end is the next day's base load, and every figure of import, "
        f"export, peak and bill is the connection's summed flow; prices from `{meta['prices']}`. "
        f"The forecast strategy re-plans every {meta['replan_every']} interval(s) with price forecasts "
        f"(`{meta.get('forecaster', 'lear')}`, from public prices only) for prices not yet public and an "
        "ElaadNL availability forecast; "
        f"it knows prices by the market's calendar ({_knowledge_text(meta)})"
        + (
            "; forecast_interval is the same plan under the stress test of `interval` knowledge (each price "
            "public only when its hour starts)"
            if "forecast_interval" in summary
            else ""
        )
        + f". Energy an owner leaves without is valued at {meta['shortfall_value_eur_kwh']:.2f} EUR/kWh in "
        f"every strategy's net cost. Runtime {meta['seconds']:.0f} s on {meta['workers']} Dask worker(s)"
        + (
            f" ({meta['days_from_earlier_runs']} day(s) kept from an earlier run)."
            if meta.get("days_from_earlier_runs")
            else "."
        ),
        "",
        f"Each row, in EUR over {len(results)} finished day(s): **{NET_IDENTITY}**. V2G revenue (the "
        "discharged energy valued at the site's margin: the sell price where the site exports, the avoided "
        "buy price otherwise) is already inside import and export and is not a term of its own. Recoveries: "
        "solves that HiGHS ended without a proven optimum and that a recovery completed (`scheduler.highs`).",
        "",
        "| strategy | import € | export € | wear € | shortfall € | capacity € | net € | vs uncontrolled | "
        "V2G revenue € | daily peak import kW (mean ± sd) | monthly peak import kW (mean) | "
        "€ per EV per year | "
        "shortfall kWh | saving kept | recoveries |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in names:
        x = summary[s]
        lines.append(
            f"| {s} | {x['import_cost_eur']:,.2f} | {x['export_revenue_eur']:,.2f} | "
            f"{x['degradation_eur']:,.2f} | {x['shortfall_penalty_eur']:,.2f} | "
            f"{x['capacity_charge_eur']:,.2f} | {x['net_cost_eur']:,.2f} | "
            f"{x['change_vs_uncontrolled_pct']:+.1f} % | {x['v2g_revenue_eur']:,.2f} | "
            f"{x['peak_import_kw_mean']:,.0f} ± {x['peak_import_kw_std']:,.0f} | "
            f"{x['monthly_peak_kw_mean']:,.0f} | "
            f"{x['eur_per_ev_per_year']:,.1f} | {x['shortfall_kwh']:,.1f} | {x['saving_kept_pct']:.1f} % | "
            f"{x['recoveries']:.0f} |"
        )
    lines += _tariff_lines(summary, meta) + _monthly_peak_lines(summary) + _check_lines(connection, meta)
    lines += [
        "",
        "Saving kept: the share of perfect foresight's saving against uncontrolled charging that a strategy "
        "keeps, 100·(uncontrolled − strategy)/(uncontrolled − perfect_foresight).",
    ]
    if "forecast" in summary:
        kept = f"the forecast strategy keeps {summary['forecast']['saving_kept_pct']:.1f} % of it with "
        kept += f"{meta['price_knowledge']} knowledge"
        if "forecast_interval" in summary:
            kept += (
                f" and {summary['forecast_interval']['saving_kept_pct']:.1f} % when each price is public "
                "only once its hour starts (interval, the stress test)"
            )
        lines[-1] += " Here " + kept + "."
    saa = [
        (name, base)
        for name, base in (("saa", "forecast"), ("saa_interval", "forecast_interval"))
        if name in summary
    ]
    if saa:
        said = [
            f"{name} keeps {summary[name]['saving_kept_pct']:.1f} % (against {base}'s "
            f"{summary[base]['saving_kept_pct']:.1f} %; the difference's standard error over the days, "
            f"paired by day, {paired_se_pts(results, summary, base, name):.1f} points) in "
            f"{summary[name]['seconds']:,.0f} s of planning (against {summary[base]['seconds']:,.0f} s)"
            for name, base in saa
        ]
        lines += [
            "",
            "Planning under uncertainty: saa is the forecast strategy's rolling plan as a sample average "
            f"over {meta['scenarios']} scenarios (the price forecast plus whole days of the forecaster's own "
            f"errors on the {meta['error_window_days']} days before each day, and as many draws of the "
            "availability forecast), one decision for the committed interval in every scenario; saa_interval "
            "is it under `interval` knowledge. " + "; ".join(said) + ".",
        ]
    kinds: dict[str, int] = {}
    for r in results:
        for steps in r.get("recoveries", {}).values():
            for step in steps:
                kinds[step] = kinds.get(step, 0) + 1
    if kinds:
        lines += [
            "",
            "Recoveries by kind: " + ", ".join(f"{k} × {n}" for k, n in sorted(kinds.items())) + ".",
        ]
    if failed:
        lines += ["", f"**{len(failed)} day(s) failed** (not in the totals; a re-run retries them):", ""]
        lines += [f"- {f['day']}: {f['error']}" for f in failed]
    base_v2g = summary["smart"]["v2g_revenue_eur"]
    lines += [
        "",
        "Against the seed's claims (a 20 % cut in operating cost and a 159 % rise in V2G revenue, method not "
        f"shown): here V2G with perfect foresight changes net cost by "
        f"{summary['perfect_foresight']['change_vs_uncontrolled_pct']:+.1f} % and with forecasts by "
        f"{summary['forecast']['change_vs_uncontrolled_pct']:+.1f} % against uncontrolled charging; a rise "
        "in V2G revenue has no base to be measured against (smart charging earns "
        f"{base_v2g:,.0f} € from V2G by definition).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return ["results.json", "cumulative_net_cost.png", "peak_import.png", "totals.png", "report.md"]


def _tariff_lines(summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """The bill by component per strategy (a run with a tariff), and what the capacity charge did."""
    if not meta.get("tariff"):
        return [
            "",
            "No tariff (`--tariff`): prices are day-ahead prices, with no tax, fee, network or capacity "
            "charge.",
        ]
    lines = [
        "",
        f"Tariff `{meta['tariff']}` ({meta['tariff_name']}). The bill by component, EUR excl. VAT where "
        "VAT is "
        "deducted (import cost = energy + supplier fee + energy tax + network energy + VAT; export revenue = "
        "feed-in; capacity = the charge per kW on each billing period's peak import at the connection, "
        "billed in proportion to the share of the period's hours the run covers: a period covered whole "
        "pays in full, the month the last night reaches into pays for those hours only"
        + (
            f", and a sample of every {meta['every']}th day pays for the hours it holds):"
            if meta.get("every", 1) > 1
            else "):"
        ),
        "",
        "| strategy | energy (day-ahead) | supplier fee | energy tax | network energy | VAT | feed-in | "
        "capacity | wear | shortfall | net | VAT deducted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in summary.items():
        b = x["bill"]
        lines.append(
            f"| {name} | {b['energy']:,.2f} | {b['supplier_fee']:,.2f} | {b['energy_tax']:,.2f} | "
            f"{b['network_energy']:,.2f} | {b['vat']:,.2f} | {b['feed_in']:,.2f} | "
            f"{x['capacity_charge_eur']:,.2f} | {x['degradation_eur']:,.2f} | "
            f"{x['shortfall_penalty_eur']:,.2f} | "
            f"{x['net_cost_eur']:,.2f} | {b['vat_deducted']:,.2f} |"
        )
    base = summary["uncontrolled"]
    said = []
    for name, x in summary.items():
        if name == "uncontrolled":
            continue
        lower = sum(x["monthly_peaks_kw"].get(m, 0.0) < p - 1e-6 for m, p in base["monthly_peaks_kw"].items())
        said.append(
            f"{name}: monthly peak {x['monthly_peak_kw_mean']:,.0f} kW on average against "
            f"{base['monthly_peak_kw_mean']:,.0f} (lower in {lower} of "
            f"{len(base['monthly_peaks_kw'])} months), "
            f"capacity charge {x['capacity_charge_eur'] - base['capacity_charge_eur']:+,.2f} EUR and net "
            f"{x['net_cost_eur'] - base['net_cost_eur']:+,.2f} EUR against uncontrolled"
        )
    return [*lines, "", "With the peak charge on: " + "; ".join(said) + "."]


def _check_lines(connection: dict[str, Any] | None, meta: dict[str, Any]) -> list[str]:
    """The independent check's verdict, and the prices the run filled in."""
    lines: list[str] = []
    filled = meta.get("filled_prices") or []
    if filled:
        lines += [
            "",
            f"Prices filled in the price file (`{meta.get('gap_policy', 'interpolate')}`, between the hours "
            "either side): " + ", ".join(f"{f['utc']} ({f['eur_mwh']:.2f} EUR/MWh)" for f in filled) + ".",
        ]
    else:
        lines += ["", "No price of the run's hours was filled: every one is in the price file."]
    if not connection or not connection.get("strategies"):
        return lines
    lines += [
        "",
        "Independent check: every day's own sessions' flows re-summed per interval at the connection "
        "(whatever the planner carried from day to day), against the site's limits "
        f"(±{connection['site_import_limit_kw']:,.0f} kW), and the bill recomputed from those sums "
        "(`results.json` → `connection` holds the summed import and export of every interval):",
        "",
        "| strategy | intervals | max import kW | above the import limit | max export kW | above the export "
        "limit | import € (check) | export € (check) | capacity € (check) | net € (check) | agrees with "
        "the table to the cent |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in connection["strategies"].items():
        c = x["recomputed"]
        lines.append(
            f"| {name} | {x['intervals']:,} | {x['max_import_kw']:,.1f} | {x['above_import_limit']} | "
            f"{x['max_export_kw']:,.1f} | {x['above_export_limit']} | {c['import_cost_eur']:,.2f} | "
            f"{c['export_revenue_eur']:,.2f} | {c['capacity_charge_eur']:,.2f} | {c['net_cost_eur']:,.2f} | "
            f"{'yes' if x['agrees'] else '**no**'} |"
        )
    return lines


def _monthly_peak_lines(summary: dict[str, dict[str, Any]]) -> list[str]:
    """Per local month, each strategy's peak import at the connection."""
    months = sorted({m for x in summary.values() for m in x["monthly_peaks_kw"]})
    lines = [
        "",
        "Monthly peak import, kW (the highest interval import at the connection in the local month, "
        "every session's flows summed):",
        "",
        "| month | " + " | ".join(summary) + " |",
        "|---|" + "---|" * len(summary),
    ]
    first = next(iter(summary.values()))
    for m in months:
        cells = " | ".join(f"{x['monthly_peaks_kw'].get(m, 0.0):,.0f}" for x in summary.values())
        hours = first.get("month_hours_covered", {}).get(m)
        shown = m
        if hours is not None and hours < WHOLE_MONTH_SHARE * month_hours(m):
            shown = f"{m} ({hours:,.0f} of {month_hours(m):,.0f} h)"
        lines.append(f"| {shown} | {cells} |")
    return [
        *lines,
        "",
        "A month the run covers in part is marked with its hours; the mean of monthly peaks in the tables "
        "above leaves it out (unless no month is whole), and its capacity charge is billed for those hours.",
    ]


def _knowledge_text(meta: dict[str, Any]) -> str:
    if meta["price_knowledge"] == "interval":
        return "`interval`: each price public only when its hour starts"
    return f"`day-ahead`: each delivery day's prices public at {meta['publication']} CET/CEST the day before"


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (reports stay portable)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_output_directory(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that is a file or that could not be created or written."""
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"--out {out} is a file, not a directory")
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidParameterError(f"--out {out}: {existing} is not a writable directory")


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class CaseStudyRun:
    figures: dict[str, object]
    files: list[str]
    lines: list[str]  # a human-readable summary, one line per strategy and the files written
    failed: list[dict[str, Any]]  # days that failed after every recovery: {"day", "error"}
    skipped: int = 0  # days already finished in ``--out`` by an earlier run


class _Parser(argparse.ArgumentParser):
    """argparse that raises a named error instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise InvalidParameterError(f"case study: {message}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.__name__ = "integer >= 1"  # argparse names the type in its message


def _scenario_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_scenario_count.__name__ = "integer >= 0"


def _clock(text: str) -> clock_time:
    value = clock_time.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError(text)
    return value


_clock.__name__ = "HH:MM"


def run_from_args(argv: list[str] | None = None) -> CaseStudyRun:
    """The case study from command-line arguments (``scripts/case_study.py``, ``v2g case-study``);
    prints nothing, the callers show ``lines`` (and exit non-zero when ``failed`` is not empty).

    Each day's result is kept in ``--out/days`` as it finishes; a re-run with the same ``--out`` and
    options skips the finished days. Bad options raise named :class:`~scheduler.errors.InputError` errors."""
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evs", type=_positive_int, default=1000)
    parser.add_argument("--start", default="2023-01-01", help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--days", type=_positive_int, default=365)
    parser.add_argument(
        "--every", type=_positive_int, default=1,
        help="plan only every N-th of the days from --start (default 1: every day), a sample spread over "
        "the period",
    )  # fmt: skip
    parser.add_argument("--prices", type=Path, default=PRICES_NL)
    parser.add_argument("--out", type=Path, default=Path("out/case_study"))
    parser.add_argument("--v2g-share", type=float, default=0.3)
    parser.add_argument("--charger-type", default="private")
    parser.add_argument(
        "--interval-minutes",
        type=int,
        default=60,
        help="scheduling interval (default 60: the resolution of the NL day-ahead prices up to 2025; "
        "arrivals inside an hour keep their exact plugged share of it)",
    )
    parser.add_argument("--horizon-hours", type=int, default=48, help="hours each day's problem covers")
    parser.add_argument("--replan-every", type=_positive_int, default=1, help="re-plan every N intervals")
    parser.add_argument(
        "--price-knowledge", choices=("day-ahead", "interval"), default="day-ahead",
        help="when the forecast strategy learns actual prices (see the module's docstring)",
    )  # fmt: skip
    parser.add_argument(
        "--publication", type=_clock, default=DAY_AHEAD_PUBLICATION,
        help="HH:MM, Europe/Amsterdam time on the day before delivery at which a day's prices are public "
        "(default 12:45)",
    )  # fmt: skip
    parser.add_argument(
        "--interval-stress", action=argparse.BooleanOptionalAction, default=True,
        help="also run forecast_interval, the forecast strategy under interval knowledge (default: on)",
    )  # fmt: skip
    parser.add_argument(
        "--degradation-basis", choices=("throughput", "discharge"), default="throughput",
        help="battery wear per kWh charged and discharged, or per kWh discharged only",
    )  # fmt: skip
    parser.add_argument(
        "--tariff", type=Path, default=None,
        help="a tariff file (TOML, e.g. scheduler/data/tariffs/nl_example.toml): energy tax, fees, VAT, "
        "feed-in and a capacity charge in the objective and the bill (default: day-ahead prices only)",
    )  # fmt: skip
    parser.add_argument(
        "--scenarios", type=_scenario_count, default=0,
        help="also run saa (and saa_interval with the stress test): the rolling plan as a sample average "
        "over this many price and arrival scenarios (default 0: not run)",
    )  # fmt: skip
    parser.add_argument(
        "--track-errors", action=argparse.BooleanOptionalAction, default=True,
        help="the forecast strategies correct their price forecasts by the error on the last public hour, "
        "fading with the persistence of the forecaster's past errors (default: on; --no-track-errors "
        "plans with the forecasts as issued)",
    )  # fmt: skip
    parser.add_argument(
        "--forecaster", choices=sorted(FORECASTERS), default=DEFAULT_FORECASTER,
        help="the price forecaster (default validated: the validated ensemble of daily-recalibrated LEAR "
        "models and gradient-boosted trees; lear: fitted once on the two years before --start)",
    )  # fmt: skip
    parser.add_argument("--workers", type=_positive_int, default=2)
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a local cluster)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    start = parse_day(args.start).date()
    if not math.isfinite(args.v2g_share):
        raise InvalidParameterError(f"v2g_share = {args.v2g_share} must be in [0, 1]")
    price_file = load_prices(args.prices)
    prices = price_file.eur_mwh
    tariff = load_tariff(args.tariff) if args.tariff is not None else None
    config = FleetConfig(
        n_evs=args.evs,
        v2g_share=args.v2g_share,
        charger_type=args.charger_type,
        interval_minutes=args.interval_minutes,
        clip_to_day=False,
        horizon_hours=args.horizon_hours,
        degradation_basis=args.degradation_basis,
    )
    shortfall_value = SHORTFALL_VALUE_EUR_KWH
    tasks = build_tasks(
        prices,
        start,
        args.days,
        config,
        seed=args.seed,
        replan_every=args.replan_every,
        price_knowledge=args.price_knowledge,
        shortfall_value_eur_kwh=shortfall_value,
        publication=args.publication,
        interval_stress=args.interval_stress,
        tariff=tariff,
        scenarios=args.scenarios,
        forecaster=FORECASTERS[args.forecaster],
        every=args.every,
        track_errors=args.track_errors,
    )
    fingerprint = {
        "evs": args.evs,
        "start": start.isoformat(),
        "prices_sha256": _file_digest(args.prices),
        "seed": args.seed,
        "shortfall_value_eur_kwh": shortfall_value,
        "mip_gap": tasks[0].mip_gap,
        "replan_every": args.replan_every,
        "price_knowledge": args.price_knowledge,
        "publication": args.publication.strftime("%H:%M"),
        "interval_stress": args.interval_stress,
        "tariff_sha256": _file_digest(args.tariff) if args.tariff is not None else None,
        **{k: v for k, v in asdict(config).items() if k != "n_evs"},
    }
    fingerprint["arrival_soc"] = list(config.arrival_soc)  # as JSON reads it back
    if args.forecaster != "lear":  # absent for lear, the forecaster of earlier runs: their days still match
        fingerprint["forecaster"] = args.forecaster
    if tasks[0].forecast_hourly_interval is not None and config.horizon_hours > 24:
        # runs under interval knowledge forecast the next day two days ahead (earlier runs did not)
        fingerprint["interval_forecast"] = "two-day-ahead"
    if args.every != 1:
        fingerprint["every"] = args.every
    if args.scenarios or args.track_errors:
        fingerprint["error_window_days"] = ERROR_WINDOW_DAYS
    if args.scenarios:
        fingerprint["scenarios"] = args.scenarios
    if args.track_errors:
        fingerprint["track_errors"] = True
    fingerprint["continuous"] = True  # days carry what earlier days committed (stacked days did not)
    _check_output_directory(args.out)
    store = DayStore(args.out, fingerprint)
    done = store.load()
    names = strategies_of(tasks[0])

    def kept(name: str) -> list[DayTask]:
        """The days ``name`` finished in order, from the first: an earlier run's, kept."""
        mine = done.get(name, {})
        prefix = []
        for task in tasks:
            if task.day.isoformat() not in mine:
                break
            prefix.append(task)
        return prefix

    def todo(name: str) -> list[DayTask]:
        return tasks[len(kept(name)) :]

    def carried(name: str, chunk: list[DayTask]) -> Thread:
        finished = [done[name][t.day.isoformat()][name] for t in kept(name)]
        return thread_after(finished, config.interval_minutes)

    skipped = min(len(kept(name)) for name in names)
    if skipped:
        logger.info("%s: %d of %d days already finished", args.out, skipped, len(tasks))
    fresh = run_on_dask(
        tasks, scheduler=args.scheduler, workers=args.workers, on_result=store.write, todo=todo, carry=carried
    )
    merged: dict[str, dict[str, Any]] = {}
    for name in names:
        for task in kept(name):
            day = task.day.isoformat()
            merge_day(merged.setdefault(day, {"day": day}), done[name][day])
    for result in fresh:
        merge_day(merged.setdefault(str(result["day"]), {"day": result["day"]}), result)
    everything = [merged[t.day.isoformat()] for t in tasks if t.day.isoformat() in merged]
    results = [r for r in everything if "error" not in r]
    failed = [{"day": r["day"], "error": r["error"]} for r in everything if "error" in r]
    summary = summarise(results, config, tariff, every=args.every)
    connection = connection_check(results, summary, config, prices, tariff, every=args.every)
    run_from = pd.Timestamp(start, tz="UTC")
    run_to = run_from + pd.Timedelta(days=args.days) + pd.Timedelta(hours=config.horizon_hours)
    filled = [
        gap.start + pd.Timedelta(hours=h)
        for gap in price_file.gaps
        for h in range(gap.hours)
        if price_file.gap_policy != "skip"
    ]
    filled_prices = [
        {"utc": f"{t:%Y-%m-%d %H:%M} UTC", "eur_mwh": float(prices[t])}
        for t in filled
        if run_from <= t < run_to
    ]
    seconds = time.perf_counter() - started
    meta = {
        "evs": args.evs,
        "start": start.isoformat(),
        "days": args.days,
        "every": args.every,
        "days_finished": len(results),
        "days_failed": len(failed),
        "days_from_earlier_runs": skipped,
        "prices": _shown_path(args.prices),
        "v2g_share": args.v2g_share,
        "charger_type": args.charger_type,
        "charger_kw": config.charger_kw,
        "eta": config.eta,
        "degradation_eur_kwh": config.degradation_eur_kwh,
        "degradation_basis": config.degradation_basis,
        "site_kw_per_ev": config.site_kw_per_ev,
        "interval_minutes": config.interval_minutes,
        "horizon_hours": config.horizon_hours,
        "price_knowledge": args.price_knowledge,
        "publication": args.publication.strftime("%H:%M"),
        "tariff": _shown_path(args.tariff) if args.tariff is not None else None,
        "tariff_name": tariff.name if tariff is not None else None,
        "replan_every": args.replan_every,
        "forecaster": args.forecaster,
        "scenarios": args.scenarios,
        "track_errors": args.track_errors,
        "error_window_days": ERROR_WINDOW_DAYS,
        "shortfall_value_eur_kwh": shortfall_value,
        "seed": args.seed,
        "workers": args.workers,
        "seconds": round(seconds, 1),
        "filled_prices": filled_prices,
        "gap_policy": price_file.gap_policy,
    }
    files = write_outputs(args.out, results, summary, meta, failed, connection)
    lines = [
        f"{name:18s} net {x['net_cost_eur']:>12,.2f} EUR  {x['change_vs_uncontrolled_pct']:+6.1f} %  "
        f"V2G {x['v2g_revenue_eur']:>10,.2f} EUR  peak {x['peak_import_kw_mean']:>7,.0f} kW  "
        f"recoveries {x['recoveries']:.0f}"
        for name, x in summary.items()
    ]
    checked = connection["strategies"].values()
    lines.append(
        f"check at the connection: {sum(x['above_import_limit'] + x['above_export_limit'] for x in checked)} "
        "interval(s) above a site limit; the bill recomputed from the summed flows "
        + ("agrees to the cent" if all(x["agrees"] for x in checked) else "DISAGREES (see report.md)")
    )
    if skipped:
        lines.append(f"{skipped} day(s) kept from an earlier run in {args.out / 'days'}")
    lines += [f"FAILED {f['day']}: {f['error']}" for f in failed]
    lines.append(f"wrote {', '.join(files)} to {args.out}")
    return CaseStudyRun({"meta": meta, "summary": summary, "failed": failed}, files, lines, failed, skipped)
