"""Measure what ending every session at midnight costs the optimised strategies.

    python scripts/overnight_effect.py [--evs 1000] [--days 14]

For days spread over 2023, the same ElaadNL fleet is scheduled twice with perfect foresight:
``midnight`` (the case study's model: each day self-contained, sessions cut at midnight) and
``overnight`` (a 48-hour horizon with that day's sessions kept whole, so evening arrivals can use the
night). Prints net and energy cost change against uncontrolled and V2G revenue; the last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta

from scheduler.baselines import uncontrolled
from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem, generate_fleet
from scheduler.index import build_index
from scheduler.inputs import Horizon, Prices, Problem, Site
from scheduler.schedule import kpis
from scheduler.solve import solve


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--evs", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    prices = load_prices().eur_mwh
    totals: dict[str, dict[str, list[float]]] = {}
    started = time.perf_counter()
    step = max(1, 364 // args.days)
    for i in range(0, step * args.days, step):
        day = date(2023, 1, 1) + timedelta(days=i)
        for label, clip in (("midnight", True), ("overnight", False)):
            config = FleetConfig(n_evs=args.evs, clip_to_day=clip)
            if clip:
                problem = fleet_problem(str(day), prices, config, seed=0)
            else:
                start = Horizon.day(str(day)).start
                horizon = Horizon(start, 192, 15)
                vehicles, sessions = generate_fleet(str(day), config, seed=0)
                limit = config.site_kw_per_ev * config.n_evs
                problem = Problem(
                    horizon,
                    vehicles,
                    sessions,
                    Site.build(horizon, limit, limit),
                    Prices.from_hourly(horizon, prices),
                    degradation_eur_kwh=config.degradation_eur_kwh,
                )
            idx = build_index(problem)
            for name, schedule in (
                ("uncontrolled", uncontrolled(problem)),
                ("smart", solve(problem, v2g=False)),
                ("v2g", solve(problem)),
            ):
                k = kpis(schedule, idx)
                row = totals.setdefault(label, {}).setdefault(name, [0.0, 0.0, 0.0])
                row[0] += k.net_cost_eur
                row[1] += k.import_cost_eur - k.export_revenue_eur
                row[2] += k.v2g_revenue_eur
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for label, rows in totals.items():
        base_net, base_energy = rows["uncontrolled"][0], rows["uncontrolled"][1]
        for name, (net, energy, v2g) in rows.items():
            figures.setdefault(label, {})[name] = {
                "net_change_pct": round((net - base_net) / abs(base_net) * 100, 2),
                "energy_change_pct": round((energy - base_energy) / abs(base_energy) * 100, 2),
                "v2g_revenue_eur": round(v2g, 1),
            }
            print(
                f"{label:10s} {name:13s} net {figures[label][name]['net_change_pct']:+6.1f} %  energy "
                f"{figures[label][name]['energy_change_pct']:+6.1f} %  V2G revenue {v2g:9.0f} EUR"
            )
    print(
        json.dumps(
            {
                "evs": args.evs,
                "days": args.days,
                "seconds": round(time.perf_counter() - started, 1),
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
