from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import OperatorDep, PathId, SessionDep, not_found
from backend.api.schemas import JobPublic
from backend.db.models import Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: PathId, session: SessionDep, _: OperatorDep) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise not_found(f"job {job_id}")
    return job
