"""Audit: event index by block ranges, statements, reconciliation with named mismatches, inclusion proofs."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from backend.audit.indexer import EventIndexer
from backend.audit.statements import owner_statement, reconcile, verify_inclusion
from backend.chain.contracts import SettlementClient
from backend.db.models import IndexedEvent, PeriodEntry, SettledTradeRow
from backend.settlement.job import SimulatedCrash
from tests.settlement.conftest import Day, Setup
from tests.settlement.test_job import PERIOD, settle


def indexer(setup: Setup) -> EventIndexer:
    return EventIndexer(setup.sessions, setup.chain, setup.record.settlement, setup.record.block_number)


def test_indexer_stores_events_in_ranges_and_rebuild_gives_identical_statements(
    setup: Setup, day: Day
) -> None:
    settle(setup, day)
    idx = indexer(setup)
    count = idx.sync(step=3)  # many small ranges
    assert count > 0
    assert idx.sync() == 0  # nothing new: the cursor holds
    with setup.sessions() as session:
        names = {e.name for e in session.scalars(select(IndexedEvent))}
        owners = sorted({e.owner_id for e in session.scalars(select(PeriodEntry))})
        before = [owner_statement(session, setup.record.settlement, o) for o in owners]
    assert {"Deposited", "PeriodProposed", "PeriodFinalised", "EntryClaimed"} <= names
    assert idx.rebuild() == count
    with setup.sessions() as session:
        after = [owner_statement(session, setup.record.settlement, o) for o in owners]
    assert after == before


def test_owner_statement_shows_energy_amount_proof_and_payment(setup: Setup, day: Day) -> None:
    settle(setup, day)
    indexer(setup).sync()
    with setup.sessions() as session:
        entry = session.scalars(select(PeriodEntry).order_by(PeriodEntry.entry_id)).first()
        assert entry is not None
        trades = list(
            session.scalars(select(SettledTradeRow).where(SettledTradeRow.owner_id == entry.owner_id))
        )
        statement = owner_statement(session, setup.record.settlement, entry.owner_id)
    (line,) = statement.lines
    assert line.period_id == PERIOD and line.amount == entry.amount == sum(t.amount for t in trades)
    assert line.charged_wh == sum(t.energy_wh for t in trades if t.direction == "charge")
    assert line.discharged_wh == sum(t.energy_wh for t in trades if t.direction == "discharge")
    assert line.claim_tx == entry.claim_tx and line.root is not None
    assert line.paid is not None and line.debt_added is not None
    assert (line.paid + line.debt_added == -entry.amount) if entry.amount < 0 else (line.paid == entry.amount)


def test_reconcile_is_clean_after_settlement(setup: Setup, day: Day) -> None:
    settle(setup, day)
    indexer(setup).sync()
    with setup.sessions() as session:
        report = reconcile(
            session, SettlementClient.at(setup.chain, setup.record.settlement), setup.actors.settler.address
        )
    assert report.ok, report.mismatches
    assert report.periods == 1 and report.entries > 0 and report.accounts > 0


def test_reconcile_names_each_mismatch(setup: Setup, day: Day) -> None:
    settle(setup, day)
    indexer(setup).sync()
    with setup.sessions.begin() as session:
        entry = session.get_one(PeriodEntry, (PERIOD, 0))
        entry.amount += 1  # the database disagrees with what was paid
    with setup.sessions() as session:
        report = reconcile(
            session, SettlementClient.at(setup.chain, setup.record.settlement), setup.actors.settler.address
        )
    assert [m.kind for m in report.mismatches] == ["entry_amount"]
    assert report.mismatches[0].period_id == PERIOD and "entry 0" in report.mismatches[0].detail


def test_reconcile_names_a_claim_stored_but_not_on_chain(setup: Setup, day: Day) -> None:
    with pytest.raises(SimulatedCrash):
        settle(setup, day, crash_at="finalised")
    with setup.sessions.begin() as session:
        session.get_one(PeriodEntry, (PERIOD, 0)).claimed = True
    indexer(setup).sync()
    with setup.sessions() as session:
        report = reconcile(
            session, SettlementClient.at(setup.chain, setup.record.settlement), setup.actors.settler.address
        )
    assert "entry_claim_missing_on_chain" in [m.kind for m in report.mismatches]


def test_verify_inclusion_proves_every_entry_and_refuses_a_tampered_one(setup: Setup, day: Day) -> None:
    settle(setup, day)
    indexer(setup).sync()
    settlement = SettlementClient.at(setup.chain, setup.record.settlement)
    with setup.sessions() as session:
        ids = [e.entry_id for e in session.scalars(select(PeriodEntry))]
        results = [
            verify_inclusion(
                session,
                PERIOD,
                i,
                chain_id=setup.record.chain_id,
                contract=setup.record.settlement,
                settlement=settlement,
            )
            for i in ids
        ]
        offline = verify_inclusion(
            session, PERIOD, ids[0], chain_id=setup.record.chain_id, contract=setup.record.settlement
        )
    assert offline.valid and offline.contract_leaf_matches is None
    assert all(r.valid and r.contract_leaf_matches for r in results)
    with setup.sessions.begin() as session:
        session.get_one(PeriodEntry, (PERIOD, ids[0])).amount += 1
    with setup.sessions() as session:
        tampered = verify_inclusion(
            session,
            PERIOD,
            ids[0],
            chain_id=setup.record.chain_id,
            contract=setup.record.settlement,
            settlement=settlement,
        )
    assert not tampered.valid
