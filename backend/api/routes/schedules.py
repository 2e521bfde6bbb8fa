from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from backend.api.deps import OperatorDep, OwnerOrOperatorDep, PathId, SessionDep, StateDep
from backend.api.schemas import JobPublic, ScheduleCreate, SchedulePublic, TradePublic
from backend.api.work import problem_from_db
from backend.db.models import Job, ScheduleRun, ScheduleTrade

router = APIRouter(prefix="/schedules", tags=["schedules"])


@router.post("", response_model=JobPublic, status_code=202)
def create_schedule(body: ScheduleCreate, state: StateDep, session: SessionDep, _: OperatorDep) -> Job:
    """Schedule the stored fleet over a horizon, as a background job (poll ``/jobs/{id}``).

    The inputs are validated now: a misaligned horizon, missing prices, an unknown vehicle or an
    oversized fleet is refused with a named error before any job starts.
    """
    params = body.model_dump(mode="json")
    problem_from_db(session, params, state.settings.max_fleet)  # validate now, solve later
    job_id = state.runner.submit("schedule", params)
    return session.get_one(Job, job_id)


@router.get("/{schedule_id}", response_model=SchedulePublic)
def get_schedule(schedule_id: PathId, session: SessionDep, _: OwnerOrOperatorDep) -> ScheduleRun:
    run = session.get(ScheduleRun, schedule_id)
    if run is None:
        raise HTTPException(404, f"no schedule {schedule_id}")
    return run


@router.get("/{schedule_id}/trades", response_model=list[TradePublic])
def list_trades(
    schedule_id: PathId, session: SessionDep, principal: OwnerOrOperatorDep
) -> list[ScheduleTrade]:
    """The schedule's trades in whole Wh; an owner sees only its own."""
    if session.get(ScheduleRun, schedule_id) is None:
        raise HTTPException(404, f"no schedule {schedule_id}")
    query = select(ScheduleTrade).where(ScheduleTrade.schedule_id == schedule_id)
    if principal.owner_id is not None:
        query = query.where(ScheduleTrade.owner_id == principal.owner_id)
    return list(session.scalars(query.order_by(ScheduleTrade.interval_start, ScheduleTrade.session_id)))
