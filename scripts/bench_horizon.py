"""Rolling re-optimisation every 15 minutes for one day: seconds per step, realised cost vs perfect foresight.

    python scripts/bench_horizon.py --evs 1000 --date 2023-07-02 [--replan-every 1]

Prices: LEAR-style forecast trained up to the day before, each interval's actual price revealed when
it starts; arrivals: an ElaadNL draw (availability forecast) until vehicles really arrive. One
warm-started highspy model for the day (see :mod:`scheduler.horizon`). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from scheduler.case_study import FORECAST_THREADS, plan_with_forecasts
from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.forecast import LearForecaster
from scheduler.index import build_index
from scheduler.schedule import kpis
from scheduler.solve import solve


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--evs", type=int, default=1000)
    parser.add_argument("--date", default="2023-07-02")
    parser.add_argument("--replan-every", type=int, default=1)
    args = parser.parse_args()
    prices = load_prices().eur_mwh
    day = date.fromisoformat(args.date)
    config = FleetConfig(n_evs=args.evs)
    problem = fleet_problem(args.date, prices, config, seed=1)
    with threadpool_limits(FORECAST_THREADS):  # the forecaster's native threads, as the case study does
        model = LearForecaster.fit(prices, day - timedelta(days=1))
        hourly = model.predict_day(prices, day)
    started = time.perf_counter()
    # interval knowledge (each price public when its hour starts): the re-plan's hardest calendar, a price
    # revealed at every step
    rolled = plan_with_forecasts(
        problem, hourly, config, seed=7_919, replan_every=args.replan_every, price_knowledge="interval"
    )
    total = time.perf_counter() - started
    perfect = kpis(solve(problem), build_index(problem))
    steps = np.array(rolled.step_seconds)
    print(
        f"{rolled.steps} re-plans for {args.evs} EVs ({rolled.solves} solves, {rolled.milp_steps} as MILP): "
        f"mean {steps.mean():.3f} s, median {np.median(steps):.3f} s, max {steps.max():.2f} s, "
        f"total {total:.1f} s"
    )
    print(
        f"net cost: rolling with forecasts {rolled.kpis.net_cost_eur:.2f} EUR, perfect foresight "
        f"{perfect.net_cost_eur:.2f} EUR; shortfall {rolled.kpis.shortfall_kwh:.3f} kWh"
    )
    print(
        json.dumps(
            {
                "evs": args.evs,
                "date": args.date,
                "replan_every": args.replan_every,
                "steps": rolled.steps,
                "solves": rolled.solves,
                "milp_steps": rolled.milp_steps,
                "step_median_s": round(float(np.median(steps)), 3),
                "step_mean_s": round(float(steps.mean()), 3),
                "step_max_s": round(float(steps.max()), 3),
                "total_s": round(total, 2),
                "rolling_net_cost_eur": round(rolled.kpis.net_cost_eur, 2),
                "perfect_net_cost_eur": round(perfect.net_cost_eur, 2),
                "rolling_shortfall_kwh": round(rolled.kpis.shortfall_kwh, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
