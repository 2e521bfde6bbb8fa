"""Schedule a generated portfolio of N EVs on Dask and check the schedule's physics.

    python scripts/bench_portfolio.py --evs 100000 [--workers 2] [--cap-share 0.1] [--day 2023-03-15]
    python scripts/bench_portfolio.py --evs 10000 --monolithic-too   # the distance to the one-LP optimum
    python scripts/bench_portfolio.py --scaling 10000,30000,100000 --plot docs/portfolio_scaling.png

Prints what it does, then as its last line one JSON object: evs, sites, zones, total_s, solve_s,
coordination_iterations, gap_to_bound, coupling_rows, rss_mb (the client's peak plus every worker's),
workers, and more (blocks, generate_s, check_s, violations); with ``--cap-share`` also the same fleet
solved without its cap, ``uncoupled_total_s``, and ``ratio_to_uncoupled``. ``--scaling`` runs each
size on 1 and 2 workers and reports the parallel efficiency (time on 1 / (2 × time on 2)).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.cluster import dask_client
from scheduler.datasets import load_prices
from scheduler.portfolio import PortfolioConfig, generate_portfolio, solve_portfolio
from scheduler.portfolio.check import check_schedule


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(
    evs: int,
    workers: int,
    day: str,
    cap_share: float | None,
    seed: int,
    monolithic_too: bool,
    warm_start: bool = True,
    tol: float = 1e-4,
) -> dict[str, Any]:
    prices = load_prices().window("2023-01-01", "2024-01-01")
    started = time.perf_counter()
    config = PortfolioConfig(n_evs=evs, portfolio_cap_share=cap_share)
    portfolio = generate_portfolio(day, prices, config, seed=seed)
    generate_s = time.perf_counter() - started
    print(f"generated {evs:,} EVs on {len(portfolio.sites):,} sites in {generate_s:.1f} s", flush=True)
    with dask_client(None, workers, keep_objects=True) as client:
        result = solve_portfolio(
            portfolio, client=client, progress=lambda m: print(m, flush=True), warm_start=warm_start, tol=tol
        )
        worker_rss = client.run(_peak_rss_mb)
        uncoupled = None
        if cap_share is not None:  # the same fleet without its cap: what coordination costs in time
            free = generate_portfolio(day, prices, PortfolioConfig(n_evs=evs), seed=seed)
            uncoupled = solve_portfolio(free, client=client)
            print(f"without the cap: {uncoupled.total_s:.1f} s", flush=True)
        reference = None
        if monolithic_too:
            whole = solve_portfolio(portfolio, client=client, monolithic=True)
            reference = whole.cost_eur
            print(f"monolithic: {whole.cost_eur:,.2f} EUR in {whole.solve_s:.1f} s", flush=True)
    checked = time.perf_counter()
    violations = check_schedule(
        portfolio,
        np.concatenate([b.session_row for b in result.schedule]),
        np.concatenate([b.t for b in result.schedule]),
        np.concatenate([b.charge_kw for b in result.schedule]),
        np.concatenate([b.discharge_kw for b in result.schedule]),
        tol=1e-3,  # the schedule travels back in float32
    )
    check_s = time.perf_counter() - checked
    for v in violations[:5]:
        print(f"violation: {v}", flush=True)
    figures = result.figures()
    figures.update(
        {
            "day": day,
            "cap_share": cap_share,
            "generate_s": round(generate_s, 2),
            "check_s": round(check_s, 2),
            "violations": len(violations),
            "rss_mb": round(_peak_rss_mb() + sum(worker_rss.values()), 1),
            "client_rss_mb": round(_peak_rss_mb(), 1),
            "worker_rss_mb": [round(v, 1) for v in worker_rss.values()],
        }
    )
    figures["warm_start"] = warm_start
    figures["tol"] = tol
    if uncoupled is not None:
        figures["uncoupled_total_s"] = round(uncoupled.total_s, 2)
        figures["ratio_to_uncoupled"] = round(result.total_s / max(uncoupled.total_s, 1e-9), 2)
    if reference is not None:
        figures["monolithic_eur"] = round(reference, 2)
        figures["distance_to_monolithic"] = (result.cost_eur - reference) / max(abs(reference), 1.0)
    print(
        f"{evs:,} EVs: {result.cost_eur:,.2f} EUR, bound {result.lower_bound_eur:,.2f} EUR "
        f"(gap {result.gap:.2e}), {result.iterations} round(s), solve {result.solve_s:.1f} s, "
        f"total {result.total_s:.1f} s, {len(violations)} violation(s)",
        flush=True,
    )
    return figures


def scaling(
    sizes: list[int], day: str, cap_share: float | None, seed: int, plot: Path | None
) -> dict[str, Any]:
    rows = []
    for evs in sizes:
        one = run(evs, 1, day, cap_share, seed, False)
        two = run(evs, 2, day, cap_share, seed, False)
        rows.append(
            {
                "evs": evs,
                "total_s_1": one["total_s"],
                "total_s_2": two["total_s"],
                "solve_s_1": one["solve_s"],
                "solve_s_2": two["solve_s"],
                "efficiency": round(one["solve_s"] / (2 * two["solve_s"]), 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        x = [r["evs"] for r in rows]
        ax.plot(x, [r["solve_s_1"] for r in rows], "o-", label="1 worker")
        ax.plot(x, [r["solve_s_2"] for r in rows], "s-", label="2 workers")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("EVs")
        ax.set_ylabel("solve seconds")
        ax.set_title(f"Portfolio schedule, {day}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=120)
    return {"scaling": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--evs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--day", default="2023-03-15")
    parser.add_argument(
        "--cap-share", type=float, default=None, help="portfolio import cap, as a share of all charger kW"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--monolithic-too", action="store_true")
    parser.add_argument(
        "--zero-start", action="store_true", help="first prices zero, not the aggregate's duals (to compare)"
    )
    parser.add_argument("--tol", type=float, default=1e-4, help="stop at this gap to the bound")
    parser.add_argument("--scaling", default=None, help="comma-separated sizes, each on 1 and 2 workers")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    if args.scaling:
        sizes = [int(x) for x in args.scaling.split(",")]
        print(json.dumps(scaling(sizes, args.day, args.cap_share, args.seed, args.plot)))
        return
    figures = run(
        args.evs,
        args.workers,
        args.day,
        args.cap_share,
        args.seed,
        args.monolithic_too,
        not args.zero_start,
        args.tol,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
