"""What a restart costs: settle a year of daily periods on the embedded chain, then open it again.

    python scripts/bench_restart.py [--days 365] [--evs 20] [--start 2023-01-01] [--out DIR]

Each day is scheduled (a generated fleet on real NL prices) and settled on the persistent embedded chain
(propose, finalise, claims; escrow topped up by what is missing), all in one process. Then, in new
processes as a later command or a restarted server would: the chain is opened and its head read, and
`v2g audit reconcile` checks every period and balance against the chain. Days whose generated fleet
cannot meet the site limit are skipped and counted.

The last line is one JSON object: days, skipped_days, blocks, chain_file_mb, settle_s, open_s,
reconcile_s (a new process: open, catch the index up, reconcile every period, entry and balance),
rebuild_index_s (the audit index dropped and read again from the chain alone), reconcile_ok.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend.app.settle import UNIT, top_up_escrow
from backend.platform import Platform
from backend.settlement.job import SettlementJob
from backend.settlement.pipeline import local_owner_accounts
from backend.settlement.tariff import Tariff
from scheduler.datasets import load_prices
from scheduler.errors import SchedulerError
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.schedule import to_trades
from scheduler.solve import solve

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--evs", type=int, default=20)
    parser.add_argument("--start", default="2023-01-01")
    parser.add_argument("--out", type=Path, default=None, help="keep the chain and database here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        where = args.out or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        data_dir, db = where / ".v2g", f"sqlite:///{where / 'v2g.sqlite'}"
        prices = load_prices().eur_mwh
        first = dt.date.fromisoformat(args.start)
        started = time.perf_counter()
        settled = skipped = 0
        with Platform.open(
            db, "eth-tester", data_dir=data_dir, deployments_dir=where / "deployments"
        ) as platform:
            record = platform.ensure_deployment()
            actors = platform.actors()
            for n in range(args.days):
                day = (first + dt.timedelta(days=n)).isoformat()
                try:
                    problem = fleet_problem(day, prices, FleetConfig(n_evs=args.evs), seed=n)
                    schedule = solve(problem)
                except SchedulerError as exc:
                    skipped += 1
                    print(f"{day}: skipped ({type(exc).__name__})")
                    continue
                trades = to_trades(schedule)
                stamps = list(problem.horizon.timestamps.to_pydatetime())
                tariff = Tariff.from_market(
                    stamps, list(problem.prices.buy_eur_mwh), list(problem.prices.sell_eur_mwh), 100
                )
                addresses = platform.owner_addresses(
                    sorted({t.owner for t in trades}),
                    make_local=lambda ids: {o: str(a.address) for o, a in local_owner_accounts(ids).items()},
                )
                job = SettlementJob(platform.sessions, platform.chain, record, actors, travel_time=True)
                period_id = int(day.replace("-", ""))
                period = job.build(period_id, stamps[0], problem.horizon.end, trades, tariff)
                top_up_escrow(
                    platform,
                    actors,
                    dict.fromkeys(addresses.values(), 50 * UNIT),
                    max(period.total_credit * 2, UNIT),
                )
                job.run(period_id)
                platform.sync_events()  # as every settle does: the audit index follows the chain
                settled += 1
                if settled % 30 == 0:
                    print(f"{day}: {settled} periods settled in {time.perf_counter() - started:.0f} s")
            blocks = int(platform.chain.w3.eth.block_number)
        settle_s = time.perf_counter() - started
        chain_file = data_dir / "chains" / "eth-tester.sqlite"
        size_mb = sum(f.stat().st_size for f in chain_file.parent.glob("eth-tester.sqlite*")) / 2**20

        env = {**os.environ, "PYTHONPATH": str(REPO)}
        probe = (
            "import time, sys; from pathlib import Path; t = time.perf_counter(); "
            "from backend.chain.client import Chain; c = Chain.eth_tester(Path(sys.argv[1])); "
            "c.w3.eth.get_block('latest'); print(time.perf_counter() - t)"
        )
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", probe, str(chain_file)], check=True, env=env, capture_output=True
        )
        open_s = time.perf_counter() - t
        t = time.perf_counter()
        reconcile = subprocess.run(
            [sys.executable, "-m", "backend.cli", "audit", "reconcile", "--db", db],
            env={**env, "V2G_DATA_DIR": str(data_dir)},
            capture_output=True,
            text=True,
        )
        reconcile_s = time.perf_counter() - t
        print(reconcile.stdout.strip().splitlines()[-1] if reconcile.stdout.strip() else reconcile.stderr)
        rebuild = (
            "import sys, time; from pathlib import Path; from backend.platform import Platform; "
            "from backend.audit.indexer import EventIndexer; t = time.perf_counter(); "
            "p = Platform.connect(sys.argv[1], None, data_dir=Path(sys.argv[2]), write=False); "
            "r = p.record; EventIndexer(p.sessions, p.chain, r.settlement, r.block_number).rebuild(); "
            "print(time.perf_counter() - t)"
        )
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", rebuild, db, str(data_dir)], check=True, env=env, capture_output=True
        )
        rebuild_s = time.perf_counter() - t
        figures = {
            "days": settled,
            "skipped_days": skipped,
            "blocks": blocks,
            "chain_file_mb": round(size_mb, 1),
            "settle_s": round(settle_s, 1),
            "open_s": round(open_s, 2),
            "reconcile_s": round(reconcile_s, 2),
            "rebuild_index_s": round(rebuild_s, 2),
            "reconcile_ok": reconcile.returncode == 0,
        }
        print(f"{settled} periods ({skipped} days skipped), {blocks} blocks, chain file {size_mb:.1f} MB")
        print(
            f"a new process opens the chain and reads its head in {open_s:.2f} s (interpreter start included)"
        )
        print(f"`v2g audit reconcile` over the whole year in a new process: {reconcile_s:.2f} s")
        print(f"the audit index rebuilt from the chain alone: {rebuild_s:.2f} s")
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
