from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import select

from backend.api.deps import Limit, Offset, OperatorDep, SessionDep
from backend.api.errors import ApiError
from backend.api.openapi import documented
from backend.api.schemas import DrEventCreate, DrEventPublic
from backend.db.models import DrEventRow, SiteRow
from scheduler.inputs import DREvent

router = APIRouter(prefix="/dr-events", tags=["demand response"])


@router.post(
    "",
    response_model=DrEventPublic,
    status_code=201,
    responses=documented({409: ["AlreadyExistsError"], 422: ["InvalidParameterError", "UnknownSiteError"]}),
)
def create_dr_event(body: DrEventCreate, session: SessionDep, _: OperatorDep) -> DrEventRow:
    """An OpenADR-style event: from ``start`` for ``duration_s``, the import of the site ``site_id`` (none:
    the operations loop's own connection) at most ``import_limit_kw``."""
    DREvent(body.id, body.start, timedelta(seconds=body.duration_s), body.import_limit_kw)
    if session.get(DrEventRow, body.id) is not None:
        raise ApiError(409, "AlreadyExistsError", f"DR event {body.id} exists")
    if body.site_id is not None and session.get(SiteRow, body.site_id) is None:
        raise ApiError(422, "UnknownSiteError", f"site_id {body.site_id}: no such site (v2g sites import)")
    row = DrEventRow(
        id=body.id,
        start=body.start,
        duration_s=body.duration_s,
        import_limit_kw=body.import_limit_kw,
        site_id=body.site_id,
    )
    session.add(row)
    session.commit()
    return row


@router.get("", response_model=list[DrEventPublic])
def list_dr_events(
    session: SessionDep, _: OperatorDep, limit: Limit = 1000, offset: Offset = 0
) -> list[DrEventRow]:
    query = select(DrEventRow).order_by(DrEventRow.start, DrEventRow.id)
    return list(session.scalars(query.limit(limit).offset(offset)))
