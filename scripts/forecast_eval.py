"""Day-ahead price forecasts over a test year: every model trained only on the prices before each day.

    python scripts/forecast_eval.py [--year 2023] [--days 365] [--legacy]

Models: ``fitted_once`` (LEAR fitted on the two years before ``--year``); the default ``ensemble``
(:class:`~scheduler.forecast_ensemble.ValidatedEnsemble`) and each of its members (``lear_<window>``,
daily recalibrated; ``boosted``, refitted monthly), ``lear_mean`` (the members' LEAR mean) and
``ensemble_two_ahead`` (the same ensemble issued at 00:00 UTC the day before, as the ``interval``
calendar's second day needs); with ``--legacy`` also ``recalibrated_728`` and ``recalibrated`` (the
earlier window ensemble, :class:`~scheduler.forecast.RecalibratedLear`). Every forecast of UTC day D uses
the prices public before D's auction result only (before D-1 22:00 UTC), see :mod:`scheduler.forecast`.

Scores: MAE (EUR/MWh), rMAE against the weekly-naive forecast over the same hours, per-month rMAE, and
seconds. The last line is one JSON object; its top-level figures are the default ensemble's.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from scheduler.datasets import load_prices
from scheduler.forecast import LearForecaster, RecalibratedLear, ValidatedEnsemble
from scheduler.forecast_core import hourly_index


def _score(forecast: pd.Series, prices: pd.Series, seconds: float | None) -> dict[str, object]:
    actual = prices.reindex(forecast.index).to_numpy(dtype=float)
    naive = prices.reindex(pd.DatetimeIndex(forecast.index) - pd.Timedelta(days=7)).to_numpy(dtype=float)
    error, naive_error = np.abs(forecast.to_numpy() - actual), np.abs(naive - actual)
    month = np.asarray(pd.DatetimeIndex(forecast.index).month)
    return {
        "mae_eur_mwh": round(float(np.nanmean(error)), 3),
        "rmae_vs_weekly_naive": round(float(np.nanmean(error) / np.nanmean(naive_error)), 4),
        "days": len(forecast) // 24,
        "seconds": None if seconds is None else round(seconds, 2),
        "rmae_by_month": _by_month(error, naive_error, month),
    }


def _by_month(error: np.ndarray, naive_error: np.ndarray, month: np.ndarray) -> dict[int, float]:
    return {
        int(m): round(float(np.nanmean(error[month == m]) / np.nanmean(naive_error[month == m])), 4)
        for m in np.unique(month)
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--year", type=int, default=2023)
    parser.add_argument("--days", type=int, default=None, help="days from 1 January (default: the year)")
    parser.add_argument("--legacy", action="store_true", help="also the earlier RecalibratedLear models")
    args = parser.parse_args()
    prices = load_prices().eur_mwh
    start = date(args.year, 1, 1)
    days = args.days or (date(args.year + 1, 1, 1) - start).days
    stamps = hourly_index(start, days)
    results: dict[str, dict[str, object]] = {}

    def report(name: str, forecast: pd.Series, seconds: float | None) -> None:
        results[name] = score = _score(forecast, prices, seconds)
        shown = {k: v for k, v in score.items() if k != "rmae_by_month"}
        by_month = score["rmae_by_month"]
        assert isinstance(by_month, dict)
        months = " ".join(f"{m}:{r:.2f}" for m, r in by_month.items())
        print(f"{name:20s} {shown}  by month {months}", flush=True)

    clock = time.perf_counter()
    once = LearForecaster.fit(prices, start - timedelta(days=1))
    report("fitted_once", once.predict_series(prices, start, days), time.perf_counter() - clock)

    model = ValidatedEnsemble()
    clock = time.perf_counter()
    run = model.run(prices, start, days, ahead=2)
    seconds = time.perf_counter() - clock
    for name, values in run.members.items():
        report(name, pd.Series(values.ravel(), index=stamps), None)
    lear = np.mean([v for k, v in run.members.items() if k.startswith("lear_")], axis=0)
    report("lear_mean", pd.Series(lear.ravel(), index=stamps), None)
    report("ensemble_two_ahead", run.series(2), seconds)
    report("ensemble", run.series(1), seconds)
    weights = run.boosted_weight
    print(
        f"boosted weight chosen: mean {weights.mean():.2f}, min {weights.min():.1f}, max {weights.max():.1f}"
    )

    if args.legacy:
        legacy_models = (("recalibrated_728", RecalibratedLear((728,))), ("recalibrated", RecalibratedLear()))
        for name, legacy in legacy_models:
            clock = time.perf_counter()
            report(name, legacy.predict_series(prices, start, days), time.perf_counter() - clock)

    summary = {
        "year": args.year,
        "model": "ensemble",
        "lear_windows": list(model.lear_windows),
        "validation_days": model.validation_days,
        "boosted_weight_mean": round(float(weights.mean()), 3),
        **{k: v for k, v in results["ensemble"].items() if k != "rmae_by_month"},
        "models": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    from scheduler.case_study import FORECAST_THREADS

    # the forecasters' native libraries on one thread, as the case study runs them: OpenMP's waiting
    # threads made a year take over 270 s under load instead of about 32 s
    with threadpool_limits(FORECAST_THREADS):
        main()
