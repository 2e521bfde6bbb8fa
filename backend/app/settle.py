"""Settling a day, one use case for every door: a simulated schedule (`v2g settle`, `v2g demo`,
``POST /periods``), a day's metered energy (`v2g settle --metered`, ``POST /metered-periods``,
`v2g operate`) and a period left where a killed run stopped.

Each builds its tariff, its settlement job and loads its keys here, with the policy of one
:class:`backend.config.Settings` (:class:`SettlePolicy`); the doors only parse input and format the
result, so the same day settles to the same entries whichever door it came through.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from backend.app.prices import hourly_prices
from backend.audit.statements import ReconciliationReport
from backend.chain.client import Chain
from backend.chain.contracts import SettlementClient, TokenClient
from backend.chain.deploy import Actors, DeploymentRecord
from backend.config import Settings
from backend.db.models import (
    Job,
    Owner,
    Period,
    PeriodEntry,
    PeriodStatus,
    ScheduleRun,
    ScheduleTrade,
    Submission,
)
from backend.metering.period import MeteredPeriod, metered_period, period_window, settleable
from backend.metering.reach import meter_for, meter_url_for
from backend.metering.simulated import registers_of
from backend.operations.field import close_open_transactions
from backend.platform import Platform, PlatformError
from backend.settlement.job import SettlementJob
from backend.settlement.pipeline import fund_escrow, local_owner_accounts
from backend.settlement.tariff import Tariff
from scheduler.inputs import Horizon, Prices, Problem
from scheduler.schedule import Direction, Schedule, Trade, to_trades

logger = logging.getLogger(__name__)

UNIT = 10**6


class PeriodInFlightError(PlatformError):
    """Another metered period is built and not yet signed: it is settled first."""


class NotMeteredPeriodError(PlatformError):
    """The period was settled from a simulated schedule, not from meter data."""


class UnknownScheduleError(PlatformError):
    """No stored schedule with this id."""


@dataclass(frozen=True)
class SettlePolicy:
    """What a settlement decides besides its energy, the same through every door (from
    :class:`Settings`: ``V2G_FEE_BPS``, ``V2G_LIVENESS_S``, ``V2G_CLAIM_BATCH``)."""

    #: Aggregator's fee on every trade, basis points.
    fee_bps: int = 100
    #: Challenge window of a first deployment, seconds.
    liveness_s: int = 3600
    #: Entries per claim batch transaction.
    claim_batch: int = 200
    #: With the play-money token only (the admin may mint): every owner's escrow is topped up to this
    #: and the aggregator's float to twice the period's credit, so a demo day's debits are paid.
    escrow_per_owner: int = 50 * UNIT
    #: A crash drill: the settling process kills itself at this job step (the command line's
    #: ``V2G_CRASH_AT``; never the server's).
    crash_at: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, fee_bps: int | None = None) -> SettlePolicy:
        return cls(
            fee_bps=settings.fee_bps if fee_bps is None else fee_bps,
            liveness_s=settings.liveness_s,
            claim_batch=settings.claim_batch,
        )


def open_platform(
    settings: Settings,
    *,
    database_url: str | None = None,
    chain: str | Chain | None = None,
    write: bool = True,
    strict: bool = True,
) -> Platform:
    """The database (``database_url``, default the settings') and the chain (``chain``, default
    ``V2G_CHAIN``, else the chain the database settles on), checked against each other: the one way
    every door opens the platform."""
    return Platform.connect(
        database_url or settings.database_url,
        chain if chain is not None else settings.chain,
        data_dir=Path(settings.data_dir),
        deployments_dir=Path(settings.deployments_dir),
        write=write,
        strict=strict,
        data_dir_explicit="data_dir" in settings.model_fields_set,
    )


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
    settlement = SettlementClient.at(platform.chain, record.settlement)
    if not admin_may_mint(platform, actors.admin.address):
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


def admin_may_mint(platform: Platform, admin: str) -> bool:
    """Whether ``admin`` holds the minter role of the deployment's token (the project's play-money
    token); any other token (no roles, no mint) is funded by its holders. The one answer to "may the
    admin mint" for every door."""
    token = TokenClient.at(platform.chain, platform.record.token)
    try:
        minter_role = platform.chain.call(token.contract.functions.MINTER_ROLE())
        return bool(platform.chain.call(token.contract.functions.hasRole(minter_role, admin)))
    except Exception:  # not the project's token: no mint function or no roles
        return False


def job_of(
    platform: Platform, actors: Actors, policy: SettlePolicy, meter_signer: Callable[..., bytes] | None = None
) -> SettlementJob:
    """The settlement job: local chains travel over the challenge window; ``policy.crash_at`` kills the
    process at that step (drills). The period's root is signed by the metering service
    (``meter_signer``), never with a key in this process."""
    return SettlementJob(
        platform.sessions,
        platform.chain,
        platform.record,
        actors,
        batch_size=policy.claim_batch,
        travel_time=platform.chain.kind in ("eth-tester", "anvil"),
        crash_at=policy.crash_at,
        crash_hard=True,
        meter_signer=meter_signer,
    )


class _Timer:
    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.seconds: dict[str, float] = {}
        self._step = progress or (lambda _: None)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)
        self._step(name)


def tariff_of(stamps: list[datetime], prices: Prices, fee_bps: int) -> Tariff:
    """The tariff of a day: the buy and sell prices the schedule was planned with, and the fee."""
    return Tariff.from_market(stamps, list(prices.buy_eur_mwh), list(prices.sell_eur_mwh), fee_bps)


def settle_simulated(
    problem: Problem,
    schedule: Schedule,
    platform: Platform,
    policy: SettlePolicy,
    *,
    period_id: int | None = None,
    progress: Callable[[str], None] | None = None,
    meter_url: str | None = None,
) -> DayResult:
    """A solved day's trades, priced as planned (sell = buy − the planned spread), settled."""
    timer = _Timer(progress)
    with timer.stage("trades"):
        trades = to_trades(schedule)
        stamps = list(problem.horizon.timestamps.to_pydatetime())
        tariff = tariff_of(stamps, problem.prices, policy.fee_bps)
    return settle_trades(
        platform,
        period_id if period_id is not None else int(problem.horizon.start.strftime("%Y%m%d")),
        problem.horizon,
        trades,
        tariff,
        policy,
        timer=timer,
        meter_url=meter_url,
    )


def settle_schedule(
    platform: Platform,
    schedule_id: int,
    policy: SettlePolicy,
    *,
    period_id: int | None = None,
    progress: Callable[[str], None] | None = None,
    meter_url: str | None = None,
) -> DayResult:
    """A stored schedule (``POST /schedules``) settled: its trades, priced with the stored prices and the
    sell spread it was planned with, exactly as :func:`settle_simulated` settles the same day."""
    timer = _Timer(progress)
    with timer.stage("trades"), platform.sessions() as session:
        run = session.get(ScheduleRun, schedule_id)
        if run is None:
            raise UnknownScheduleError(f"no schedule {schedule_id}")
        planned = session.get_one(Job, run.job_id).params
        rows = list(session.scalars(select(ScheduleTrade).where(ScheduleTrade.schedule_id == schedule_id)))
        horizon = Horizon(run.start, run.intervals, run.interval_minutes)
        prices = Prices.from_hourly(
            horizon,
            hourly_prices(session, run.start, horizon.end),
            float(planned.get("sell_spread_eur_mwh", 0.0)),
        )
        stamps = list(horizon.timestamps.to_pydatetime())
        tariff = tariff_of(stamps, prices, policy.fee_bps)
        trades = [
            Trade(
                r.owner_id, r.vehicle_id, r.session_id, r.interval_start, Direction(r.direction), r.energy_wh
            )
            for r in rows
        ]
    return settle_trades(
        platform,
        period_id if period_id is not None else int(horizon.start.strftime("%Y%m%d")),
        horizon,
        trades,
        tariff,
        policy,
        timer=timer,
        meter_url=meter_url,
    )


def settle_trades(
    platform: Platform,
    period_id: int,
    horizon: Horizon,
    trades: list[Trade],
    tariff: Tariff,
    policy: SettlePolicy,
    *,
    timer: _Timer | None = None,
    meter_url: str | None = None,
) -> DayResult:
    """Owners' addresses → deployment (the database's, or a new one) → simulated registers signed by the
    metering service (``meter_url``, ``V2G_METER_URL``, or one started for this call on a local chain) →
    period → escrow top-up → propose → finalise → claims → index → reconcile.

    Local chains travel in time over the challenge window; on others the job returns while it is open
    (run it again after the window: it resumes). A period already built from the same trades is resumed,
    never built twice."""
    timer = timer or _Timer(None)
    stamps = list(horizon.timestamps.to_pydatetime())
    with platform.chain.lock:
        with timer.stage("deploy"):
            addresses = platform.owner_addresses(
                sorted({tr.owner for tr in trades}),
                make_local=lambda ids: {o: str(a.address) for o, a in local_owner_accounts(ids).items()},
            )
            platform.ensure_deployment(liveness_s=policy.liveness_s)
            actors = platform.actors(("settler",))
        # the meter signs the simulated day from the registers it implies (its own process and key): this
        # process never holds the meter key, on any chain
        with meter_for(platform, policy.fee_bps, meter_url=meter_url) as (meter, _):
            with timer.stage("build"):
                signer = meter.simulated(registers_of(trades, stamps, horizon.end, tariff))
                job = job_of(platform, actors, policy, meter_signer=signer)
                period = job.build(period_id, stamps[0], horizon.end, trades, tariff, presign=signer)
            with timer.stage("escrow"):
                top_up_escrow(
                    platform,
                    actors,
                    dict.fromkeys(addresses.values(), policy.escrow_per_owner),
                    max(period.total_credit * 2, UNIT),
                )
            return _finish(platform, job, period_id, timer, addresses)


def _finish(
    platform: Platform, job: SettlementJob, period_id: int, timer: _Timer, addresses: dict[str, str]
) -> DayResult:
    with timer.stage("settle"):
        status = job.run(period_id)
    with timer.stage("audit"):
        report = platform.reconcile()
        with platform.sessions() as session:
            entries = list(session.scalars(select(PeriodEntry).where(PeriodEntry.period_id == period_id)))
            gas: dict[str, int] = {}
            for sub in session.scalars(select(Submission).where(Submission.period_id == period_id)):
                gas[sub.kind] = gas.get(sub.kind, 0) + int(sub.gas_used or 0)
            stored = session.get_one(Period, period_id)
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
        seconds=timer.seconds,
        reconciliation=report,
        owner_addresses=addresses or {e.owner_id: e.address for e in entries},
    )


def resume(
    platform: Platform,
    period_id: int,
    policy: SettlePolicy,
    *,
    progress: Callable[[str], None] | None = None,
) -> DayResult:
    """Advance a stored period from where it stands (a settle that was killed), sending only what is
    missing; a period already claimed or disputed sends nothing."""
    timer = _Timer(progress)
    with platform.chain.lock:
        actors = platform.actors(("settler",))
        job = job_of(platform, actors, policy)
        with timer.stage("escrow"):
            # where the chain has the period first (a database restored behind it): a period the chain
            # already claimed is not funded again
            job.align(period_id)
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
                # a settle killed before its escrow top-up (at ``built``) resumes it here: without it the
                # claims find no float and the debits no balance (only what is missing is deposited)
                top_up_escrow(
                    platform,
                    actors,
                    dict.fromkeys(addresses, policy.escrow_per_owner),
                    max(period.total_credit * 2, UNIT),
                )
        # a period stored unsigned cannot be signed here (no meter key, no registers): see
        # MeterServiceRequiredError
        return _finish(platform, job, period_id, timer, {})


def settler_now() -> datetime:
    """Now, as the settler takes it: ``V2G_SETTLE_NOW`` (ISO 8601, drills that settle a day they just
    operated), else the platform's clock (a drill's, ``V2G_DRILL_CLOCK``, or the wall clock)."""
    text = os.environ.get("V2G_SETTLE_NOW")
    if text:
        return datetime.fromisoformat(text).astimezone(UTC)
    from backend.clock import platform_clock

    return platform_clock()()


def settle_metered(
    platform: Platform,
    period_id: int,
    policy: SettlePolicy,
    *,
    meter_url: str | None = None,
    clock_tolerance_s: float | None = None,
    now: datetime | None = None,
) -> tuple[MeteredPeriod, Period, PeriodStatus]:
    """Settle a day's metered energy: the period built from the verified raw frames (its own day, and the
    late energy of days already settled as adjustments), signed by the metering service (its own process
    and key, reached by URL), proposed, finalised and claimed as far as the chain's challenge window
    allows. ``now``: refuse a day that has not ended (:class:`DayNotEndedError`). Idempotent: a period
    already built is resumed at the raw-frame heads it was built at, never rebuilt differently."""
    with platform.chain.lock:
        platform.ensure_deployment(liveness_s=policy.liveness_s)
        meter_url_for(platform, meter_url)  # a settler holding a meter key stops here, before any work
        with platform.sessions() as db:
            if now is not None and db.get(Period, period_id) is None:
                settleable(db, period_id, now)  # before anything is written or a metering service started
        with platform.sessions.begin() as db:
            _, end = period_window(period_id)
            close_open_transactions(db, end)
        with platform.sessions() as db:
            existing = db.get(Period, period_id)
            if existing is not None and existing.frame_heads is None:
                raise NotMeteredPeriodError(
                    f"period {period_id} was settled from a simulated schedule ({existing.status})"
                )
            other = db.scalars(
                select(Period.id).where(
                    Period.status == PeriodStatus.BUILT,
                    Period.frame_heads.is_not(None),
                    Period.id != period_id,
                )
            ).first()
            if other is not None:
                raise PeriodInFlightError(
                    f"metered period {other} is built and not yet signed: settle it first "
                    f"(v2g settle --metered --date {str(other)[:4]}-{str(other)[4:6]}-{str(other)[6:]})"
                )
        with meter_for(
            platform, policy.fee_bps, meter_url=meter_url, clock_tolerance_s=clock_tolerance_s
        ) as (client, meter_policy):
            with platform.sessions() as db:
                metered = metered_period(
                    db,
                    period_id,
                    policy.fee_bps,
                    heads=existing.frame_heads if existing is not None else None,
                    policy=meter_policy,
                    now=now if existing is None else None,
                )
            # the settler's keys, never the meter's: only the metering service's signature is proposed
            job = job_of(platform, platform.actors(("settler",)), policy, meter_signer=client)
            period = job.build(
                period_id,
                metered.start,
                metered.end,
                metered.trades,
                metered.tariff,
                frame_heads=metered.heads,
            )
            with platform.sessions() as db:
                addresses = [o.address for o in db.scalars(select(Owner))]
            top_up_escrow(
                platform,
                platform.actors(("admin", "settler")),
                dict.fromkeys(addresses, policy.escrow_per_owner),
                max(period.total_credit * 2, UNIT),
            )
            status = job.run(period_id)
    return metered, period, status


def claim_entry(platform: Platform, policy: SettlePolicy, period_id: int, entry_id: int) -> str:
    """Claim one entry of a finalised period now (the settler sends it on the owner's behalf); its
    transaction hash. The entry is marked claimed once the claim is mined."""
    with platform.chain.lock:
        job = job_of(platform, platform.actors(("settler",)), policy)
        with platform.sessions() as session:
            period = session.get_one(Period, period_id)
            entry = session.get_one(PeriodEntry, (period_id, entry_id))
            header = job.header(period)
            proof = [bytes.fromhex(p[2:]) for p in entry.proof]
            address, amount = entry.address, entry.amount
        receipt = SettlementClient.at(platform.chain, platform.record.settlement).claim(
            job.actors.settler, period_id, header, entry_id, address, amount, proof
        )
    tx = "0x" + bytes(receipt["transactionHash"]).hex()
    with platform.sessions.begin() as session:
        stored = session.get_one(PeriodEntry, (period_id, entry_id))
        stored.claimed, stored.claim_tx = True, tx
    return tx
