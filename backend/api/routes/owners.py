from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from backend.api.deps import ApiError, OperatorDep, OwnerOrOperatorDep, SessionDep
from backend.api.schemas import OwnerCreate, OwnerPublic, VehicleCreate, VehiclePublic
from backend.db.models import Owner, Vehicle
from scheduler.inputs import Vehicle as Ev

router = APIRouter(tags=["owners and vehicles"])


@router.post("/owners", response_model=OwnerPublic, status_code=201)
def create_owner(body: OwnerCreate, session: SessionDep, _: OperatorDep) -> Owner:
    if session.get(Owner, body.id) is not None:
        raise HTTPException(409, f"owner {body.id} exists")
    if session.scalar(select(Owner).where(Owner.address == body.address)) is not None:
        raise HTTPException(409, f"address {body.address} belongs to another owner")
    owner = Owner(id=body.id, address=body.address)
    session.add(owner)
    session.commit()
    return owner


@router.get("/owners", response_model=list[OwnerPublic])
def list_owners(session: SessionDep, principal: OwnerOrOperatorDep) -> list[Owner]:
    query = select(Owner).order_by(Owner.id)
    if principal.owner_id is not None:
        query = query.where(Owner.id == principal.owner_id)
    return list(session.scalars(query))


@router.post("/vehicles", response_model=VehiclePublic, status_code=201)
def create_vehicle(body: VehicleCreate, session: SessionDep, _: OperatorDep) -> Vehicle:
    if session.get(Owner, body.owner_id) is None:
        raise ApiError(422, "UnknownOwnerError", f"vehicle {body.id}: no owner {body.owner_id}")
    if session.get(Vehicle, body.id) is not None:
        raise HTTPException(409, f"vehicle {body.id} exists")
    Ev(
        body.id,
        body.owner_id,
        body.battery_kwh,
        body.charge_kw,
        body.discharge_kw,
        body.soc_min,
        body.soc_max,
        body.eta_charge,
        body.eta_discharge,
    )  # the scheduler's own validation, named errors → 422
    vehicle = Vehicle(**body.model_dump())
    session.add(vehicle)
    session.commit()
    return vehicle


@router.get("/vehicles", response_model=list[VehiclePublic])
def list_vehicles(session: SessionDep, principal: OwnerOrOperatorDep) -> list[Vehicle]:
    query = select(Vehicle).order_by(Vehicle.id)
    if principal.owner_id is not None:
        query = query.where(Vehicle.owner_id == principal.owner_id)
    return list(session.scalars(query))


@router.get("/vehicles/{vehicle_id}", response_model=VehiclePublic)
def get_vehicle(vehicle_id: str, session: SessionDep, principal: OwnerOrOperatorDep) -> Vehicle:
    vehicle = session.get(Vehicle, vehicle_id)
    if vehicle is None:
        raise HTTPException(404, f"no vehicle {vehicle_id}")
    if not principal.may_see_owner(vehicle.owner_id):
        raise HTTPException(403, "owners see only their own vehicles")
    return vehicle
