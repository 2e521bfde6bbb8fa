"""One day from schedule to audited settlement: what `v2g settle`, `v2g demo` and the benchmark run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from backend.audit.indexer import EventIndexer
from backend.audit.statements import ReconciliationReport, reconcile
from backend.chain.client import Chain
from backend.chain.contracts import SettlementClient
from backend.chain.deploy import Actors, DeploymentRecord, deploy
from backend.db.models import Period, PeriodEntry, PeriodStatus, Submission
from backend.db.session import session_factory
from backend.settlement.job import SettlementJob
from backend.settlement.pipeline import fund_escrow, local_owner_accounts
from backend.settlement.tariff import Tariff
from scheduler.inputs import Problem
from scheduler.schedule import Schedule, to_trades

logger = logging.getLogger(__name__)

UNIT = 10**6


@dataclass
class DayResult:
    period_id: int
    status: PeriodStatus
    record: DeploymentRecord
    entries: int
    owners_paid: int
    owners_debited: int
    total_credit: int
    total_debit: int
    gas: dict[str, int]
    seconds: dict[str, float]
    reconciliation: ReconciliationReport
    owner_addresses: dict[str, str] = field(default_factory=dict)


def settle_day(
    problem: Problem,
    schedule: Schedule,
    chain: Chain,
    database_url: str,
    *,
    fee_bps: int = 0,
    liveness_s: int = 3600,
    record_path: Path | None = None,
    escrow_per_owner: int = 50 * UNIT,
    aggregator_float: int | None = None,
    batch_size: int = 200,
    progress: Callable[[str], None] | None = None,
) -> DayResult:
    """Trades → tariff → period → deploy (or reuse) → escrow (local chains) → propose → finalise →
    claims → index → reconcile.

    Local chains travel in time over the challenge window; on others the job returns while it is open.
    """
    seconds: dict[str, float] = {}
    step = progress or (lambda _: None)

    def timed(name: str, started: float) -> None:
        seconds[name] = round(time.perf_counter() - started, 3)
        step(name)

    t = time.perf_counter()
    trades = to_trades(schedule)
    stamps = list(problem.horizon.timestamps.to_pydatetime())
    tariff = Tariff.from_market(
        stamps, list(problem.prices.buy_eur_mwh), list(problem.prices.sell_eur_mwh), fee_bps
    )
    owners = sorted({tr.owner for tr in trades})
    local = chain.kind in ("eth-tester", "anvil")
    if not local:
        raise NotImplementedError("owner addresses for a real chain come from the owner registry (API)")
    addresses = {o: str(a.address) for o, a in local_owner_accounts(owners).items()}
    timed("trades", t)

    t = time.perf_counter()
    record = deploy(chain, liveness_s=liveness_s, record_path=record_path)
    actors = Actors.of(chain)
    timed("deploy", t)

    t = time.perf_counter()
    sessions = session_factory(database_url)
    job = SettlementJob(sessions, chain, record, actors, batch_size=batch_size, travel_time=local)
    job.register_owners(addresses)
    period_id = int(problem.horizon.start.strftime("%Y%m%d"))
    period = job.build(period_id, stamps[0], problem.horizon.end, trades, tariff)
    timed("build", t)

    t = time.perf_counter()
    if local:
        float_ = aggregator_float if aggregator_float is not None else max(period.total_credit * 2, UNIT)
        fund_escrow(
            chain,
            record,
            actors,
            dict.fromkeys(addresses.values(), escrow_per_owner),
            aggregator_float=float_,
        )
    timed("escrow", t)

    t = time.perf_counter()
    status = job.run(period_id)
    timed("settle", t)

    t = time.perf_counter()
    EventIndexer(sessions, chain, record.settlement, record.block_number).sync()
    with sessions() as session:
        report = reconcile(session, SettlementClient.at(chain, record.settlement), actors.settler.address)
        entries = list(session.scalars(select(PeriodEntry).where(PeriodEntry.period_id == period_id)))
        gas: dict[str, int] = {}
        for sub in session.scalars(select(Submission).where(Submission.period_id == period_id)):
            gas[sub.kind] = gas.get(sub.kind, 0) + int(sub.gas_used or 0)
        stored = session.get_one(Period, period_id)
    timed("audit", t)
    return DayResult(
        period_id=period_id,
        status=status,
        record=record,
        entries=len(entries),
        owners_paid=sum(1 for e in entries if e.amount > 0),
        owners_debited=sum(1 for e in entries if e.amount < 0),
        total_credit=stored.total_credit,
        total_debit=stored.total_debit,
        gas=gas,
        seconds=seconds,
        reconciliation=report,
        owner_addresses=addresses,
    )
