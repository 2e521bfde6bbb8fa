"""A period stored in bulk (SQLite ``executemany``, PostgreSQL ``COPY``, Core ``executemany`` otherwise)
holds exactly the rows the ORM wrote for it before, and its proofs verify against its root."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from sqlalchemy import delete, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from backend.audit.statements import owner_statement
from backend.db.models import Deployment, Owner, Period, PeriodEntry, PeriodStatus, SettledTradeRow
from backend.db.session import make_engine, migrate, session_factory
from backend.settlement import job
from backend.settlement.job import store_period
from backend.settlement.merkle import leaf_hash, verify
from backend.settlement.period import LEAF_TYPES, PeriodBuild, build_period
from backend.settlement.tariff import Tariff, settle_trades
from scheduler.schedule import Direction, Trade
from tests.backend.test_api_sessions import postgres_url  # noqa: F401 - the throwaway PostgreSQL fixture

CHAIN_ID = 131277322940537
CONTRACT = to_checksum_address("0x" + "5e" * 20)
PERIOD = 20230702
START = datetime(2023, 7, 2, tzinfo=UTC)
END = START + timedelta(days=1)
#: Owner ids a COPY line must escape (tab, backslash, newline, carriage return) or keep as they are.
AWKWARD_OWNERS = ("tab\there", "back\\slash", "new\nline", "carriage\rreturn", "ünïcode", "quote\"'")


@dataclass(frozen=True)
class Synthetic:
    built: PeriodBuild
    addresses: dict[str, str]
    trades: int


def synthetic_period(owners: int, seed: int = 1) -> Synthetic:
    """``owners`` owners (a few with awkward ids) with 1 to 3 priced trades each on one day."""
    rng = random.Random(seed)
    stamps = [START + timedelta(minutes=15 * k) for k in range(96)]
    tariff = Tariff(
        {t: rng.randint(-20_000, 300_000) for t in stamps},
        {t: rng.randint(-30_000, 250_000) for t in stamps},
        fee_bps=100,
    )
    ids = [f"owner-{i}" for i in range(owners - len(AWKWARD_OWNERS))] + list(AWKWARD_OWNERS)
    addresses = {o: str(to_checksum_address("0x" + rng.randbytes(20).hex())) for o in ids}
    trades = [
        Trade(
            owner,
            f"{owner}-car",
            f"{owner}-s{k}",
            stamps[rng.randrange(96)],
            rng.choice([Direction.CHARGE, Direction.DISCHARGE]),
            rng.randint(1, 11_000),
        )
        for owner in ids
        for k in range(rng.randint(1, 3))
    ]
    built = build_period(
        PERIOD, settle_trades(trades, tariff), addresses, chain_id=CHAIN_ID, contract=CONTRACT
    )
    return Synthetic(built, addresses, sum(len(e.trades) for e in built.entries))


@pytest.fixture(scope="module")
def period() -> Synthetic:
    return synthetic_period(2_000)


def prepare(sessions: sessionmaker[Session], addresses: dict[str, str]) -> None:
    with sessions.begin() as session:
        session.add(
            Deployment(
                id=1,
                chain_id=CHAIN_ID,
                token_address=CONTRACT,
                settlement_address=CONTRACT,
                block_number=1,
                artifact_hashes={},
            )
        )
        session.execute(insert(Owner), [{"id": o, "address": a} for o, a in addresses.items()])


def store_with_orm(session: Session, built: PeriodBuild) -> None:
    """The settlement job's store before the bulk paths: one ORM object per row."""
    session.add(
        Period(
            id=built.period_id,
            deployment_id=1,
            starts_at=START,
            ends_at=END,
            status=PeriodStatus.BUILT,
            root="0x" + built.root.hex(),
            total_credit=built.total_credit,
            total_debit=built.total_debit,
            entry_count=len(built.entries),
        )
    )
    session.flush()
    for entry in built.entries:
        session.add(
            PeriodEntry(
                period_id=built.period_id,
                entry_id=entry.entry_id,
                owner_id=entry.owner_id,
                address=entry.address,
                amount=entry.amount,
                proof=["0x" + p.hex() for p in built.proof(entry.entry_id)],
            )
        )
        for st in entry.trades:
            session.add(
                SettledTradeRow(
                    period_id=built.period_id,
                    entry_id=entry.entry_id,
                    owner_id=entry.owner_id,
                    vehicle_id=st.trade.vehicle_id,
                    session_id=st.trade.session_id,
                    interval_start=st.trade.interval_start,
                    direction=st.trade.direction.value,
                    energy_wh=st.trade.energy_wh,
                    p2p_wh=st.p2p_wh,
                    grid_wh=st.grid_wh,
                    p2p_price=st.p2p_price,
                    grid_price=st.grid_price,
                    value=st.value,
                    fee=st.fee,
                    amount=st.amount,
                )
            )


def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored value with its SQLite storage class, read by sqlite3 itself."""
    with sqlite3.connect(path) as db:
        tables = {}
        for table in ("periods", "period_entries", "settled_trades"):
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            if table == "periods":
                columns.remove("updated_at")  # the time of the write
            values = ", ".join(f"{c}, typeof({c})" for c in columns)
            tables[table] = db.execute(f"SELECT {values} FROM {table} ORDER BY rowid").fetchall()
    return tables


@pytest.mark.parametrize("writer", ["sqlite", "core"])
def test_bulk_rows_equal_the_orm_rows_on_sqlite(period: Synthetic, tmp_path: Path, writer: str) -> None:
    stored = {}
    for name in ("orm", writer):
        path = tmp_path / f"{name}.sqlite"
        sessions = session_factory(f"sqlite:///{path}")
        prepare(sessions, period.addresses)
        with sessions.begin() as session:
            if name == "orm":
                store_with_orm(session, period.built)
            elif name == "sqlite":
                store_period(session, period.built, deployment_id=1, starts_at=START, ends_at=END)
            else:  # the path for a driver without a bulk one
                session.add(
                    Period(
                        id=PERIOD,
                        deployment_id=1,
                        starts_at=START,
                        ends_at=END,
                        root="0x" + period.built.root.hex(),
                        total_credit=period.built.total_credit,
                        total_debit=period.built.total_debit,
                        entry_count=len(period.built.entries),
                    )
                )
                session.flush()
                job._store_core(session, period.built)
        sessions.kw["bind"].dispose()
        stored[name] = sqlite_rows(path)
    assert len(stored["orm"]["period_entries"]) == len(period.built.entries) > 1_900
    assert len(stored["orm"]["settled_trades"]) == period.trades
    assert stored[writer] == stored["orm"]


def test_a_stored_proof_verifies_and_a_tampered_entry_does_not(period: Synthetic, tmp_path: Path) -> None:
    sessions = session_factory(f"sqlite:///{tmp_path / 'v2g.sqlite'}")
    prepare(sessions, period.addresses)
    with sessions.begin() as session:
        store_period(session, period.built, deployment_id=1, starts_at=START, ends_at=END)
    rng = random.Random(9)
    with sessions() as session:
        root = bytes.fromhex(session.get_one(Period, PERIOD).root[2:])
        assert root == period.built.root
        for owner in [*rng.sample(sorted(period.addresses), 20), *AWKWARD_OWNERS]:
            entry = session.scalars(select(PeriodEntry).where(PeriodEntry.owner_id == owner)).one_or_none()
            if entry is None:
                continue  # nets to zero
            proof = [bytes.fromhex(p[2:]) for p in entry.proof]
            row = (CHAIN_ID, CONTRACT, PERIOD, entry.entry_id, entry.address, entry.amount)
            assert verify(root, leaf_hash(LEAF_TYPES, row), proof)
            assert not verify(root, leaf_hash(LEAF_TYPES, (*row[:5], entry.amount + 1)), proof)
            assert not verify(root, leaf_hash(LEAF_TYPES, (*row[:3], entry.entry_id + 1, *row[4:])), proof)
            statement = owner_statement(session, CONTRACT, owner)
            (line,) = statement.lines
            assert (line.entry_id, line.amount, list(line.proof)) == (
                entry.entry_id,
                entry.amount,
                entry.proof,
            )
            assert line.fees == sum(st.fee for st in period.built.entries[entry.entry_id].trades)


def test_store_refuses_a_period_stored_twice(period: Synthetic, tmp_path: Path) -> None:
    """The transaction fails whole: no second period, no duplicated entry."""
    sessions = session_factory(f"sqlite:///{tmp_path / 'v2g.sqlite'}")
    prepare(sessions, period.addresses)
    with sessions.begin() as session:
        store_period(session, period.built, deployment_id=1, starts_at=START, ends_at=END)
    with pytest.raises(Exception, match="UNIQUE"), sessions.begin() as session:
        store_period(session, period.built, deployment_id=1, starts_at=START, ends_at=END)
    with sessions() as session:
        count = session.scalar(text("SELECT count(*) FROM period_entries"))
    assert count == len(period.built.entries)


def postgres_rows(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """The rows as PostgreSQL holds them (JSON as its stored text; settled trades without their serial)."""
    entries = "period_id, entry_id, owner_id, address, amount, proof::text, claimed, claim_tx"
    trades = ", ".join(job.TRADE_COLUMNS)
    return {
        "period_entries": [
            tuple(r) for r in session.execute(text(f"SELECT {entries} FROM period_entries ORDER BY 1, 2"))
        ],
        "settled_trades": [
            tuple(r) for r in session.execute(text(f"SELECT {trades} FROM settled_trades ORDER BY id"))
        ],
    }


def test_copy_rows_equal_the_orm_rows_on_postgresql(period: Synthetic, postgres_url: str) -> None:  # noqa: F811
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    try:
        prepare(sessions, period.addresses)
        with sessions.begin() as session:
            store_with_orm(session, period.built)
        with sessions() as session:
            orm = postgres_rows(session)
        with sessions.begin() as session:
            for table in (SettledTradeRow, PeriodEntry):
                session.execute(delete(table))
            session.execute(delete(Period))
        with sessions.begin() as session:
            store_period(session, period.built, deployment_id=1, starts_at=START, ends_at=END)
        with sessions() as session:
            copied = postgres_rows(session)
            awkward = session.scalars(
                select(PeriodEntry.owner_id).where(PeriodEntry.owner_id.in_(AWKWARD_OWNERS))
            )
            assert set(awkward) <= set(AWKWARD_OWNERS)
        assert len(copied["period_entries"]) == len(period.built.entries)
        assert len(copied["settled_trades"]) == period.trades
        assert copied == orm
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    sessions = session_factory(f"sqlite:///{tmp_path / 'v2g.sqlite'}")
    yield sessions
    sessions.kw["bind"].dispose()


def test_the_page_cache_is_restored_after_a_bulk_store(
    period: Synthetic, sqlite_sessions: sessionmaker[Session]
) -> None:
    prepare(sqlite_sessions, period.addresses)
    with sqlite_sessions.begin() as session:
        before = session.scalar(text("PRAGMA cache_size"))
        store_period(session, period.built, deployment_id=1, starts_at=START, ends_at=END)
        assert session.scalar(text("PRAGMA cache_size")) == before


def test_owner_and_claim_lookups_use_an_index(
    period: Synthetic, sqlite_sessions: sessionmaker[Session]
) -> None:
    """The reads that must stay fast at a million entries search an index; none scans the period."""
    prepare(sqlite_sessions, period.addresses)
    with sqlite_sessions.begin() as session:
        store_period(session, period.built, deployment_id=1, starts_at=START, ends_at=END)
    queries = {
        # the API's and the portal's entries of an owner key in a period
        "ix_period_entries_owner_period (owner_id=? AND period_id=?)": select(PeriodEntry)
        .where(PeriodEntry.period_id == PERIOD, PeriodEntry.owner_id == "owner-7")
        .order_by(PeriodEntry.entry_id),
        # the statement's entries of an owner
        "ix_period_entries_owner_period (owner_id=?)": select(PeriodEntry)
        .where(PeriodEntry.owner_id == "owner-7")
        .order_by(PeriodEntry.period_id),
        # the settlement job's next claim batch
        "ix_period_entries_period_claimed (period_id=? AND claimed=?)": select(PeriodEntry)
        .where(PeriodEntry.period_id == PERIOD, PeriodEntry.claimed.is_(False))
        .order_by(PeriodEntry.entry_id)
        .limit(200),
    }
    with sqlite_sessions() as session:
        for index, query in queries.items():
            compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
            plan = [row[3] for row in session.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))]
            assert plan == [f"SEARCH period_entries USING INDEX {index}"]
