"""The settlement job end to end, and killed at every step then re-run: same balances, nothing paid twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from backend.audit.replay import fetch_events
from backend.chain.contracts import PeriodState, SettlementClient
from backend.db.models import Period, PeriodEntry, PeriodStatus, SettledTradeRow, Submission
from backend.settlement.job import CRASH_POINTS, PeriodConflictError, SimulatedCrash
from tests.postgres import fresh_database, throwaway_postgres
from tests.settlement.conftest import Day, Setup, make_setup

PERIOD = 20230703


def settle(setup: Setup, day: Day, **job_kwargs: object) -> PeriodStatus:
    job = setup.job(**job_kwargs)
    job.register_owners(day.addresses)
    start, end = day.schedule.timestamps[0].to_pydatetime(), day.schedule.timestamps[-1].to_pydatetime()
    job.build(PERIOD, start, end, day.trades, day.tariff)
    return job.run(PERIOD)


def ledger(setup: Setup, day: Day) -> dict[str, tuple[int, int]]:
    s = SettlementClient.at(setup.chain, setup.record.settlement)
    people = [*day.addresses.values(), setup.actors.settler.address]
    return {a: (s.balance_of(a), s.debt_of(a)) for a in people}


def claimed_entries(setup: Setup) -> list[int]:
    s = SettlementClient.at(setup.chain, setup.record.settlement)
    events = fetch_events(
        s.contract, setup.record.block_number, setup.chain.w3.eth.block_number, ["EntryClaimed"]
    )
    return sorted(int(e.args["entryId"]) for e in events)


@pytest.fixture(scope="module")
def reference(day: Day, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    setup = make_setup(day, tmp_path_factory.mktemp("ref") / "v2g.sqlite")
    assert settle(setup, day) is PeriodStatus.CLAIMED
    return ledger(setup, day)


def test_job_settles_a_day_and_stores_every_trade(setup: Setup, day: Day) -> None:
    assert settle(setup, day) is PeriodStatus.CLAIMED
    s = SettlementClient.at(setup.chain, setup.record.settlement)
    assert s.period_state(PERIOD) is PeriodState.FINALISED
    with setup.sessions() as session:
        period = session.get_one(Period, PERIOD)
        entries = list(session.scalars(select(PeriodEntry).where(PeriodEntry.period_id == PERIOD)))
        trade_wh = session.scalar(select(func.sum(SettledTradeRow.energy_wh)))
        kinds = [k for (k,) in session.execute(select(Submission.kind).order_by(Submission.id))]
    assert trade_wh == sum(t.energy_wh for t in day.trades)  # every Wh stored exactly once
    assert all(e.claimed and e.claim_tx for e in entries)
    assert period.entry_count == len(entries) == len(claimed_entries(setup))
    assert kinds == ["propose", "finalise", "claim_batch"]
    assert s.remaining(PERIOD) == (0, 0)
    # owners' amounts arrived: each entry's owner moved by exactly its amount (or into debt)
    assert sum(e.amount for e in entries if e.amount > 0) == period.total_credit


def test_job_rerun_after_completion_changes_nothing(setup: Setup, day: Day) -> None:
    settle(setup, day)
    before = ledger(setup, day)
    block = setup.chain.w3.eth.block_number
    assert settle(setup, day) is PeriodStatus.CLAIMED
    assert ledger(setup, day) == before
    assert setup.chain.w3.eth.block_number == block  # not one transaction more


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[str]:
    with throwaway_postgres() as url:
        yield url


#: On PostgreSQL the default suite kills the job at one step of each stage (the rest with -m slow).
PG_DEFAULT = {"built", "propose_sent", "finalise_sent", "claim_batch_sent"}


KILLS = [
    pytest.param(
        point,
        database,
        id=f"{point}-{database}",
        marks=[pytest.mark.slow] if database == "postgresql" and point not in PG_DEFAULT else [],
    )
    for point in CRASH_POINTS
    for database in ("sqlite", "postgresql")
]


@pytest.mark.parametrize(("point", "database"), KILLS)
def test_job_killed_at_each_step_and_rerun_pays_exactly_once(
    day: Day,
    tmp_path: Path,
    reference: dict[str, tuple[int, int]],
    point: str,
    database: str,
    request: pytest.FixtureRequest,
) -> None:
    """Every job state, on SQLite and on PostgreSQL: the re-run pays every owner exactly once."""
    url: Path | str = tmp_path / "v2g.sqlite"
    if database == "postgresql":
        url = fresh_database(request.getfixturevalue("postgres_cluster"), f"kill_{point}")
    setup = make_setup(day, url)
    with pytest.raises(SimulatedCrash, match=point):
        settle(setup, day, crash_at=point, batch_size=4)
    assert settle(setup, day, batch_size=4) is PeriodStatus.CLAIMED
    assert ledger(setup, day) == reference
    with setup.sessions() as session:
        count = session.get_one(Period, PERIOD).entry_count
    assert claimed_entries(setup) == list(range(count))  # every entry once, none twice, none skipped


def test_claims_a_chain_lost_are_sent_again_after_a_crash_at_finalise(
    setup: Setup, day: Day, reference: dict[str, tuple[int, int]]
) -> None:
    """Killed once its finalisation was sent; resumed: the stored finalisation is marked mined (never
    left signed). Then the chain loses every block after the finalisation (its claims): the next run
    finds the entries unclaimed on chain and claims each once more, to the same ledger."""
    with pytest.raises(SimulatedCrash, match="finalise_sent"):
        settle(setup, day, crash_at="finalise_sent", batch_size=4)
    finalised = setup.chain.snapshot()
    assert settle(setup, day, batch_size=4) is PeriodStatus.CLAIMED
    with setup.sessions() as session:
        kinds = {s.kind: s.status for s in session.scalars(select(Submission))}
    assert kinds == {"propose": "mined", "finalise": "mined", "claim_batch": "mined"}

    setup.chain.revert(finalised)  # the claims are gone from the chain, not from the database
    assert claimed_entries(setup) == []
    assert settle(setup, day, batch_size=4) is PeriodStatus.CLAIMED
    assert ledger(setup, day) == reference
    with setup.sessions() as session:
        count = session.get_one(Period, PERIOD).entry_count
        batches = [
            s.status for s in session.scalars(select(Submission).where(Submission.kind == "claim_batch"))
        ]
    assert claimed_entries(setup) == list(range(count))
    # signed again to the very same bytes (same nonce, header and entries): the stored rows, mined again
    assert batches == ["mined"] * -(-count // 4)


def test_a_disputed_period_the_chain_lost_is_never_proposed_again(setup: Setup, day: Day) -> None:
    before = setup.chain.snapshot()
    assert settle(setup, day) is PeriodStatus.CLAIMED
    with setup.sessions.begin() as session:  # as the database knows it: disputed
        session.get_one(Period, PERIOD).status = PeriodStatus.DISPUTED
    setup.chain.revert(before)
    with pytest.raises(PeriodConflictError, match="a disputed period is not proposed again"):
        setup.job().run(PERIOD)
    assert SettlementClient.at(setup.chain, setup.record.settlement).period_state(PERIOD) is PeriodState.NONE


def test_job_skips_entries_claimed_on_chain_outside_the_job(setup: Setup, day: Day) -> None:
    job = setup.job()
    job.register_owners(day.addresses)
    start, end = day.schedule.timestamps[0].to_pydatetime(), day.schedule.timestamps[-1].to_pydatetime()
    job.build(PERIOD, start, end, day.trades, day.tariff)
    job.crash_at = "finalised"
    with pytest.raises(SimulatedCrash):
        job.run(PERIOD)
    # one entry is claimed by a single `claim` before the job's batches (as an owner would)
    with setup.sessions() as session:
        entry = session.scalars(select(PeriodEntry).where(PeriodEntry.period_id == PERIOD)).first()
        assert entry is not None
        header = job.header(session.get_one(Period, PERIOD))
    s = SettlementClient.at(setup.chain, setup.record.settlement)
    proof = [bytes.fromhex(p[2:]) for p in entry.proof]
    fn = s.contract.functions.claim(
        PERIOD, header.as_tuple(), entry.entry_id, entry.address, entry.amount, proof
    )
    setup.chain.send(fn, setup.actors.settler)
    job.crash_at = None
    assert job.run(PERIOD) is PeriodStatus.CLAIMED
    assert claimed_entries(setup) == list(range(header.entry_count))
    with setup.sessions() as session:
        assert (
            session.get_one(PeriodEntry, (PERIOD, entry.entry_id)).claim_tx is None
        )  # claimed outside the job


def test_energy_settled_at_a_zero_price_is_stored_without_an_entry(setup: Setup, day: Day) -> None:
    """An owner whose trades net to zero (here: charging only in an interval priced at 0) has no entry, yet
    its energy is settled: its trades are stored with entry id -1, so no metered Wh is left unexplained."""
    from dataclasses import replace

    from backend.settlement.period import NO_ENTRY
    from backend.settlement.tariff import Tariff
    from scheduler.schedule import Direction

    charge = Direction.CHARGE
    first, second = sorted(day.addresses)[:2]
    t0, t1 = sorted(day.tariff.buy_per_kwh)[:2]
    trades = [
        replace(
            day.trades[0],
            owner=first,
            session_id="s-zero",
            interval_start=t0,
            energy_wh=4_321,
            direction=charge,
        ),
        replace(
            day.trades[0],
            owner=second,
            session_id="s-paid",
            interval_start=t1,
            energy_wh=1_000,
            direction=charge,
        ),
    ]
    buy = {t0: 0, t1: 100_000}  # base units per kWh: 0 and 100 EUR/MWh
    tariff = Tariff(buy, dict(buy), 100)
    job = setup.job()
    job.register_owners(day.addresses)
    period = job.build(PERIOD, t0, t1, trades, tariff)
    assert period.entry_count == 1 and period.total_debit == 100_000 + 1_000  # 0.1 EUR and a 1 % fee
    with setup.sessions() as session:
        rows = {
            r.session_id: (r.owner_id, r.entry_id, r.energy_wh, r.amount)
            for r in session.scalars(select(SettledTradeRow).where(SettledTradeRow.period_id == PERIOD))
        }
    assert rows == {"s-zero": (first, NO_ENTRY, 4_321, 0), "s-paid": (second, 0, 1_000, -101_000)}


def test_a_period_built_and_not_proposed_is_never_reconciled_ok(setup: Setup, day: Day) -> None:
    """A settle killed before its proposal leaves money the database says is owed and the chain does not
    know: reconciliation names it until the settlement is run again."""
    from backend.audit.indexer import EventIndexer
    from backend.audit.statements import reconcile

    job = setup.job()
    job.register_owners(day.addresses)
    start, end = day.schedule.timestamps[0].to_pydatetime(), day.schedule.timestamps[-1].to_pydatetime()
    job.build(PERIOD, start, end, day.trades, day.tariff)
    settlement = SettlementClient.at(setup.chain, setup.record.settlement)

    def report() -> list[tuple[str, int | None]]:
        EventIndexer(setup.sessions, setup.chain, setup.record.settlement, setup.record.block_number).sync()
        with setup.sessions() as session:
            found = reconcile(session, settlement, setup.actors.settler.address)
        return [(m.kind, m.period_id) for m in found.mismatches]

    assert report() == [("period_not_proposed", PERIOD)]
    assert job.run(PERIOD) is PeriodStatus.CLAIMED
    assert report() == []
