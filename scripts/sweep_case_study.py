"""Robustness sweep of the case study: every day of several years, under both price-knowledge modes and
both degradation bases, with several fleet seeds; counts failed days and solver recoveries (each run
sweeps one knowledge mode, so the case study's own interval stress test is off).

    python scripts/sweep_case_study.py [--years 2019 2020 2021 2022 2023] [--seeds 0 1 2 3] [--evs 300]
        [--all-seeds] [--out out/sweep] [--workers 2]
    python scripts/sweep_case_study.py --claims [--years 2019 2022 2023] [--tariff-years 2023] [--evs 200]
        [--seeds 0 1 2] [--days N] [--every N] [--out out/claims] [--workers 1]

Each configuration (year × knowledge × basis) runs with one seed, the seeds taken in turn, so every seed
meets every mode; ``--all-seeds`` runs every seed on every configuration instead. Each run is an ordinary
case study in its own ``--out`` subdirectory, so an interrupted sweep resumes where it stopped. Prints
one line per run; the last line is one JSON object: runs, days, failed_days, recoveries (by kind and by
strategy), seconds. Exits 1 when any day failed.

With ``--claims`` it runs instead the grid that answers the seed's claims (a 20 % cut in operating cost,
"159 % more V2G revenue"): whole years (``--years``, default 2019 2022 2023; ``--every N`` for a sample
of every N-th day) under each wear basis and V2G share 30 % and 100 %, and for the years of
``--tariff-years`` (default 2023) also with the Dutch tariff example, each with every seed of ``--seeds``
(default 0 1 2: new fleets each). The forecast strategy runs on the market's calendar and under the
interval stress test, which is what measures forecasting skill (on the market's calendar the forecast
plan equals perfect foresight's). Each configuration and seed is an ordinary case study in
``--out/<year>-<basis>-v2g<share>[-nl]-seed<seed>``: a run of some years resumes or reuses the others'
finished days, so the grid can be run a piece at a time and tabulated at the end. It prints a markdown
table of each configuration's change in net cost against uncontrolled charging (smart; V2G with
perfect foresight; V2G with forecasts on the market's calendar and under the stress test; the energy
cost alone, import − export, with perfect foresight) and V2G revenue, each the mean over the seeds with
its range, then the ratios "159 % more V2G revenue" could stand for; the last line is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from scheduler.case_study import STRATEGIES, run_from_args
from scheduler.errors import SchedulerError


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--years", type=int, nargs="+", default=[2019, 2020, 2021, 2022, 2023])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="fleet seeds (default: 0 1 2 3; --claims: 0 1 2)"
    )
    parser.add_argument("--all-seeds", action="store_true", help="every seed on every configuration")
    parser.add_argument("--evs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("out/sweep"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--claims", action="store_true", help="run the grid answering the seed's claims")
    parser.add_argument(
        "--days", type=int, default=None, help="--claims: days per year (default: the whole year)"
    )
    parser.add_argument("--every", type=int, default=1, help="--claims: plan every N-th day only")
    parser.add_argument(
        "--tariff-years", type=int, nargs="*", default=[2023], help="--claims: years also run with the tariff"
    )
    args = parser.parse_args()
    if args.claims:
        return claims(args)
    if args.seeds is None:
        args.seeds = [0, 1, 2, 3]

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


#: The claims grid: (year is added per run) wear basis, V2G share, with the tariff example (last year only).
CLAIM_BASES = ("throughput", "discharge")
CLAIM_SHARES = (0.3, 1.0)
NL_TARIFF = "scheduler/data/tariffs/nl_example.toml"
#: The strategies whose change in net cost the claims table shows: the forecast strategy on the market's
#: calendar (where it matches perfect foresight) and under the interval stress test (its forecasting skill).
CLAIM_STRATEGIES = ("smart", "perfect_foresight", "forecast", "forecast_interval")


def claims(args: argparse.Namespace) -> int:
    """Run the claims grid (each configuration and seed an ordinary, resumable case study) and print its
    tables: each figure as the mean over the seeds and its range."""
    years = args.years if args.years != [2019, 2020, 2021, 2022, 2023] else [2019, 2022, 2023]
    seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    grid = [
        (year, basis, share, tariff)
        for year in years
        for tariff in ((False, True) if year in args.tariff_years else (False,))
        for basis in CLAIM_BASES
        for share in CLAIM_SHARES
    ]
    started = time.perf_counter()
    rows = []
    failed = 0
    for (year, basis, share, tariff), seed in itertools.product(grid, seeds):
        n_days = args.days or (366 if year % 4 == 0 else 365)
        name = f"{year}-{basis}-v2g{int(share * 100)}{'-nl' if tariff else ''}-seed{seed}"
        out = args.out / name
        argv = [
            "--evs", str(args.evs), "--start", f"{year}-01-01", "--days", str(n_days),
            "--every", str(args.every), "--v2g-share", str(share), "--degradation-basis", basis,
            "--seed", str(seed), "--workers", str(args.workers), "--out", str(out),
            *(["--tariff", NL_TARIFF] if tariff else []),
        ]  # fmt: skip
        t = time.perf_counter()
        try:
            run = run_from_args(argv)
        except SchedulerError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        failed += len(run.failed)
        summary = json.loads((out / "results.json").read_text())["summary"]
        row = {
            "year": year, "basis": basis, "v2g_share": share, "tariff": tariff, "seed": seed, "out": str(out),
            "days": run.figures["meta"]["days_finished"],  # type: ignore[index]
            **{f"{s}_pct": summary[s]["change_vs_uncontrolled_pct"] for s in CLAIM_STRATEGIES},
            "energy_only_pct": _energy_change(summary, "perfect_foresight"),
            **{
                f"{s}_net_eur": summary[s]["net_cost_eur"]
                for s in ("uncontrolled", "smart", "perfect_foresight")
            },
            "v2g_revenue_pf_eur": summary["perfect_foresight"]["v2g_revenue_eur"],
            "v2g_revenue_forecast_eur": summary["forecast"]["v2g_revenue_eur"],
            "skill_kept_pct": summary["forecast_interval"]["saving_kept_pct"],
        }  # fmt: skip
        rows.append(row)
        print(
            f"# {name}: {time.perf_counter() - t:.0f} s ({run.skipped} days from an earlier run)", flush=True
        )
    print(
        f"\nEach cell: the mean over seeds {', '.join(map(str, seeds))} and, in brackets, their range.\n\n"
        "| year | wear on | V2G share | tariff | smart | V2G, perfect foresight | V2G, forecasts (market "
        "calendar) | V2G, forecasts (interval stress test) | V2G PF, energy cost only | V2G revenue PF € | "
        "20 % cut? |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for year, basis, share, tariff in grid:
        mine = [
            r
            for r in rows
            if (r["year"], r["basis"], r["v2g_share"], r["tariff"]) == (year, basis, share, tariff)
        ]

        def cell(key: str, unit: str = " %", signed: bool = True, rows_: list[dict[str, Any]] = mine) -> str:
            values = [r[key] for r in rows_]
            fmt = "{:+.1f}" if signed else "{:,.0f}"
            mean = fmt.format(statistics.fmean(values)) + unit
            if len(values) == 1:
                return mean
            return f"{mean} [{fmt.format(min(values))} … {fmt.format(max(values))}]"

        reached = [
            n
            for n, k in (
                ("PF", "perfect_foresight_pct"),
                ("forecast", "forecast_pct"),
                ("stress", "forecast_interval_pct"),
            )
            if all(r[k] <= -20 for r in mine)
        ]
        print(
            f"| {year} | {basis} | {share:.0%} | {'NL example' if tariff else 'none'} | "
            f"{cell('smart_pct')} | {cell('perfect_foresight_pct')} | {cell('forecast_pct')} | "
            f"{cell('forecast_interval_pct')} | {cell('energy_only_pct')} | "
            f"{cell('v2g_revenue_pf_eur', '', signed=False)} | {', '.join(reached) or 'no'} |"
        )
    readings = _readings(rows)
    print('\nWhat "159 % more V2G revenue" could compare (V2G revenue with perfect foresight, same seed):\n')
    for text, low, high in readings:
        print(f"- {text}: {low:+.0f} % to {high:+.0f} %" if low != high else f"- {text}: {low:+.0f} %")
    print(
        json.dumps(
            {
                "evs": args.evs,
                "every": args.every,
                "seeds": seeds,
                "rows": rows,
                "readings": [{"reading": t, "low_pct": lo, "high_pct": hi} for t, lo, hi in readings],
                "failed_days": failed,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 1 if failed else 0


def _energy_change(summary: dict[str, dict[str, float]], strategy: str) -> float:
    """Change of the energy cost alone, import cost − export revenue (all-in with a tariff; no wear, no
    shortfall, no capacity charge), against uncontrolled charging, %."""
    energy = {s: summary[s]["import_cost_eur"] - summary[s]["export_revenue_eur"] for s in summary}
    base = energy["uncontrolled"]
    return (energy[strategy] - base) / abs(base) * 100 if base else 0.0


def _readings(rows: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """Ratios of V2G revenue (perfect foresight) across the grid, and V2G's extra saving over smart
    charging, each as a range over the configurations and seeds it can be taken in (pairs share a seed:
    the same fleets)."""
    key = {(r["year"], r["basis"], r["v2g_share"], r["tariff"], r["seed"]): r for r in rows}

    def pct(a: float, b: float) -> float:
        return (a / b - 1) * 100 if b else float("inf")

    pairs: dict[str, list[float]] = {
        "V2G share 100 % against 30 % (same year, wear, tariff)": [],
        "wear on discharge only against on all throughput (same year, share, tariff)": [],
        "perfect foresight against forecasts (same configuration)": [],
        "with the NL tariff against without (same year, wear, share)": [],
        "V2G's net saving beyond smart charging, against smart charging's own saving": [],
    }
    years = sorted({r["year"] for r in rows})
    for other in years[:-1]:
        pairs[f"price year {other} against {years[-1]} (same wear, share, no tariff)"] = []
    for (year, basis, share, tariff, seed), r in key.items():
        v = r["v2g_revenue_pf_eur"]
        if share == 0.3 and (year, basis, 1.0, tariff, seed) in key:
            pairs["V2G share 100 % against 30 % (same year, wear, tariff)"].append(
                pct(key[(year, basis, 1.0, tariff, seed)]["v2g_revenue_pf_eur"], v)
            )
        if basis == "throughput" and (year, "discharge", share, tariff, seed) in key:
            pairs["wear on discharge only against on all throughput (same year, share, tariff)"].append(
                pct(key[(year, "discharge", share, tariff, seed)]["v2g_revenue_pf_eur"], v)
            )
        pairs["perfect foresight against forecasts (same configuration)"].append(
            pct(v, r["v2g_revenue_forecast_eur"])
        )
        if tariff:
            pairs["with the NL tariff against without (same year, wear, share)"].append(
                pct(v, key[(year, basis, share, False, seed)]["v2g_revenue_pf_eur"])
            )
        elif year != years[-1] and (years[-1], basis, share, False, seed) in key:  # against the latest year
            pairs[f"price year {year} against {years[-1]} (same wear, share, no tariff)"].append(
                pct(v, key[(years[-1], basis, share, False, seed)]["v2g_revenue_pf_eur"])
            )
        smart_saving = r["uncontrolled_net_eur"] - r["smart_net_eur"]
        pairs["V2G's net saving beyond smart charging, against smart charging's own saving"].append(
            (r["smart_net_eur"] - r["perfect_foresight_net_eur"]) / smart_saving * 100
            if smart_saving
            else 0.0
        )
    return [(text, min(v), max(v)) for text, v in pairs.items() if v]


def _kept(summary: dict[str, dict[str, float]]) -> float:
    """Share of the perfect-foresight saving against uncontrolled that the forecast strategy keeps."""
    base = summary["uncontrolled"]["net_cost_eur"]
    best = base - summary["perfect_foresight"]["net_cost_eur"]
    return (base - summary["forecast"]["net_cost_eur"]) / best * 100 if best else 100.0


if __name__ == "__main__":
    sys.exit(main())
