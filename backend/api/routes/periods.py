from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from backend.api.deps import AnyRoleDep, OperatorDep, OwnerOrOperatorDep, PathId, SessionDep, StateDep
from backend.api.schemas import ClaimCreate, ClaimPublic, EntryPublic, JobPublic, PeriodCreate, PeriodPublic
from backend.chain.contracts import SettlementClient
from backend.db.models import Job, Period, PeriodEntry, ScheduleRun

router = APIRouter(prefix="/periods", tags=["settlement periods"])


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


@router.post("", response_model=JobPublic, status_code=202)
def create_period(body: PeriodCreate, state: StateDep, session: SessionDep, _: OperatorDep) -> Job:
    """Settle a schedule's trades: build the period, sign, propose, finalise, claim (background job;
    on a real chain it stops while the challenge window is open: POST ``/periods/{id}/settle`` later)."""
    if session.get(ScheduleRun, body.schedule_id) is None:
        raise HTTPException(404, f"no schedule {body.schedule_id}")
    job_id = state.runner.submit("settle", body.model_dump())
    return session.get_one(Job, job_id)


@router.post("/{period_id}/settle", response_model=JobPublic, status_code=202)
def resume_period(period_id: PathId, state: StateDep, session: SessionDep, _: OperatorDep) -> Job:
    """Advance a stored period as far as it can go (idempotent)."""
    if session.get(Period, period_id) is None:
        raise HTTPException(404, f"no period {period_id}")
    job_id = state.runner.submit("resume", {"period_id": period_id})
    return session.get_one(Job, job_id)


@router.get("", response_model=list[PeriodPublic])
def list_periods(session: SessionDep, _: AnyRoleDep) -> list[PeriodPublic]:
    return [_public(p) for p in session.scalars(select(Period).order_by(Period.id))]


@router.get("/{period_id}", response_model=PeriodPublic)
def get_period(period_id: PathId, session: SessionDep, _: AnyRoleDep) -> PeriodPublic:
    period = session.get(Period, period_id)
    if period is None:
        raise HTTPException(404, f"no period {period_id}")
    return _public(period)


@router.get("/{period_id}/entries", response_model=list[EntryPublic])
def list_entries(period_id: PathId, session: SessionDep, principal: AnyRoleDep) -> list[EntryPublic]:
    query = select(PeriodEntry).where(PeriodEntry.period_id == period_id)
    if principal.owner_id is not None:
        query = query.where(PeriodEntry.owner_id == principal.owner_id)
    return [_entry(e) for e in session.scalars(query.order_by(PeriodEntry.entry_id))]


@router.post("/{period_id}/claims", response_model=ClaimPublic, status_code=201)
def claim_entry(
    period_id: PathId, body: ClaimCreate, state: StateDep, session: SessionDep, principal: OwnerOrOperatorDep
) -> ClaimPublic:
    """Claim one entry now (the settler sends it on the owner's behalf); an owner may claim only its own."""
    entry = session.get(PeriodEntry, (period_id, body.entry_id))
    if entry is None:
        raise HTTPException(404, f"no entry {body.entry_id} in period {period_id}")
    if not principal.may_see_owner(entry.owner_id):
        raise HTTPException(403, "owners may claim only their own entries")
    if entry.claimed:
        raise HTTPException(409, f"entry {body.entry_id} of period {period_id} is already claimed")
    period = session.get_one(Period, period_id)
    if period.challenge_ends is None:
        raise HTTPException(409, f"period {period_id} is not proposed yet")
    from backend.api.work import settlement_job

    with state.chain_lock:
        header = settlement_job(state).header(period)
        settlement = SettlementClient.at(state.chain, state.record.settlement)
        proof = [bytes.fromhex(p[2:]) for p in entry.proof]
        receipt = settlement.claim(
            state.actors.settler, period_id, header, entry.entry_id, entry.address, entry.amount, proof
        )
    tx = "0x" + bytes(receipt["transactionHash"]).hex()
    entry.claimed = True
    entry.claim_tx = tx
    session.commit()
    return ClaimPublic(period_id=period_id, entry_id=body.entry_id, tx_hash=tx)
