"""One day from schedule to audited settlement: what `v2g settle`, `v2g demo` and the benchmark run."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select

from backend.audit.statements import ReconciliationReport
from backend.chain.contracts import SettlementClient, TokenClient
from backend.chain.deploy import Actors, DeploymentRecord
from backend.db.models import Period, PeriodEntry, PeriodStatus, Submission
from backend.metering.reach import meter_for
from backend.metering.simulated import registers_of
from backend.platform import Platform
from backend.settlement.job import SettlementJob
from backend.settlement.pipeline import fund_escrow, local_owner_accounts
from backend.settlement.tariff import Tariff
from scheduler.inputs import Problem
from scheduler.schedule import Schedule, Trade, to_trades

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


def top_up_escrow(
    platform: Platform,
    actors: Actors,
    owner_balances: Mapping[str, int],
    aggregator_float: int,
) -> int:
    """Top every owner's escrow up to ``owner_balances`` and the aggregator's float up to
    ``aggregator_float``, depositing only what is missing (a re-run deposits nothing); returns the
    number of transactions. Only with a play-money token the admin may mint (the project's test token);
    with a real token, owners and the aggregator fund their escrow themselves and nothing is sent."""
    record = platform.record
    token = TokenClient.at(platform.chain, record.token)
    settlement = SettlementClient.at(platform.chain, record.settlement)
    try:
        minter_role = platform.chain.call(token.contract.functions.MINTER_ROLE())
        mintable = bool(
            platform.chain.call(token.contract.functions.hasRole(minter_role, actors.admin.address))
        )
    except Exception:  # not the project's token: no mint function or no roles
        mintable = False
    if not mintable:
        logger.info("token %s is not mintable by the admin: escrow is funded by its holders", record.token)
        return 0
    accounts = [*owner_balances, actors.settler.address]
    current = settlement.balances_of(accounts)
    wanted = {**owner_balances, actors.settler.address: aggregator_float}
    missing = {a: wanted[a] - current[a][0] for a in accounts if wanted[a] > current[a][0]}
    if not missing:
        return 0
    owners_missing = {a: v for a, v in missing.items() if a != actors.settler.address}
    float_missing = missing.get(actors.settler.address, 0)
    funding = fund_escrow(platform.chain, record, actors, owners_missing, aggregator_float=float_missing)
    logger.info(
        "escrow topped up: %d base units in %d transaction(s)", funding.deposited, funding.transactions
    )
    return funding.transactions


def _owners_of(trades: list[Trade]) -> list[str]:
    return sorted({tr.owner for tr in trades})


def settle_day(
    problem: Problem,
    schedule: Schedule,
    platform: Platform,
    *,
    fee_bps: int = 0,
    liveness_s: int = 3600,
    escrow_per_owner: int = 50 * UNIT,
    aggregator_float: int | None = None,
    batch_size: int = 200,
    progress: Callable[[str], None] | None = None,
    meter_url: str | None = None,
) -> DayResult:
    """Trades → tariff → deployment (the database's, or a new one) → simulated registers signed by the
    metering service (``meter_url``, ``V2G_METER_URL``, or one started for this call on a local chain) →
    period → escrow top-up → propose → finalise → claims → index → reconcile.

    Local chains travel in time over the challenge window; on others the job returns while it is open
    (run it again after the window: it resumes).
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
    timed("trades", t)

    t = time.perf_counter()
    addresses = platform.owner_addresses(
        _owners_of(trades),
        make_local=lambda ids: {o: str(a.address) for o, a in local_owner_accounts(ids).items()},
    )
    platform.ensure_deployment(liveness_s=liveness_s)
    actors = platform.actors(("settler",))
    timed("deploy", t)

    # the meter signs the simulated day from the registers it implies (its own process and key): this
    # process never holds the meter key, on any chain
    with meter_for(platform, fee_bps, meter_url=meter_url) as (meter, _):
        t = time.perf_counter()
        signer = meter.simulated(registers_of(trades, stamps, problem.horizon.end, tariff))
        job = _job(platform, actors, batch_size, meter_signer=signer)
        period_id = int(problem.horizon.start.strftime("%Y%m%d"))
        period = job.build(period_id, stamps[0], problem.horizon.end, trades, tariff, presign=signer)
        timed("build", t)

        t = time.perf_counter()
        float_ = aggregator_float if aggregator_float is not None else max(period.total_credit * 2, UNIT)
        top_up_escrow(platform, actors, dict.fromkeys(addresses.values(), escrow_per_owner), float_)
        timed("escrow", t)

        return _finish(platform, job, period_id, seconds, timed, addresses)


def _finish(
    platform: Platform,
    job: SettlementJob,
    period_id: int,
    seconds: dict[str, float],
    timed: Callable[[str, float], None],
    addresses: dict[str, str],
) -> DayResult:
    t = time.perf_counter()
    status = job.run(period_id)
    timed("settle", t)

    t = time.perf_counter()
    report = platform.reconcile()
    with platform.sessions() as session:
        entries = list(session.scalars(select(PeriodEntry).where(PeriodEntry.period_id == period_id)))
        gas: dict[str, int] = {}
        for sub in session.scalars(select(Submission).where(Submission.period_id == period_id)):
            gas[sub.kind] = gas.get(sub.kind, 0) + int(sub.gas_used or 0)
        stored = session.get_one(Period, period_id)
    timed("audit", t)
    return DayResult(
        period_id=period_id,
        status=status,
        record=job.record,
        entries=len(entries),
        owners_paid=sum(1 for e in entries if e.amount > 0),
        owners_debited=sum(1 for e in entries if e.amount < 0),
        total_credit=stored.total_credit,
        total_debit=stored.total_debit,
        gas=gas,
        seconds=seconds,
        reconciliation=report,
        owner_addresses=addresses or {e.owner_id: e.address for e in entries},
    )


def resume_period(
    platform: Platform,
    period_id: int,
    *,
    batch_size: int = 200,
    progress: Callable[[str], None] | None = None,
    escrow_per_owner: int = 50 * UNIT,
) -> DayResult:
    """Advance a stored period from where it stands (a settle that was killed), sending only what is
    missing; a period already claimed or disputed sends nothing."""
    seconds: dict[str, float] = {}
    step = progress or (lambda _: None)

    def timed(name: str, started: float) -> None:
        seconds[name] = round(time.perf_counter() - started, 3)
        step(name)

    actors = platform.actors(("settler",))
    t = time.perf_counter()
    with platform.sessions() as session:
        period = session.get(Period, period_id)
        if period is None:
            raise KeyError(f"no period {period_id}")
        addresses = list(
            session.scalars(select(PeriodEntry.address).where(PeriodEntry.period_id == period_id))
        )
        before_claims = PeriodStatus(period.status) in (
            PeriodStatus.BUILT,
            PeriodStatus.SIGNED,
            PeriodStatus.PROPOSED,
        )
    if before_claims:
        # a settle killed before its escrow top-up (at ``built``) resumes it here: without it the claims
        # find no float and the debits no balance (only what is missing is deposited)
        top_up_escrow(
            platform,
            actors,
            dict.fromkeys(addresses, escrow_per_owner),
            max(period.total_credit * 2, UNIT),
        )
    timed("escrow", t)
    # a period stored unsigned cannot be signed here (no meter key, no registers): see MeterServiceRequired
    job = _job(platform, actors, batch_size)
    return _finish(platform, job, period_id, seconds, timed, {})


def _job(
    platform: Platform, actors: Actors, batch_size: int, meter_signer: Callable[..., bytes] | None = None
) -> SettlementJob:
    """The settlement job of a command: local chains travel over the challenge window; ``V2G_CRASH_AT``
    kills the process at that step (drills)."""
    return SettlementJob(
        platform.sessions,
        platform.chain,
        platform.record,
        actors,
        batch_size=batch_size,
        travel_time=platform.chain.kind in ("eth-tester", "anvil"),
        crash_at=os.environ.get("V2G_CRASH_AT") or None,
        crash_hard=True,
        meter_signer=meter_signer,
    )
