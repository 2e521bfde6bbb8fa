"""One day for N owners end to end: schedule, trades, deploy, escrow, propose, finalise, claims, audit.

    python scripts/bench_settlement.py --owners 1000 --chain eth-tester|anvil

Prints seconds per stage and gas per transaction kind, then times an owner's
statement over a year of daily periods (synthetic rows in a fresh SQLite file).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from backend.audit.statements import owner_statement
from backend.db.models import Deployment, IndexedEvent, Owner, Period, PeriodEntry, SettledTradeRow
from backend.db.session import session_factory
from backend.platform import Platform
from backend.settlement.service import settle_day
from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.solve import solve


def year_statement_seconds(owners: int = 100, days: int = 365, trades_per_day: int = 12) -> float:
    """Fill a fresh database with a year of daily periods, then time one owner's statement."""
    with tempfile.TemporaryDirectory() as tmp:
        sessions = session_factory(f"sqlite:///{Path(tmp) / 'year.sqlite'}")
        rng = random.Random(1)
        contract = "0x" + "11" * 20
        start = datetime(2023, 1, 1, tzinfo=UTC)
        with sessions.begin() as session:
            session.add(
                Deployment(
                    id=1,
                    chain_id=1,
                    token_address=contract,
                    settlement_address=contract,
                    block_number=1,
                    artifact_hashes={},
                )
            )
            session.execute(insert(Owner), [{"id": f"o{i}", "address": f"0x{i:040x}"} for i in range(owners)])
            periods, entries, trades, events = [], [], [], []
            for d in range(days):
                pid = 20230000 + d
                day = start + timedelta(days=d)
                periods.append(
                    {
                        "id": pid,
                        "deployment_id": 1,
                        "starts_at": day,
                        "ends_at": day + timedelta(days=1),
                        "status": "claimed",
                        "root": "0x" + "00" * 32,
                        "total_credit": 1,
                        "total_debit": 1,
                        "entry_count": owners,
                    }
                )
                for i in range(owners):
                    amount = rng.randint(-5_000_000, 5_000_000) or 1
                    entries.append(
                        {
                            "period_id": pid,
                            "entry_id": i,
                            "owner_id": f"o{i}",
                            "address": f"0x{i:040x}",
                            "amount": amount,
                            "proof": ["0x" + "ab" * 32] * 7,
                            "claimed": True,
                            "claim_tx": "0x" + "cd" * 32,
                        }
                    )
                    events.append(
                        {
                            "contract": contract,
                            "block_number": d * 10,
                            "log_index": i,
                            "tx_hash": "0x" + "cd" * 32,
                            "name": "EntryClaimed",
                            "period_id": pid,
                            "account": f"0x{i:040x}",
                            "args": {
                                "periodId": str(pid),
                                "entryId": str(i),
                                "owner": f"0x{i:040x}",
                                "amount": str(amount),
                                "paid": str(abs(amount)),
                                "debtAdded": "0",
                            },
                        }
                    )
                    for k in range(trades_per_day):
                        trades.append(
                            {
                                "period_id": pid,
                                "entry_id": i,
                                "owner_id": f"o{i}",
                                "vehicle_id": f"v{i}",
                                "session_id": f"s{i}-{d}",
                                "interval_start": day + timedelta(minutes=15 * k),
                                "direction": "charge" if k % 3 else "discharge",
                                "energy_wh": 2750,
                                "p2p_wh": 0,
                                "grid_wh": 2750,
                                "p2p_price": 1,
                                "grid_price": 1,
                                "value": 1,
                                "fee": 0,
                                "amount": 1,
                            }
                        )
            session.execute(insert(Period), periods)
            session.execute(insert(PeriodEntry), entries)
            session.execute(insert(SettledTradeRow), trades)
            session.execute(insert(IndexedEvent), events)
        with sessions() as session:
            started = time.perf_counter()
            statement = owner_statement(session, contract, "o7")
            elapsed = time.perf_counter() - started
        assert len(statement.lines) == days
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--owners", type=int, default=1000)
    parser.add_argument("--chain", default="eth-tester")
    parser.add_argument("--date", default="2023-07-02")
    parser.add_argument("--v2g-share", type=float, default=0.3)
    args = parser.parse_args()

    started = time.perf_counter()
    problem = fleet_problem(
        args.date, load_prices().eur_mwh, FleetConfig(n_evs=args.owners, v2g_share=args.v2g_share), seed=1
    )
    schedule = solve(problem)
    schedule_s = time.perf_counter() - started
    spec = "eth-tester:memory" if args.chain == "eth-tester" else args.chain
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        with Platform.open(database, spec, data_dir=Path(tmp), deployments_dir=Path(tmp)) as platform:
            result = settle_day(problem, schedule, platform, fee_bps=100)
    total = time.perf_counter() - started
    statement_s = year_statement_seconds()
    seconds = {"schedule": round(schedule_s, 3), **result.seconds}
    for stage, value in seconds.items():
        print(f"{stage:10s} {value:8.2f} s")
    for kind, gas in result.gas.items():
        print(f"gas {kind:12s} {gas:>12,}")
    print(
        f"{result.entries} entries ({result.owners_paid} paid, {result.owners_debited} debited), "
        f"status {result.status}, reconciliation "
        f"{'OK' if result.reconciliation.ok else result.reconciliation.mismatches}"
    )
    print(f"owner statement over 365 daily periods: {statement_s * 1000:.1f} ms")
    print(
        json.dumps(
            {
                "owners": args.owners,
                "chain": args.chain,
                "date": args.date,
                "entries": result.entries,
                "seconds": seconds,
                "total_s": round(total, 2),
                "settle_s_excluding_schedule": round(total - schedule_s, 2),
                "gas": result.gas,
                "reconciliation_ok": result.reconciliation.ok,
                "statement_year_s": round(statement_s, 4),
                "status": str(result.status),
            }
        )
    )


if __name__ == "__main__":
    main()
