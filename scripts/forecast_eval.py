"""Day-ahead price forecasts over a test year: fitted once vs recalibrated daily vs the window ensemble.

    python scripts/forecast_eval.py [--year 2023] [--days 365] [--windows 56,84,364,728]

Every model trains only on prices before each forecast day (the fitted-once model on the years before
``--year``; the recalibrated ones on their rolling window before each day, see
:mod:`scheduler.forecast`). Scores: MAE (EUR/MWh), rMAE against the weekly-naive forecast over the same
hours, per-month rMAE, and seconds. The last line is one JSON object; its top-level figures are the
ensemble's.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from scheduler.datasets import load_prices
from scheduler.forecast import CALIBRATION_WINDOWS, LearForecaster, RecalibratedLear


def _score(forecast: pd.Series, prices: pd.Series, seconds: float) -> dict[str, object]:
    actual = prices.reindex(forecast.index).to_numpy(dtype=float)
    naive = prices.reindex(pd.DatetimeIndex(forecast.index) - pd.Timedelta(days=7)).to_numpy(dtype=float)
    error, naive_error = np.abs(forecast.to_numpy() - actual), np.abs(naive - actual)
    month = np.asarray(pd.DatetimeIndex(forecast.index).month)
    return {
        "mae_eur_mwh": round(float(np.nanmean(error)), 3),
        "rmae_vs_weekly_naive": round(float(np.nanmean(error) / np.nanmean(naive_error)), 4),
        "days": len(forecast) // 24,
        "seconds": round(seconds, 2),
        "rmae_by_month": {
            int(m): round(float(np.nanmean(error[month == m]) / np.nanmean(naive_error[month == m])), 4)
            for m in np.unique(month)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--year", type=int, default=2023)
    parser.add_argument("--days", type=int, default=None, help="days from 1 January (default: the year)")
    parser.add_argument("--windows", default=",".join(map(str, CALIBRATION_WINDOWS)))
    args = parser.parse_args()
    windows = tuple(int(w) for w in args.windows.split(","))
    prices = load_prices().eur_mwh
    start = date(args.year, 1, 1)
    days = args.days or (date(args.year + 1, 1, 1) - start).days
    results: dict[str, dict[str, object]] = {}
    models: dict[str, LearForecaster | RecalibratedLear] = {}
    clock = time.perf_counter()
    models["fitted_once"] = LearForecaster.fit(prices, start - timedelta(days=1))
    fit_seconds = time.perf_counter() - clock
    models[f"recalibrated_{max(windows)}"] = RecalibratedLear((max(windows),))
    models["ensemble"] = RecalibratedLear(windows)
    for name, model in models.items():
        clock = time.perf_counter()
        forecast = model.predict_series(prices, start, days)
        seconds = time.perf_counter() - clock + (fit_seconds if name == "fitted_once" else 0.0)
        results[name] = _score(forecast, prices, seconds)
        print(name, {k: v for k, v in results[name].items() if k != "rmae_by_month"}, flush=True)
    summary = {
        "year": args.year,
        "windows": list(windows),
        **{k: v for k, v in results["ensemble"].items() if k != "rmae_by_month"},
        "models": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
