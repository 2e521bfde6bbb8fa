"""The case study: a fleet over many days of real prices, four strategies, one table.

Strategies (names as in ``results.json``):

- ``uncontrolled``: full power from arrival (site limit shared), see :mod:`scheduler.baselines`;
- ``smart``: optimal charging without V2G, perfect foresight of the day's prices and sessions;
- ``perfect_foresight``: optimal V2G with perfect foresight;
- ``forecast``: V2G planned with LEAR-style price forecasts (trained only on days before ``start``,
  each day forecast from the prices before it) and an ElaadNL availability forecast, re-planned every
  ``replan_every`` intervals as vehicles really arrive (rolling horizon, warm-started); costs are
  realised at actual prices, and any energy an owner leaves without is charged at
  ``shortfall_value_eur_kwh`` (default 0.60 EUR/kWh, a public fast-charging price) into its net cost.

What the ``forecast`` strategy knows of prices (``price_knowledge``): ``day-ahead`` (default) follows the
market's calendar, each delivery day's prices (a day in Europe/Amsterdam time) public at 12:45 CET/CEST
the day before (``--publication``), forecasts only for hours not yet published; ``interval`` reveals each
price only when its interval starts, so every decision is taken on forecasts, as an aggregator that must
commit before its prices are settled. The stress test ``forecast_interval`` (the same plan under
``interval`` knowledge) runs beside the headline unless ``--no-interval-stress``. With ``day-ahead``
knowledge and departure times known at plug-in, re-planning loses little to perfect foresight unless the
site limit binds: sessions interact only through the site, so a surprise arrival changes no other
session's optimum.

Each day's fleet is a new draw of sessions arriving that day; sessions are kept whole on a horizon of
``horizon_hours`` (default 48 h, so evening arrivals can use the night). Days are independent, so they
run in parallel on a Dask cluster: a local one by default, or any scheduler address.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from scheduler.baselines import uncontrolled
from scheduler.datasets import PRICES_NL, load_prices
from scheduler.errors import (
    ClusterUnreachableError,
    DateOutOfRangeError,
    InvalidParameterError,
    MisalignedIntervalError,
    OutputConflictError,
)
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.forecast import LearForecaster, availability_forecast
from scheduler.horizon import (
    DAY_AHEAD_PUBLICATION,
    PriceKnowledge,
    RollingResult,
    prices_known_from,
    rolling_horizon,
)
from scheduler.index import build_index
from scheduler.inputs import Problem, parse_day
from scheduler.schedule import SHORTFALL_VALUE_EUR_KWH, kpis
from scheduler.solve import solve

logger = logging.getLogger(__name__)

#: Every strategy a run can hold, in table order; ``forecast_interval`` is the stress test of ``forecast``
#: (the same plan when each price is public only once its interval starts), absent when not run.
STRATEGIES = ("uncontrolled", "smart", "perfect_foresight", "forecast", "forecast_interval")
__all__ = ["STRATEGIES", "prices_known_from", "run_from_args"]


@dataclass(frozen=True)
class DayTask:
    day: date
    actual_hourly: pd.Series  # the day and the next (as far as the series goes)
    forecast_hourly: np.ndarray  # the same hours, each day forecast from the days before it
    config: FleetConfig
    seed: int
    replan_every: int
    mip_gap: float
    shortfall_value_eur_kwh: float = SHORTFALL_VALUE_EUR_KWH
    price_knowledge: PriceKnowledge = "day-ahead"
    publication: clock_time = DAY_AHEAD_PUBLICATION
    interval_stress: bool = False  # also run ``forecast_interval``


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
    context: str = "",
) -> RollingResult:
    """The ``forecast`` strategy: rolling re-planning with hourly price forecasts (used for both buy and
    sell) where prices are not yet public (see :func:`~scheduler.horizon.prices_known_from`), and an
    ElaadNL availability forecast drawn with ``seed``."""
    forecast = np.repeat(
        np.asarray(forecast_hourly, dtype=np.float64), 60 // problem.horizon.interval_minutes
    )
    if len(forecast) != problem.horizon.intervals:
        raise MisalignedIntervalError(
            f"{len(forecast_hourly)} hourly forecasts for a horizon of {problem.horizon.intervals} intervals"
        )
    vehicles, sessions = availability_forecast(problem.horizon.start.date(), config, seed=seed)
    return rolling_horizon(
        problem,
        buy_forecast_eur_mwh=forecast,
        sell_forecast_eur_mwh=forecast,
        session_forecast=sessions,
        forecast_vehicles=vehicles,
        prices_known_from=prices_known_from(problem.horizon, price_knowledge, publication=publication),
        replan_every=replan_every,
        mip_gap=mip_gap,
        shortfall_value_eur_kwh=shortfall_value_eur_kwh,
        context=context,
    )


def run_day(task: DayTask) -> dict[str, Any]:
    """The four strategies on one day: KPIs and seconds per strategy, and the solver recoveries each
    took. Energy an owner leaves without is valued at ``shortfall_value_eur_kwh`` in every strategy.

    A day that fails after every recovery is returned as ``{"day": ..., "error": "Name: message"}``
    (never raised), so that one day cannot lose the others."""
    try:
        return _run_day(task)
    except Exception as exc:  # a day's failure is a result of the study, reported with its name
        logger.exception("case study day %s failed", task.day)
        return {"day": task.day.isoformat(), "error": f"{type(exc).__name__}: {exc}"}


def _run_day(task: DayTask) -> dict[str, Any]:
    context = task.day.isoformat()
    problem = fleet_problem(context, task.actual_hourly, task.config, seed=task.seed)
    valued = build_index(
        replace(problem, shortfall_penalty_eur_kwh=task.shortfall_value_eur_kwh), check_targets=False
    )
    out: dict[str, Any] = {"day": context, "seconds": {}, "recoveries": {}}

    def timed(name: str, started: float) -> None:
        out["seconds"][name] = round(time.perf_counter() - started, 3)

    t = time.perf_counter()
    out["uncontrolled"] = kpis(uncontrolled(problem), valued).as_dict()
    out["recoveries"]["uncontrolled"] = []
    timed("uncontrolled", t)
    for name, v2g in (("smart", False), ("perfect_foresight", True)):
        t = time.perf_counter()
        schedule = solve(problem, v2g=v2g, mip_gap=task.mip_gap, strategy=name, context=context)
        out[name] = kpis(schedule, valued).as_dict()
        out["recoveries"][name] = list(schedule.recoveries)
        timed(name, t)
    runs = [("forecast", task.price_knowledge)]
    if task.interval_stress and task.price_knowledge != "interval":
        runs.append(("forecast_interval", "interval"))
    for name, knowledge in runs:
        t = time.perf_counter()
        rolled = plan_with_forecasts(
            problem,
            task.forecast_hourly,
            task.config,
            seed=task.seed + 7_919,
            replan_every=task.replan_every,
            mip_gap=task.mip_gap,
            shortfall_value_eur_kwh=task.shortfall_value_eur_kwh,
            price_knowledge=knowledge,
            publication=task.publication,
            context=f"{context} {name}",
        )
        out[name] = rolled.kpis.as_dict()
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
) -> list[DayTask]:
    """One task per day; the forecaster is trained on the days before ``start`` only.

    Raises :class:`InvalidParameterError` for fewer than one day and :class:`DateOutOfRangeError` when
    a day has no prices or ``start`` leaves the forecaster too little history."""
    if days < 1:
        raise InvalidParameterError(f"days = {days}: a case study covers at least one day")
    if replan_every < 1:
        raise InvalidParameterError(f"replan_every = {replan_every} must be >= 1")
    if len(prices) == 0:
        raise DateOutOfRangeError("the price series is empty")
    first, last = prices.index.min().date(), prices.index.max().date()
    end = start + timedelta(days=days - 1)
    if start < first or end > last:
        raise DateOutOfRangeError(
            f"days {start} to {end} are not all in the price series, which covers {first} to {last}"
        )
    try:
        model = LearForecaster.fit(prices, start - timedelta(days=1))
    except InvalidParameterError as exc:
        raise DateOutOfRangeError(
            f"start {start}: the price forecaster trains on the prices before it, and {exc}"
        ) from exc
    span = -(-config.horizon_hours // 24)  # days a problem covers
    forecasts = model.predict_series(prices, start, days + span - 1)
    tasks = []
    for i in range(days):
        d = start + timedelta(days=i)
        lo = pd.Timestamp(d, tz="UTC")
        hi = lo + pd.Timedelta(hours=config.horizon_hours)
        actual = prices[(prices.index >= lo) & (prices.index < hi)]
        forecast = forecasts.reindex(actual.index).to_numpy()
        tasks.append(
            DayTask(
                d, actual, forecast, config, seed, replan_every, mip_gap,
                shortfall_value_eur_kwh=shortfall_value_eur_kwh, price_knowledge=price_knowledge,
                publication=publication, interval_stress=interval_stress,
            )
        )  # fmt: skip
    return tasks


#: The identity every row of the table and of ``results.json`` obeys (EUR).
NET_IDENTITY = "net = import cost − export revenue + wear + shortfall penalty"
TERMS = ("import_cost_eur", "export_revenue_eur", "degradation_eur", "shortfall_penalty_eur")


def summarise(results: list[dict[str, Any]], config: FleetConfig) -> dict[str, dict[str, float]]:
    """Totals per strategy over the finished days (each term of the net cost, and the net cost), change
    against uncontrolled, V2G revenue (a part of the export revenue and avoided import, not a term of
    its own), peak import and its spread, and the solver recoveries taken."""
    days = len(results)
    table: dict[str, dict[str, float]] = {}
    base_net = sum(r["uncontrolled"]["net_cost_eur"] for r in results)
    for strategy in strategies_in(results):
        rows = [r[strategy] for r in results]
        peaks = np.array([r["peak_import_kw"] for r in rows]) if rows else np.zeros(1)
        net = sum(r["net_cost_eur"] for r in rows)
        table[strategy] = {
            **{term: sum(r[term] for r in rows) for term in TERMS},
            "net_cost_eur": net,
            "change_vs_uncontrolled_pct": (net - base_net) / abs(base_net) * 100 if base_net else 0.0,
            "v2g_revenue_eur": sum(r["v2g_revenue_eur"] for r in rows),
            "peak_import_kw_mean": float(peaks.mean()),
            "peak_import_kw_std": float(peaks.std()),
            "shortfall_kwh": sum(r["shortfall_kwh"] for r in rows),
            "eur_per_ev_per_year": net / max(config.n_evs, 1) / max(days, 1) * 365,
            "seconds": sum(r_["seconds"][strategy] for r_ in results),
            "recoveries": sum(len(r_.get("recoveries", {}).get(strategy, ())) for r_ in results),
        }
    best = table["perfect_foresight"]["net_cost_eur"] if "perfect_foresight" in table else base_net
    for row in table.values():
        row["saving_kept_pct"] = saving_kept_pct(base_net, best, row["net_cost_eur"])
    return table


def strategies_in(results: list[dict[str, Any]]) -> list[str]:
    """The strategies every one of ``results`` holds, in table order (the first four when empty)."""
    if not results:
        return list(STRATEGIES[:4])
    return [s for s in STRATEGIES if all(s in r for r in results)]


def saving_kept_pct(base_net: float, best_net: float, net: float) -> float:
    """The share of perfect foresight's saving against uncontrolled charging that ``net`` keeps, in %:
    100·(base − net)/(base − best); 100 when perfect foresight saves nothing."""
    saving = base_net - best_net
    return 100.0 * (base_net - net) / saving if abs(saving) > 1e-9 else 100.0


def run_on_dask(
    tasks: list[DayTask],
    *,
    scheduler: str | None = None,
    workers: int = 2,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the days on a Dask cluster: ``scheduler`` (an address) or a local cluster of ``workers``.

    ``on_result`` is called with each day's result as soon as it finishes (in finishing order), so a
    caller can keep it; a day whose task fails outside :func:`run_day` (a worker lost) comes back as a
    result with an ``error``."""
    from dask.distributed import Client, LocalCluster, as_completed

    if not tasks:
        return []
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, ValueError, TypeError) as exc:  # unreachable, or not an address at all
            raise ClusterUnreachableError(f"Dask scheduler {scheduler!r}: {exc}") from exc
        cluster = None
    else:
        import dask

        # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which hands freed memory back to
        # the OS so eagerly that the many small numpy arrays of a re-plan cost a third more time; a
        # day's task is small, so keep glibc's default there.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            # A task's own failure reaches the caller through its future; the workers' log would
            # only add the heartbeat noise of the cluster shutting down.
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=workers > 1,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
        client = Client(cluster)
    results: list[dict[str, Any]] = []
    try:
        futures = client.map(run_day, tasks, pure=False)
        day_of = {f.key: t.day for f, t in zip(futures, tasks, strict=True)}
        for future in as_completed(futures):
            try:
                result: dict[str, Any] = future.result()
            except Exception as exc:  # the task never returned: a lost worker, a cancelled future
                result = {"day": day_of[future.key].isoformat(), "error": f"{type(exc).__name__}: {exc}"}
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return sorted(results, key=lambda r: str(r["day"]))


class DayStore:
    """One JSON file per finished day under ``out/days``, written as the day finishes (atomically), and
    marked with the fingerprint of the configuration it was computed with; a re-run with the same
    ``--out`` and configuration skips the days already there and retries the ones that failed."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.directory = Path(out) / "days"
        self.fingerprint = fingerprint

    def _path(self, day: str) -> Path:
        return self.directory / f"{day}.json"

    def load(self) -> dict[str, dict[str, Any]]:
        """The days already finished (failed ones excluded), by day; :class:`OutputConflictError` when
        a stored day was computed with another configuration."""
        import json

        done: dict[str, dict[str, Any]] = {}
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
            if "error" not in result:
                done[str(result["day"])] = result
        return done

    def write(self, result: dict[str, Any]) -> None:
        import json

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(str(result["day"]))
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps({"config": self.fingerprint, "result": result}, indent=1))
        partial.replace(path)


def write_outputs(
    out: Any,
    results: list[dict[str, Any]],
    summary: dict[str, dict[str, float]],
    meta: dict[str, Any],
    failed: list[dict[str, Any]] | None = None,
) -> list[str]:
    """results.json, three PNG plots and report.md in ``out``; returns the file names."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    failed = failed or []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "identity": NET_IDENTITY, "summary": summary, "days": results, "failed": failed}
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
        f"# Case study: {meta['evs']} EVs, {meta['start']} for {meta['days']} days",
        "",
        "Assumptions: a new fleet of ElaadNL sessions arriving each day (charger type "
        f"{meta['charger_type']}), {meta['v2g_share']:.0%} V2G-capable, {meta['charger_kw']} kW chargers, "
        f"η {meta['eta']} each way, degradation {meta['degradation_eur_kwh']} EUR/kWh of "
        f"{'throughput (charged + discharged)' if meta['degradation_basis'] == 'throughput' else 'discharge'}"
        f", site limit ±{meta['site_kw_per_ev']} kW per EV; sessions kept whole on a "
        f"{meta['horizon_hours']}-hour horizon in {meta['interval_minutes']}-min intervals (a car plugged "
        f"in for part of an interval has that share of its power there); prices from `{meta['prices']}`. "
        f"The forecast strategy re-plans every {meta['replan_every']} interval(s) with LEAR-style price "
        "forecasts (trained before the start) for prices not yet public and an ElaadNL availability "
        "forecast; "
        f"it knows prices by the market's calendar ({_knowledge_text(meta)})"
        + (
            "; forecast_interval is the same plan under the stress test of `interval` knowledge (each price "
            "public only when its hour starts)"
            if "forecast_interval" in summary
            else ""
        )
        + f". Energy an owner leaves without is valued at {meta['shortfall_value_eur_kwh']:.2f} EUR/kWh in "
        f"every strategy's net cost. Runtime {meta['seconds']:.0f} s on {meta['workers']} Dask worker(s).",
        "",
        f"Each row, in EUR over {len(results)} finished day(s): **{NET_IDENTITY}**. V2G revenue (the "
        "discharged energy valued at the site's margin: the sell price where the site exports, the avoided "
        "buy price otherwise) is already inside import and export and is not a term of its own. Recoveries: "
        "solves that HiGHS ended without a proven optimum and that a recovery completed (`scheduler.highs`).",
        "",
        "| strategy | import € | export € | wear € | shortfall € | net € | vs uncontrolled | V2G revenue € | "
        "peak import kW (mean ± sd) | € per EV per year | shortfall kWh | saving kept | recoveries |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in names:
        x = summary[s]
        lines.append(
            f"| {s} | {x['import_cost_eur']:,.2f} | {x['export_revenue_eur']:,.2f} | "
            f"{x['degradation_eur']:,.2f} | {x['shortfall_penalty_eur']:,.2f} | {x['net_cost_eur']:,.2f} | "
            f"{x['change_vs_uncontrolled_pct']:+.1f} % | {x['v2g_revenue_eur']:,.2f} | "
            f"{x['peak_import_kw_mean']:,.0f} ± {x['peak_import_kw_std']:,.0f} | "
            f"{x['eur_per_ev_per_year']:,.1f} | {x['shortfall_kwh']:,.1f} | {x['saving_kept_pct']:.1f} % | "
            f"{x['recoveries']:.0f} |"
        )
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
    parser.add_argument("--workers", type=_positive_int, default=2)
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a local cluster)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    start = parse_day(args.start).date()
    if not math.isfinite(args.v2g_share):
        raise InvalidParameterError(f"v2g_share = {args.v2g_share} must be in [0, 1]")
    prices = load_prices(args.prices).eur_mwh
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
        **{k: v for k, v in asdict(config).items() if k != "n_evs"},
    }
    fingerprint["arrival_soc"] = list(config.arrival_soc)  # as JSON reads it back
    _check_output_directory(args.out)
    store = DayStore(args.out, fingerprint)
    done = store.load()
    todo = [t for t in tasks if t.day.isoformat() not in done]
    if done:
        logger.info("%s: %d of %d days already finished", args.out, len(tasks) - len(todo), len(tasks))
    fresh = run_on_dask(todo, scheduler=args.scheduler, workers=args.workers, on_result=store.write)
    wanted = {t.day.isoformat() for t in tasks}
    everything = sorted([r for d, r in done.items() if d in wanted] + fresh, key=lambda r: str(r["day"]))
    results = [r for r in everything if "error" not in r]
    failed = [{"day": r["day"], "error": r["error"]} for r in everything if "error" in r]
    summary = summarise(results, config)
    seconds = time.perf_counter() - started
    meta = {
        "evs": args.evs,
        "start": start.isoformat(),
        "days": args.days,
        "days_finished": len(results),
        "days_failed": len(failed),
        "days_from_earlier_runs": len(tasks) - len(todo),
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
        "replan_every": args.replan_every,
        "shortfall_value_eur_kwh": shortfall_value,
        "seed": args.seed,
        "workers": args.workers,
        "seconds": round(seconds, 1),
    }
    files = write_outputs(args.out, results, summary, meta, failed)
    lines = [
        f"{name:18s} net {x['net_cost_eur']:>12,.2f} EUR  {x['change_vs_uncontrolled_pct']:+6.1f} %  "
        f"V2G {x['v2g_revenue_eur']:>10,.2f} EUR  peak {x['peak_import_kw_mean']:>7,.0f} kW  "
        f"recoveries {x['recoveries']:.0f}"
        for name, x in summary.items()
    ]
    if done:
        lines.append(f"{len(tasks) - len(todo)} day(s) kept from an earlier run in {args.out / 'days'}")
    lines += [f"FAILED {f['day']}: {f['error']}" for f in failed]
    lines.append(f"wrote {', '.join(files)} to {args.out}")
    return CaseStudyRun(
        {"meta": meta, "summary": summary, "failed": failed}, files, lines, failed, len(tasks) - len(todo)
    )
