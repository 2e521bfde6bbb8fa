from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import select

from backend.api.deps import OperatorDep, OwnerOrOperatorDep, PathId, SessionDep, StateDep, not_found
from backend.api.errors import ApiError, named_errors
from backend.api.openapi import documented, link
from backend.api.schemas import JobPublic, ScheduleCreate, SchedulePublic, TradePublic
from backend.api.work import problem_from_db
from backend.db.models import Job, Period, ScheduleRun, ScheduleTrade
from scheduler.errors import SchedulerError

router = APIRouter(prefix="/schedules", tags=["schedules"])

SCHEDULER_ERRORS = named_errors(SchedulerError)


@router.post(
    "",
    response_model=JobPublic,
    status_code=202,
    responses=documented(
        {409: ["AlreadySettledError"], 422: SCHEDULER_ERRORS},
        {202: {"GetJob": link("get_job", "the scheduling job", job_id="$response.body#/id")}},
    ),
)
def create_schedule(body: ScheduleCreate, state: StateDep, session: SessionDep, _: OperatorDep) -> Job:
    """Schedule the stored fleet over a horizon, as a background job (poll ``/jobs/{id}``).

    The inputs are validated now: a misaligned horizon, missing prices, an unknown vehicle or an
    oversized fleet is refused with a named error (422) before any job starts, and so is a horizon
    that overlaps a settlement period (409 ``AlreadySettledError``: settled trades are final).
    """
    start = body.start
    end = start + timedelta(minutes=body.intervals * body.interval_minutes)
    settled = session.scalar(
        select(Period).where(Period.starts_at < end, Period.ends_at > start).order_by(Period.id)
    )
    if settled is not None:
        raise ApiError(
            409,
            "AlreadySettledError",
            f"the horizon overlaps settlement period {settled.id} ({settled.status}, "
            f"{settled.starts_at.isoformat()} to {settled.ends_at.isoformat()}); its trades are final",
        )
    params = body.model_dump(mode="json")
    problem_from_db(session, params, state.settings.max_fleet)  # validate now, solve later
    job_id = state.runner.submit("schedule", params)
    return session.get_one(Job, job_id)


@router.get(
    "/{schedule_id}",
    response_model=SchedulePublic,
    responses=documented(
        {},
        {
            200: {
                "GetTrades": link("list_trades", "the schedule's trades", schedule_id="$response.body#/id"),
                "GetJob": link("get_job", "the job that computed it", job_id="$response.body#/job_id"),
            }
        },
    ),
)
def get_schedule(schedule_id: PathId, session: SessionDep, _: OwnerOrOperatorDep) -> ScheduleRun:
    """A schedule's figures (fleet totals, no owner's data)."""
    run = session.get(ScheduleRun, schedule_id)
    if run is None:
        raise not_found(f"schedule {schedule_id}")
    return run


@router.get("/{schedule_id}/trades", response_model=list[TradePublic])
def list_trades(
    schedule_id: PathId, session: SessionDep, principal: OwnerOrOperatorDep
) -> list[ScheduleTrade]:
    """The schedule's trades in whole Wh; an owner sees only its own."""
    if session.get(ScheduleRun, schedule_id) is None:
        raise not_found(f"schedule {schedule_id}")
    query = select(ScheduleTrade).where(ScheduleTrade.schedule_id == schedule_id)
    if principal.owner_id is not None:
        query = query.where(ScheduleTrade.owner_id == principal.owner_id)
    return list(session.scalars(query.order_by(ScheduleTrade.interval_start, ScheduleTrade.session_id)))
