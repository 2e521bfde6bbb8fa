from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from backend.api.deps import Limit, Offset, OperatorDep, PathId, SessionDep, not_found
from backend.api.schemas import JobPublic
from backend.db.models import Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=list[JobPublic])
def list_jobs(
    session: SessionDep,
    _: OperatorDep,
    kind: Annotated[str | None, Query(max_length=32, description="e.g. settle_metered, resume")] = None,
    status: Annotated[Literal["queued", "running", "succeeded", "failed"] | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[Job]:
    """The jobs, newest first: the API's own and the service's on the market's clock (settle each ended
    day, finalise and claim, import prices), with their parameters, outcome and attempts."""
    query = select(Job).order_by(Job.id.desc())
    if kind is not None:
        query = query.where(Job.kind == kind)
    if status is not None:
        query = query.where(Job.status == status)
    return list(session.scalars(query.limit(limit).offset(offset)))


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: PathId, session: SessionDep, _: OperatorDep) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise not_found(f"job {job_id}")
    return job
