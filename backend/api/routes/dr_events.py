from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from backend.api.deps import OperatorDep, SessionDep
from backend.api.schemas import DrEventCreate, DrEventPublic
from backend.db.models import DrEventRow
from scheduler.inputs import DREvent

router = APIRouter(prefix="/dr-events", tags=["demand response"])


@router.post("", response_model=DrEventPublic, status_code=201)
def create_dr_event(body: DrEventCreate, session: SessionDep, _: OperatorDep) -> DrEventRow:
    """An OpenADR-style event: from ``start`` for ``duration_s``, site import at most ``import_limit_kw``."""
    DREvent(body.id, body.start, timedelta(seconds=body.duration_s), body.import_limit_kw)
    if session.get(DrEventRow, body.id) is not None:
        raise HTTPException(409, f"DR event {body.id} exists")
    row = DrEventRow(
        id=body.id, start=body.start, duration_s=body.duration_s, import_limit_kw=body.import_limit_kw
    )
    session.add(row)
    session.commit()
    return row


@router.get("", response_model=list[DrEventPublic])
def list_dr_events(session: SessionDep, _: OperatorDep) -> list[DrEventRow]:
    return list(session.scalars(select(DrEventRow).order_by(DrEventRow.start)))
