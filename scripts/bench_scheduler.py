"""Benchmark the V2G MILP on a generated ElaadNL fleet and one day of real NL prices.

    python scripts/bench_scheduler.py --evs 10000 --date 2023-07-02 [--builder highspy|pyomo] [--gap 1e-4]

Prints build, solve and total seconds, peak memory, objective and gap; the last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.index import build_index
from scheduler.schedule import check_physics, kpis
from scheduler.solve import solve


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--evs", type=int, default=1000)
    parser.add_argument("--date", default="2023-07-02")
    parser.add_argument("--builder", choices=["highspy", "pyomo"], default="highspy")
    parser.add_argument("--gap", type=float, default=1e-4, help="relative MIP gap (1e-4 = 0.01 %%)")
    parser.add_argument("--v2g-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--charger-type", choices=["private", "public", "workplace"], default="private")
    parser.add_argument("--time-limit", type=float, default=None)
    args = parser.parse_args()

    prices = load_prices().eur_mwh
    started = time.perf_counter()
    problem = fleet_problem(
        args.date,
        prices,
        FleetConfig(n_evs=args.evs, v2g_share=args.v2g_share, charger_type=args.charger_type),
        seed=args.seed,
    )
    generated = time.perf_counter()
    schedule = solve(problem, builder=args.builder, mip_gap=args.gap, time_limit=args.time_limit)
    total = time.perf_counter() - generated
    idx = build_index(problem)
    violations = check_physics(schedule, idx)
    k = kpis(schedule, idx)
    day = problem.prices.buy_eur_mwh
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "evs": args.evs,
        "date": args.date,
        "builder": args.builder,
        "charger_type": args.charger_type,
        "intervals": problem.horizon.intervals,
        "min_price_eur_mwh": float(np.min(day)),
        "plugged_pairs": idx.n_p,
        "v2g_pairs": idx.n_d,
        "binaries": len(idx.binary_candidates()),
        "generate_s": round(generated - started, 3),
        "build_s": round(schedule.build_s, 3),
        "solve_s": round(schedule.solve_s, 3),
        "total_s": round(total, 3),
        "peak_mb": round(peak_mb, 1),
        "status": schedule.status,
        "objective_eur": round(schedule.objective_eur, 4),
        "mip_gap": schedule.mip_gap,
        "v2g_revenue_eur": round(k.v2g_revenue_eur, 2),
        "net_cost_eur": round(k.net_cost_eur, 2),
        "physics_ok": not violations,
    }
    print(
        f"{args.evs} EVs on {args.date} ({args.builder}): build {schedule.build_s:.2f} s, "
        f"solve {schedule.solve_s:.2f} s, total {total:.2f} s, peak {peak_mb:.0f} MB"
    )
    print(
        f"status {schedule.status}, objective {schedule.objective_eur:.2f} EUR, gap {schedule.mip_gap:.2e}, "
        f"physics {violations if violations else 'ok'}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
