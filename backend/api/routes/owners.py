from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.api.addresses import owner_address
from backend.api.deps import (
    Limit,
    Offset,
    OperatorDep,
    OwnerOrOperatorDep,
    PathName,
    SessionDep,
    StateDep,
    check_owner,
    forbidden,
    not_found,
)
from backend.api.errors import ApiError
from backend.api.openapi import documented, link
from backend.api.schemas import (
    OwnerCreate,
    OwnerPublic,
    VehicleCreate,
    VehiclePublic,
    VehicleSettingsPublic,
    VehicleSettingsUpdate,
)
from backend.app.vehicles import InvalidSettingsError, check_vehicle, settings_of, update_settings
from backend.db.models import Owner, Vehicle
from backend.owners import system_addresses

router = APIRouter(tags=["owners and vehicles"])

OWNER_LINKS = {
    201: {
        "GetStatement": link("statement", "the new owner's statement", owner_id="$response.body#/id"),
        "GetBalance": link("balance", "the new owner's escrow balance", owner_id="$response.body#/id"),
    }
}


@router.post(
    "/owners",
    response_model=OwnerPublic,
    status_code=201,
    responses=documented(
        {
            409: ["AlreadyExistsError", "AddressInUseError", "SystemAddressError"],
            422: ["InvalidAddressError"],
        },
        OWNER_LINKS,
    ),
)
def create_owner(body: OwnerCreate, state: StateDep, session: SessionDep, _: OperatorDep) -> Owner:
    """An owner and the address its payouts go to (see the address rules on ``address``)."""
    address = owner_address(body.address, state.system_addresses() | system_addresses(session))
    if session.get(Owner, body.id) is not None:
        raise ApiError(409, "AlreadyExistsError", f"owner {body.id} exists")
    if session.scalar(select(Owner).where(Owner.address == address)) is not None:
        raise ApiError(409, "AddressInUseError", f"address {address} belongs to another owner")
    owner = Owner(id=body.id, address=address)
    session.add(owner)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request took the id or the address
        session.rollback()
        raise ApiError(409, "AlreadyExistsError", f"owner {body.id} or address {address} exists") from None
    return owner


@router.get(
    "/owners",
    response_model=list[OwnerPublic],
    responses=documented(
        {},
        {
            200: {
                "GetStatement": link(
                    "statement", "the first owner's statement", owner_id="$response.body#/0/id"
                ),
                "GetBalance": link("balance", "the first owner's balance", owner_id="$response.body#/0/id"),
            }
        },
    ),
)
def list_owners(
    session: SessionDep, principal: OwnerOrOperatorDep, limit: Limit = 1000, offset: Offset = 0
) -> list[Owner]:
    """Owners by id; an owner key sees only itself."""
    query = select(Owner).order_by(Owner.id)
    if principal.owner_id is not None:
        query = query.where(Owner.id == principal.owner_id)
    return list(session.scalars(query.limit(limit).offset(offset)))


@router.post(
    "/vehicles",
    response_model=VehiclePublic,
    status_code=201,
    responses=documented(
        {409: ["AlreadyExistsError"], 422: ["UnknownOwnerError", "InvalidParameterError"]},
        {201: {"GetVehicle": link("get_vehicle", "the new vehicle", vehicle_id="$response.body#/id")}},
    ),
)
def create_vehicle(body: VehicleCreate, session: SessionDep, _: OperatorDep) -> Vehicle:
    check_vehicle(body)  # the scheduler's own validation, named errors → 422
    if session.get(Owner, body.owner_id) is None:
        raise ApiError(422, "UnknownOwnerError", f"vehicle {body.id}: no owner {body.owner_id}")
    if session.get(Vehicle, body.id) is not None:
        raise ApiError(409, "AlreadyExistsError", f"vehicle {body.id} exists")
    vehicle = Vehicle(**body.model_dump())
    session.add(vehicle)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "AlreadyExistsError", f"vehicle {body.id} exists") from None
    return vehicle


@router.get(
    "/vehicles",
    response_model=list[VehiclePublic],
    responses=documented(
        {}, {200: {"GetVehicle": link("get_vehicle", "the first vehicle", vehicle_id="$response.body#/0/id")}}
    ),
)
def list_vehicles(
    session: SessionDep, principal: OwnerOrOperatorDep, limit: Limit = 1000, offset: Offset = 0
) -> list[Vehicle]:
    query = select(Vehicle).order_by(Vehicle.id)
    if principal.owner_id is not None:
        query = query.where(Vehicle.owner_id == principal.owner_id)
    return list(session.scalars(query.limit(limit).offset(offset)))


@router.get("/vehicles/{vehicle_id}", response_model=VehiclePublic)
def get_vehicle(vehicle_id: PathName, session: SessionDep, principal: OwnerOrOperatorDep) -> Vehicle:
    """A vehicle. An owner key gets 403 for any vehicle not its own, stored or not."""
    return _owned_vehicle(session, principal, vehicle_id)


@router.get(
    "/vehicles/{vehicle_id}/settings",
    response_model=VehicleSettingsPublic,
    responses=documented({404: ["NotFoundError"]}),
)
def get_vehicle_settings(vehicle_id: PathName, session: SessionDep, principal: OwnerOrOperatorDep) -> Any:
    """The owner's settings of a vehicle (defaults where none were given). An owner key gets 403 for any
    vehicle not its own."""
    return settings_of(session, _owned_vehicle(session, principal, vehicle_id))


@router.put(
    "/vehicles/{vehicle_id}/settings",
    response_model=VehicleSettingsPublic,
    responses=documented({404: ["NotFoundError"], 422: ["InvalidSettingsError"]}),
)
def put_vehicle_settings(
    vehicle_id: PathName,
    body: VehicleSettingsUpdate,
    session: SessionDep,
    principal: OwnerOrOperatorDep,
) -> Any:
    """Set a vehicle's departure (usual and next), target and minimum state of charge and V2G opt-in; the
    operations loop sees the change within seconds and re-plans with it."""
    vehicle = _owned_vehicle(session, principal, vehicle_id)
    try:
        settings = update_settings(session, vehicle, body.model_dump(exclude_unset=True))
    except InvalidSettingsError as exc:
        raise ApiError(422, "InvalidSettingsError", str(exc)) from None
    session.commit()
    return settings


def _owned_vehicle(session: SessionDep, principal: OwnerOrOperatorDep, vehicle_id: str) -> Vehicle:
    """The vehicle, if the key may see it: 404 for an operator when it is not stored, 403 for an owner key
    whenever it is not its own (stored or not: the two look the same)."""
    vehicle = session.get(Vehicle, vehicle_id)
    if vehicle is None:
        if principal.owner_id is not None:
            raise forbidden("vehicles")
        raise not_found(f"vehicle {vehicle_id}")
    check_owner(principal, vehicle.owner_id, "vehicles")
    return vehicle
