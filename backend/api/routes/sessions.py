from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from backend.api.deps import Limit, OperatorDep, OwnerOrOperatorDep, SessionDep
from backend.api.schemas import SessionCreate, SessionPublic
from backend.db.models import PlugSession, Vehicle
from scheduler.errors import OverlappingSessionsError, TargetAboveCapacityError, UnknownVehicleError
from scheduler.inputs import Session as PlugIn

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.post("", response_model=SessionPublic, status_code=201)
def create_session(body: SessionCreate, session: SessionDep, _: OperatorDep) -> PlugSession:
    """Record a plug-in.

    Refused with a named error: unknown vehicle, departure before arrival, target or arrival energy
    above the battery, overlap with another plug-in of the same vehicle.
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
        raise HTTPException(409, f"session {body.id} exists")
    overlap = session.scalar(
        select(PlugSession).where(
            PlugSession.vehicle_id == body.vehicle_id,
            PlugSession.arrival < plug.departure,
            PlugSession.departure > plug.arrival,
        )
    )
    if overlap is not None:
        raise OverlappingSessionsError(
            f"vehicle {body.vehicle_id}: sessions {overlap.id} and {body.id} overlap"
        )
    row = PlugSession(
        id=body.id,
        vehicle_id=body.vehicle_id,
        arrival=plug.arrival,
        departure=plug.departure,
        arrival_kwh=body.arrival_kwh,
        target_kwh=body.target_kwh,
    )
    session.add(row)
    session.commit()
    return row


@router.get("", response_model=list[SessionPublic])
def list_sessions(
    session: SessionDep, principal: OwnerOrOperatorDep, limit: Limit = 1000, offset: int = 0
) -> list[PlugSession]:
    query = select(PlugSession).order_by(PlugSession.arrival, PlugSession.id)
    if principal.owner_id is not None:
        query = query.join(Vehicle).where(Vehicle.owner_id == principal.owner_id)
    return list(session.scalars(query.limit(max(1, min(limit, 10_000))).offset(max(0, offset))))
