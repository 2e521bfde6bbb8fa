from __future__ import annotations

import datetime as dt
from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import select

from backend.api.deps import (
    AnyRoleDep,
    Limit,
    Offset,
    OperatorDep,
    OwnerOrOperatorDep,
    PathId,
    SessionDep,
    StateDep,
    check_owner,
    forbidden,
    not_found,
)
from backend.api.errors import ApiError
from backend.api.openapi import documented, link
from backend.api.schemas import (
    ClaimCreate,
    ClaimPublic,
    EntryPublic,
    JobPublic,
    MeteredPeriodCreate,
    PeriodCreate,
    PeriodPublic,
)
from backend.app.settle import claim_entry as claim_entry_now
from backend.db.models import Job, Period, PeriodEntry, PlugSession, ScheduleRun, ScheduleTrade

router = APIRouter(prefix="/periods", tags=["settlement periods"])
#: ``POST /metered-periods``: a metered day settled (its own path: ``/periods/{period_id}`` takes ids)
metered_router = APIRouter(prefix="/metered-periods", tags=["settlement periods"])


def _public(p: Period) -> PeriodPublic:
    return PeriodPublic(
        id=p.id,
        status=p.status,
        root=p.root,
        total_credit=str(p.total_credit),
        total_debit=str(p.total_debit),
        entry_count=p.entry_count,
        challenge_ends=p.challenge_ends,
    )


def _entry(e: PeriodEntry) -> EntryPublic:
    return EntryPublic(
        period_id=e.period_id,
        entry_id=e.entry_id,
        owner_id=e.owner_id,
        address=e.address,
        amount=str(e.amount),
        claimed=e.claimed,
        claim_tx=e.claim_tx,
        proof=e.proof,
    )


JOB_LINK = {202: {"GetJob": link("get_job", "the settlement job", job_id="$response.body#/id")}}


def _refuse_unsettleable(session: SessionDep, run: ScheduleRun, fee_bps: int) -> None:
    """409 before any job starts: the schedule's day is settled from another schedule or with another
    fee, or one of its plug-ins was cancelled since (schedule the day again)."""
    end = run.start + timedelta(minutes=run.intervals * run.interval_minutes)
    settled = session.scalar(
        select(Period).where(Period.starts_at < end, Period.ends_at > run.start).order_by(Period.id)
    )
    if settled is not None:
        earlier = [
            j.params
            for j in session.scalars(select(Job).where(Job.kind == "settle"))
            if int(j.params.get("schedule_id", -1)) == run.id
        ]
        if not any(params.get("fee_bps") == fee_bps for params in earlier):
            raise ApiError(
                409,
                "AlreadySettledError",
                f"schedule {run.id}'s horizon is settled in period {settled.id} ({settled.status}) "
                + ("with another fee" if earlier else "from another schedule"),
            )
    planned = set(
        session.scalars(select(ScheduleTrade.session_id).where(ScheduleTrade.schedule_id == run.id))
    )
    if planned:
        stored = set(session.scalars(select(PlugSession.id).where(PlugSession.id.in_(planned))))
        cancelled = sorted(planned - stored)
        if cancelled:
            raise ApiError(
                409,
                "StaleScheduleError",
                f"schedule {run.id} plans cancelled plug-in(s) {', '.join(cancelled[:5])}: "
                "schedule the day again",
            )


@router.post(
    "",
    response_model=JobPublic,
    status_code=202,
    responses=documented(
        {404: ["NotFoundError"], 409: ["AlreadySettledError", "StaleScheduleError"]}, JOB_LINK
    ),
)
def create_period(body: PeriodCreate, state: StateDep, session: SessionDep, _: OperatorDep) -> Job:
    """Settle a schedule's trades: build the period, sign, propose, finalise, claim (background job;
    on a real chain it stops while the challenge window is open: POST ``/periods/{id}/settle`` later).
    Settling the same schedule again with the same fee resumes it."""
    run = session.get(ScheduleRun, body.schedule_id)
    if run is None:
        raise not_found(f"schedule {body.schedule_id}")
    fee = state.settings.fee_bps if body.fee_bps is None else body.fee_bps
    _refuse_unsettleable(session, run, fee)
    job_id = state.runner.submit("settle", {**body.model_dump(), "fee_bps": fee})
    return session.get_one(Job, job_id)


@metered_router.post(
    "",
    response_model=JobPublic,
    status_code=202,
    responses=documented({422: ["InvalidDateError"]}, JOB_LINK),
)
def create_metered_period(
    body: MeteredPeriodCreate, state: StateDep, session: SessionDep, _: OperatorDep
) -> Job:
    """Settle a day's metered energy (background job): the period built from the stations' verified raw
    frames and signed by the metering service (``V2G_METER_URL``, or on a local chain one started for the
    job), proposed, finalised and claimed; the job's result carries the day's energy equation. Refusals
    are the job's named error (``DayNotEndedError``, ``NoPricesError``, ``NoFieldDataError``,
    ``FrameChainError``, ...). Idempotent: a day already built resumes at the heads it was built at."""
    try:
        dt.date.fromisoformat(body.date)
    except ValueError:
        raise ApiError(422, "InvalidDateError", f"date {body.date}: not a day of the calendar") from None
    fee = state.settings.fee_bps if body.fee_bps is None else body.fee_bps
    job_id = state.runner.submit("settle_metered", {"date": body.date, "fee_bps": fee})
    return session.get_one(Job, job_id)


@router.post(
    "/{period_id}/settle", response_model=JobPublic, status_code=202, responses=documented({}, JOB_LINK)
)
def resume_period(period_id: PathId, state: StateDep, session: SessionDep, _: OperatorDep) -> Job:
    """Advance a stored period as far as it can go (idempotent)."""
    if session.get(Period, period_id) is None:
        raise not_found(f"period {period_id}")
    job_id = state.runner.submit("resume", {"period_id": period_id})
    return session.get_one(Job, job_id)


@router.get(
    "",
    response_model=list[PeriodPublic],
    responses=documented(
        {},
        {
            200: {
                "GetPeriod": link("get_period", "the first period", period_id="$response.body#/0/id"),
                "GetEntries": link("list_entries", "its entries", period_id="$response.body#/0/id"),
                "ResumePeriod": link("resume_period", "advance it", period_id="$response.body#/0/id"),
            }
        },
    ),
)
def list_periods(
    session: SessionDep, _: AnyRoleDep, limit: Limit = 1000, offset: Offset = 0
) -> list[PeriodPublic]:
    return [
        _public(p) for p in session.scalars(select(Period).order_by(Period.id).limit(limit).offset(offset))
    ]


@router.get(
    "/{period_id}",
    response_model=PeriodPublic,
    responses=documented(
        {},
        {200: {"GetEntries": link("list_entries", "the period's entries", period_id="$response.body#/id")}},
    ),
)
def get_period(period_id: PathId, session: SessionDep, _: AnyRoleDep) -> PeriodPublic:
    period = session.get(Period, period_id)
    if period is None:
        raise not_found(f"period {period_id}")
    return _public(period)


@router.get(
    "/{period_id}/entries",
    response_model=list[EntryPublic],
    responses=documented(
        {},
        {
            200: {
                "GetProof": link(
                    "proof",
                    "the first entry's inclusion proof",
                    period_id="$response.body#/0/period_id",
                    entry_id="$response.body#/0/entry_id",
                ),
                "ClaimEntry": link(
                    "claim_entry",
                    "claim the first entry",
                    {"entry_id": "$response.body#/0/entry_id"},
                    period_id="$response.body#/0/period_id",
                ),
            }
        },
    ),
)
def list_entries(
    period_id: PathId, session: SessionDep, principal: AnyRoleDep, limit: Limit = 1000, offset: Offset = 0
) -> list[EntryPublic]:
    """A period's entries with their proofs; an owner key sees only its own."""
    query = select(PeriodEntry).where(PeriodEntry.period_id == period_id)
    if principal.owner_id is not None:
        query = query.where(PeriodEntry.owner_id == principal.owner_id)
    query = query.order_by(PeriodEntry.entry_id).limit(limit).offset(offset)
    return [_entry(e) for e in session.scalars(query)]


@router.post(
    "/{period_id}/claims", response_model=ClaimPublic, status_code=201, responses=documented({409: None})
)
def claim_entry(
    period_id: PathId, body: ClaimCreate, state: StateDep, session: SessionDep, principal: OwnerOrOperatorDep
) -> ClaimPublic:
    """Claim one entry now (the settler sends it on the owner's behalf); an owner may claim only its own."""
    entry = session.get(PeriodEntry, (period_id, body.entry_id))
    if entry is None:
        if principal.owner_id is not None:  # unknown and not-yours look the same to an owner key
            raise forbidden("entries")
        raise not_found(f"entry {body.entry_id} in period {period_id}")
    check_owner(principal, entry.owner_id, "entries")
    if entry.claimed:
        raise ApiError(409, "AlreadyClaimedError", f"entry {body.entry_id} of period {period_id} is claimed")
    period = session.get_one(Period, period_id)
    if period.challenge_ends is None:
        raise ApiError(409, "PeriodNotProposedError", f"period {period_id} is not proposed yet")
    from backend.api.work import policy

    session.rollback()  # the use case writes the entry in its own transaction
    tx = claim_entry_now(state.platform, policy(state, {}), period_id, body.entry_id)
    return ClaimPublic(period_id=period_id, entry_id=body.entry_id, tx_hash=tx)
