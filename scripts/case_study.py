"""The case study: uncontrolled, smart, V2G with perfect foresight and V2G with forecasts and rolling
re-planning, over days of real prices, in parallel on Dask.

    python scripts/case_study.py --evs 1000 --start 2023-01-01 --days 365 --prices FILE --out DIR
        [--v2g-share 0.3] [--replan-every 1] [--workers 2 | --scheduler tcp://host:8786]
        [--every N] [--scenarios S] [--forecaster validated|lear|recalibrated|ensemble] [--tariff FILE]

``--scenarios S`` adds the sample-average rolling plan (strategies saa and saa_interval) over S price
and arrival scenarios; ``--every N`` plans every N-th day only (a sample spread over the period).
``--forecaster`` defaults to ``validated``, the validated ensemble (minutes of forecasting per year).

Writes results.json, PNG plots and report.md to DIR (each finished day also to DIR/days, so a re-run
with the same DIR skips it); prints the table; the last line is one JSON object. Exits 2 on a bad
option (one named line), 1 when a day failed after every solver recovery (after all other days ran).
Also `v2g case-study ...` with the same options.
"""

from __future__ import annotations

import json
import sys

from scheduler.case_study import run_from_args
from scheduler.errors import SchedulerError


def main() -> int:
    try:
        run = run_from_args()
    except SchedulerError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for line in run.lines:
        print(line)
    print(json.dumps(run.figures))
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
