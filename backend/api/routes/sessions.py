from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.api.deps import (
    Limit,
    Offset,
    OperatorDep,
    OwnerOrOperatorDep,
    PathName,
    SessionDep,
    check_owner,
    forbidden,
    not_found,
)
from backend.api.errors import ApiError
from backend.api.openapi import documented, link
from backend.api.schemas import SessionCreate, SessionPublic
from backend.db.models import PlugSession, SettledTradeRow, Vehicle
from scheduler.errors import TargetAboveCapacityError, UnknownVehicleError
from scheduler.inputs import Session as PlugIn

router = APIRouter(prefix="/sessions", tags=["sessions"])

#: What the database says when it refuses a plug-in (the migration 0004 trigger's message on SQLite,
#: the exclusion constraint's name on PostgreSQL) or the cancellation of a settled one.
OVERLAP_MARKERS = ("OverlappingSessionsError", "plug_sessions_no_overlap")
SETTLED_MARKER = "SessionSettledError"

SESSION_LINKS = {
    "GetSession": link("get_session", "the new plug-in", session_id="$response.body#/id"),
    "CancelSession": link("cancel_session", "cancel the new plug-in", session_id="$response.body#/id"),
    "GetVehicle": link("get_vehicle", "the plugged-in vehicle", vehicle_id="$response.body#/vehicle_id"),
}


def _overlap(session: SessionDep, row: PlugSession) -> ApiError:
    other = session.scalar(
        select(PlugSession.id).where(
            PlugSession.vehicle_id == row.vehicle_id,
            PlugSession.arrival < row.departure,
            PlugSession.departure > row.arrival,
        )
    )
    return ApiError(
        409,
        "OverlappingSessionsError",
        f"vehicle {row.vehicle_id}: session {row.id} overlaps "
        + (f"session {other}" if other else "another"),
    )


@router.post(
    "",
    response_model=SessionPublic,
    status_code=201,
    responses=documented(
        {
            409: ["AlreadyExistsError", "OverlappingSessionsError"],
            422: [
                "UnknownVehicleError",
                "DepartureBeforeArrivalError",
                "TargetAboveCapacityError",
                "InvalidParameterError",
            ],
        },
        {201: SESSION_LINKS},
    ),
)
def create_session(body: SessionCreate, session: SessionDep, _: OperatorDep) -> PlugSession:
    """Record a plug-in.

    Refused with a named error: unknown vehicle, departure not after arrival, target or arrival energy
    above the battery (422); an id in use, or an overlap with another plug-in of the same vehicle (409).
    No two plug-ins of one vehicle overlap: the database refuses the second one (a trigger on SQLite,
    an exclusion constraint on PostgreSQL), so two concurrent requests cannot both be stored.
    """
    vehicle = session.get(Vehicle, body.vehicle_id)
    if vehicle is None:
        raise UnknownVehicleError(f"session {body.id}: unknown vehicle {body.vehicle_id!r}")
    plug = PlugIn(body.id, body.vehicle_id, body.arrival, body.departure, body.arrival_kwh, body.target_kwh)
    usable = vehicle.soc_max * vehicle.battery_kwh
    if body.target_kwh > usable + 1e-9:
        raise TargetAboveCapacityError(f"session {body.id}: target {body.target_kwh} kWh above {usable} kWh")
    if body.arrival_kwh > vehicle.battery_kwh:
        raise TargetAboveCapacityError(f"session {body.id}: arrival energy above the battery")
    if session.get(PlugSession, body.id) is not None:
        raise ApiError(409, "AlreadyExistsError", f"session {body.id} exists")
    row = PlugSession(
        id=body.id,
        vehicle_id=body.vehicle_id,
        arrival=plug.arrival,
        departure=plug.departure,
        arrival_kwh=body.arrival_kwh,
        target_kwh=body.target_kwh,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        if any(marker in str(exc.orig) for marker in OVERLAP_MARKERS):
            raise _overlap(session, row) from None
        if session.get(PlugSession, body.id) is not None:  # a concurrent request took the id
            raise ApiError(409, "AlreadyExistsError", f"session {body.id} exists") from None
        raise
    return row


@router.get(
    "",
    response_model=list[SessionPublic],
    responses=documented(
        {}, {200: {"GetSession": link("get_session", "the first plug-in", session_id="$response.body#/0/id")}}
    ),
)
def list_sessions(
    session: SessionDep, principal: OwnerOrOperatorDep, limit: Limit = 1000, offset: Offset = 0
) -> list[PlugSession]:
    """Plug-ins by arrival; an owner key sees only its own vehicles'."""
    query = select(PlugSession).order_by(PlugSession.arrival, PlugSession.id)
    if principal.owner_id is not None:
        query = query.join(Vehicle).where(Vehicle.owner_id == principal.owner_id)
    return list(session.scalars(query.limit(limit).offset(offset)))


def _owned(session: SessionDep, principal: OwnerOrOperatorDep, session_id: str) -> PlugSession:
    row = session.get(PlugSession, session_id)
    if principal.owner_id is not None:  # ownership first: unknown and not-yours look the same
        owner = (
            None
            if row is None
            else session.scalar(select(Vehicle.owner_id).where(Vehicle.id == row.vehicle_id))
        )
        if owner is None:
            raise forbidden("sessions")
        check_owner(principal, owner, "sessions")
    if row is None:
        raise not_found(f"session {session_id}")
    return row


@router.get("/{session_id}", response_model=SessionPublic)
def get_session(session_id: PathName, session: SessionDep, principal: OwnerOrOperatorDep) -> PlugSession:
    """A plug-in. An owner key gets 403 for any plug-in not its own, stored or not."""
    return _owned(session, principal, session_id)


@router.delete("/{session_id}", status_code=204, responses=documented({409: [SETTLED_MARKER]}))
def cancel_session(session_id: PathName, session: SessionDep, _: OperatorDep) -> Response:
    """Cancel a plug-in recorded by mistake, while none of its energy is in a settlement period (409
    ``SessionSettledError`` after that; the database refuses it too). Schedules already computed with
    it keep their trades: schedule the day again before settling it."""
    row = session.get(PlugSession, session_id)
    if row is None:
        raise not_found(f"session {session_id}")
    settled = session.scalar(
        select(SettledTradeRow.period_id).where(SettledTradeRow.session_id == session_id)
    )
    if settled is not None:
        raise ApiError(409, SETTLED_MARKER, f"session {session_id} is settled in period {settled}")
    session.delete(row)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        if SETTLED_MARKER in str(exc.orig):
            raise ApiError(409, SETTLED_MARKER, f"session {session_id} was settled meanwhile") from None
        raise
    return Response(status_code=204)
