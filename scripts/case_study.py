"""The case study: uncontrolled, smart, V2G with perfect foresight and V2G with forecasts and rolling
re-planning, over days of real prices, in parallel on Dask.

    python scripts/case_study.py --evs 1000 --start 2023-01-01 --days 365 --prices FILE --out DIR
        [--v2g-share 0.3] [--replan-every 1] [--workers 2 | --scheduler tcp://host:8786]

Writes results.json, PNG plots and report.md to DIR; prints the table; the last line is one JSON object.
Also `v2g case-study ...` with the same options.
"""

from __future__ import annotations

import json

from scheduler.case_study import run_from_args


def main() -> None:
    run = run_from_args()
    for line in run.lines:
        print(line)
    print(json.dumps(run.figures))


if __name__ == "__main__":
    main()
