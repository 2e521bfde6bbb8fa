"""Settlement benchmarks; the last line printed is one JSON object.

One day for N owners end to end: schedule, trades, deploy, escrow, propose, finalise, claims, audit::

    python scripts/bench_settlement.py --owners 1000 --chain eth-tester|anvil

prints seconds per stage and gas per transaction kind, then times an owner's
statement over a year of daily periods (synthetic rows in a fresh SQLite file).

A period at portfolio size, built and stored only (no schedule, no claims)::

    python scripts/bench_settlement.py --owners 1000000 --build-only [--db URL] [--propose]

draws one priced trade per owner (``--trades-per-owner``; synthetic energies and
prices, ``--seed``), then times what ``SettlementJob.build`` does: the owners'
addresses read, the trades priced, netted into one entry per owner, the Merkle
tree (``build_s``, of which ``tree_s``), and the period stored with every entry's
proof and every settled trade (``store_s``: SQLite executemany into a fresh file,
or COPY into the empty PostgreSQL database given by ``--db``), then an owner's
statement and proof for random owners. ``--propose`` deploys on an embedded
chain first and proposes the root (one transaction, whatever the size).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eth_utils.address import to_checksum_address
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from backend.app.settle import SettlePolicy, settle_simulated
from backend.audit.statements import owner_statement
from backend.db.models import Deployment, IndexedEvent, Owner, Period, PeriodEntry, SettledTradeRow
from backend.db.session import check_url, session_factory
from backend.platform import Platform
from backend.settlement import merkle
from backend.settlement.job import SettlementJob, owner_addresses, store_period
from backend.settlement.merkle import leaf_hash, verify
from backend.settlement.period import LEAF_TYPES, PeriodBuild, gc_paused, net_entries, period_tree
from backend.settlement.tariff import Tariff, settle_trades
from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.schedule import Direction, Trade
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


BENCH_PERIOD = 20230702
#: Random owners whose statement and proof are timed.
SAMPLES = 50


def checksummed(raw: bytes) -> str:
    """EIP-55 (``to_checksum_address``, with the fast keccak: a million addresses in seconds)."""
    digits = raw.hex()
    nibbles = merkle.keccak256(digits.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if n >= "8" else c for c, n in zip(digits, nibbles, strict=False))


def synthetic_day(
    owners: int, trades_per_owner: int, seed: int
) -> tuple[dict[str, str], list[Trade], Tariff, datetime, datetime]:
    """Owners with random checksummed addresses, each with ``trades_per_owner`` trades (random interval,
    direction and energy) on one day of 96 intervals with random prices; all from ``seed``."""
    rng = random.Random(seed)
    start = datetime(2023, 7, 2, tzinfo=UTC)
    stamps = [start + timedelta(minutes=15 * k) for k in range(96)]
    tariff = Tariff(
        {t: rng.randint(-20_000, 300_000) for t in stamps},
        {t: rng.randint(-30_000, 250_000) for t in stamps},
        fee_bps=100,
    )
    addresses = {f"owner-{i:07d}": checksummed(rng.randbytes(20)) for i in range(owners)}
    charge, discharge = Direction.CHARGE, Direction.DISCHARGE
    trades = [
        Trade(
            owner,
            f"{owner}-car",
            f"{owner}-s{k}",
            stamps[rng.randrange(96)],
            charge if rng.random() < 0.6 else discharge,
            rng.randint(100, 11_000),
        )
        for owner in addresses
        for k in range(trades_per_owner)
    ]
    return addresses, trades, tariff, start, start + timedelta(days=1)


def register(sessions: sessionmaker[Session], addresses: dict[str, str], contract: str, chain_id: int) -> int:
    """The deployment row and every owner (bulk), in a database that must have neither yet."""
    with sessions.begin() as session:
        if session.scalar(select(func.count()).select_from(Owner)):
            raise SystemExit("the database already has owners: --build-only needs an empty database")
        deployment = Deployment(
            chain_id=chain_id,
            token_address=contract,
            settlement_address=contract,
            block_number=0,
            artifact_hashes={},
        )
        session.add(deployment)
        session.flush()
        rows = [{"id": o, "address": a} for o, a in addresses.items()]
        for i in range(0, len(rows), 50_000):
            session.execute(insert(Owner), rows[i : i + 50_000])
        return deployment.id


def build_only(args: argparse.Namespace) -> None:
    seconds: dict[str, float] = {}

    def timed(stage: str, started: float) -> float:
        seconds[stage] = round(time.perf_counter() - started, 3)
        return time.perf_counter()

    t = time.perf_counter()
    addresses, trades, tariff, start, end = synthetic_day(args.owners, args.trades_per_owner, args.seed)
    assert all(to_checksum_address(a) == a for a in list(addresses.values())[:100])
    t = timed("input", t)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = args.db or f"sqlite:///{tmp / 'bench.sqlite'}"
        check_url(url)
        sessions = session_factory(url)
        stack.callback(sessions.kw["bind"].dispose)
        chain_id, contract, job = 131277322940537, str(to_checksum_address("0x" + "5e" * 20)), None
        if args.propose:
            from backend.chain.client import Chain
            from backend.chain.deploy import Actors, deploy
            from backend.settlement.pipeline import fund_escrow

            chain = Chain.eth_tester()
            stack.callback(chain.close)
            record, actors = deploy(chain, liveness_s=3600), Actors.of(chain)
            chain_id, contract = record.chain_id, record.settlement
            job = SettlementJob(sessions, chain, record, actors, travel_time=True)
        deployment_id = register(sessions, addresses, contract, chain_id)
        t = timed("setup", t)

        # what SettlementJob.build does, stage by stage
        with gc_paused():
            with sessions() as session:
                stored = owner_addresses(session)
            t = timed("owners_read", t)
            settled = settle_trades(trades, tariff)
            t = timed("price", t)
            entries = net_entries(settled, stored)
            t = timed("net", t)
            tree = period_tree(BENCH_PERIOD, entries, chain_id=chain_id, contract=contract)
            t = timed("tree", t)
            built = PeriodBuild(BENCH_PERIOD, chain_id, contract, tuple(entries), tree)
            with sessions.begin() as session:
                store_period(session, built, deployment_id=deployment_id, starts_at=start, ends_at=end)
            t = timed("store", t)
        del settled, entries
        if job is not None:  # the job's own first two steps (its run() would go on to a million claims)
            fund_escrow(job.chain, job.record, job.actors, {}, aggregator_float=built.total_credit)
            t = time.perf_counter()
            job._sign(BENCH_PERIOD)
            job._propose(BENCH_PERIOD)
            t = timed("propose", t)
            assert job.settlement.period_state(BENCH_PERIOD).name == "PROPOSED"

        # the build's millions of objects out of the collector's way: a first full collection over them
        # (seconds) would otherwise land in whichever statement happens to trigger it
        gc.freeze()
        rng = random.Random(args.seed + 1)
        sample = rng.sample(list(addresses), SAMPLES)
        statement_ms, proof_ms, proofs_ok, found = [], [], 0, 0
        with sessions() as session:
            root = bytes.fromhex(session.get_one(Period, BENCH_PERIOD).root[2:])
        for owner in sample:
            with sessions() as session:
                t = time.perf_counter()
                statement = owner_statement(session, contract, owner)
                statement_ms.append((time.perf_counter() - t) * 1000)
            with sessions() as session:
                t = time.perf_counter()
                entry = session.scalars(
                    select(PeriodEntry).where(
                        PeriodEntry.period_id == BENCH_PERIOD, PeriodEntry.owner_id == owner
                    )
                ).one_or_none()
                if entry is not None:
                    found += 1
                    leaf = leaf_hash(
                        LEAF_TYPES,
                        (chain_id, contract, BENCH_PERIOD, entry.entry_id, entry.address, entry.amount),
                    )
                    proofs_ok += verify(root, leaf, [bytes.fromhex(p[2:]) for p in entry.proof])
                proof_ms.append((time.perf_counter() - t) * 1000)
            assert len(statement.lines) == (entry is not None)
        t = time.perf_counter()
        memory_proof = built.proof(len(built.entries) // 2)
        proof_memory_us = (time.perf_counter() - t) * 1e6
        assert verify(built.root, built.tree.leaf(len(built.entries) // 2), memory_proof)
        db_mb = None
        if args.db is None:
            db_mb = round(sum(f.stat().st_size for f in tmp.glob("bench.sqlite*")) / 1e6, 1)
        with sessions() as session:
            counts = (
                session.scalar(select(func.count()).select_from(PeriodEntry)),
                session.scalar(select(func.count()).select_from(SettledTradeRow)),
            )

    build_s = sum(seconds[k] for k in ("owners_read", "price", "net", "tree"))
    result = {
        "owners": args.owners,
        "entries": len(built.entries),
        "trades": len(trades),
        "db": "postgresql" if args.db and args.db.startswith("postgresql") else "sqlite",
        "build_s": round(build_s, 2),
        "store_s": seconds["store"],
        "tree_s": seconds["tree"],
        "build_store_s": round(build_s + seconds["store"], 2),
        "seconds": seconds,
        "statement_ms": round(statistics.median(statement_ms), 2),
        "statement_max_ms": round(max(statement_ms), 2),
        "proof_ms": round(statistics.median(proof_ms), 2),
        "proof_max_ms": round(max(proof_ms), 2),
        "proof_in_memory_us": round(proof_memory_us, 1),
        "proofs_verified": f"{proofs_ok}/{found}",
        "stored_rows": {"period_entries": counts[0], "settled_trades": counts[1]},
        "db_mb": db_mb,
        "root": "0x" + built.root.hex(),
        "keccak": merkle.hasher_name(),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    for stage, value in seconds.items():
        print(f"{stage:12s} {value:8.2f} s")
    print(
        f"{result['entries']:,} entries, {result['trades']:,} trades: build {result['build_s']} s "
        f"(tree {result['tree_s']} s), store {result['store_s']} s into {result['db']}"
        + (f" ({db_mb} MB)" if db_mb else "")
    )
    print(
        f"owner statement {result['statement_ms']} ms (median of {SAMPLES} owners, "
        f"max {result['statement_max_ms']}), proof lookup + verify {result['proof_ms']} ms "
        f"(max {result['proof_max_ms']}), peak RSS {result['rss_mb']} MB"
    )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--owners", type=int, default=1000)
    parser.add_argument("--chain", default="eth-tester")
    parser.add_argument("--date", default="2023-07-02")
    parser.add_argument("--v2g-share", type=float, default=0.3)
    parser.add_argument("--build-only", action="store_true", help="build and store one period only")
    parser.add_argument("--db", help="--build-only: an empty database URL instead of a fresh SQLite file")
    parser.add_argument("--trades-per-owner", type=int, default=1, help="--build-only")
    parser.add_argument("--seed", type=int, default=1, help="--build-only")
    parser.add_argument("--propose", action="store_true", help="--build-only: propose the root on a chain")
    args = parser.parse_args()
    if args.build_only:
        build_only(args)
        return

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
            result = settle_simulated(problem, schedule, platform, SettlePolicy(fee_bps=100))
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
