"""Robustness sweep of the case study: every day of several years, under both price-knowledge modes and
both degradation bases, with several fleet seeds; counts failed days and solver recoveries (each run
sweeps one knowledge mode, so the case study's own interval stress test is off).

    python scripts/sweep_case_study.py [--years 2019 2020 2021 2022 2023] [--seeds 0 1 2 3] [--evs 300]
        [--all-seeds] [--out out/sweep] [--workers 2]

Each configuration (year × knowledge × basis) runs with one seed, the seeds taken in turn, so every seed
meets every mode; ``--all-seeds`` runs every seed on every configuration instead. Each run is an ordinary
case study in its own ``--out`` subdirectory, so an interrupted sweep resumes where it stopped. Prints
one line per run; the last line is one JSON object: runs, days, failed_days, recoveries (by kind and by
strategy), seconds. Exits 1 when any day failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path

from scheduler.case_study import STRATEGIES, run_from_args
from scheduler.errors import SchedulerError


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--years", type=int, nargs="+", default=[2019, 2020, 2021, 2022, 2023])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--all-seeds", action="store_true", help="every seed on every configuration")
    parser.add_argument("--evs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("out/sweep"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    configs = list(itertools.product(args.years, ("day-ahead", "interval"), ("throughput", "discharge")))
    if args.all_seeds:
        runs = [(*c, seed) for c in configs for seed in args.seeds]
    else:
        runs = [(*c, args.seeds[i % len(args.seeds)]) for i, c in enumerate(configs)]
    started = time.perf_counter()
    days = failed = 0
    by_kind: Counter[str] = Counter()
    by_strategy: Counter[str] = Counter()
    failures: list[str] = []
    for year, knowledge, basis, seed in runs:
        out = args.out / f"{year}-{knowledge}-{basis}-seed{seed}"
        n_days = 366 if year % 4 == 0 else 365
        argv = [
            "--evs", str(args.evs), "--start", f"{year}-01-01", "--days", str(n_days),
            "--price-knowledge", knowledge, "--degradation-basis", basis, "--seed", str(seed),
            "--workers", str(args.workers), "--out", str(out), "--no-interval-stress",
        ]  # fmt: skip
        t = time.perf_counter()
        try:
            run = run_from_args(argv)
        except SchedulerError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        stored = json.loads((out / "results.json").read_text())
        for day in stored["days"]:
            for strategy, steps in day.get("recoveries", {}).items():
                by_strategy[strategy] += len(steps)
                by_kind.update(steps)
        days += n_days
        failed += len(run.failed)
        failures += [f"{year} {knowledge} {basis} seed {seed} {f['day']}: {f['error']}" for f in run.failed]
        summary = stored["summary"]
        print(
            f"{year} {knowledge:9s} {basis:10s} seed {seed}: {n_days - len(run.failed)}/{n_days} days, "
            f"{sum(row['recoveries'] for row in summary.values()):.0f} recoveries, "
            f"forecast keeps {_kept(summary):.1f} % of the perfect-foresight saving, "
            f"{time.perf_counter() - t:.0f} s ({run.skipped} days from an earlier run)",
            flush=True,
        )
    for line in failures:
        print(f"FAILED {line}")
    figures = {
        "runs": len(runs),
        "evs": args.evs,
        "years": args.years,
        "seeds": sorted({r[3] for r in runs}),
        "days": days,
        "failed_days": failed,
        "recoveries": sum(by_kind.values()),
        "recoveries_by_kind": dict(sorted(by_kind.items())),
        "recoveries_by_strategy": {s: by_strategy[s] for s in STRATEGIES},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(figures))
    return 1 if failed else 0


def _kept(summary: dict[str, dict[str, float]]) -> float:
    """Share of the perfect-foresight saving against uncontrolled that the forecast strategy keeps."""
    base = summary["uncontrolled"]["net_cost_eur"]
    best = base - summary["perfect_foresight"]["net_cost_eur"]
    return (base - summary["forecast"]["net_cost_eur"]) / best * 100 if best else 100.0


if __name__ == "__main__":
    sys.exit(main())
