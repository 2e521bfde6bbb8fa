"""An owner's settings of a vehicle: one rule for the API (``PUT /vehicles/{id}/settings``) and the
portal's settings page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from backend.db.models import Vehicle, VehicleSettings
from backend.platform import PlatformError

DEFAULT_TIME_ZONE = "Europe/Amsterdam"


class InvalidSettingsError(PlatformError):
    """Settings that cannot hold together (a minimum above the target, a time zone that does not exist)."""


def settings_of(session: Session, vehicle: Vehicle) -> VehicleSettings:
    """The vehicle's settings, or the defaults (not stored) where none were given."""
    return session.get(VehicleSettings, vehicle.id) or VehicleSettings(
        vehicle_id=vehicle.id, time_zone=DEFAULT_TIME_ZONE, v2g=True, updated_at=datetime.now(UTC)
    )


def update_settings(session: Session, vehicle: Vehicle, changes: dict[str, Any]) -> VehicleSettings:
    """Apply ``changes`` (fields left out keep their value; ``None`` clears one) once the result holds
    together; :class:`InvalidSettingsError` otherwise, and nothing changes. The caller commits."""
    stored = session.get(VehicleSettings, vehicle.id)
    merged: dict[str, Any] = {
        "time_zone": DEFAULT_TIME_ZONE,
        "target_soc": None,
        "min_soc": None,
        **({k: getattr(stored, k) for k in ("time_zone", "target_soc", "min_soc")} if stored else {}),
        **changes,
    }
    try:
        ZoneInfo(merged["time_zone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSettingsError(
            f"time_zone {merged['time_zone']!r} is not a time zone (e.g. Europe/Amsterdam)"
        ) from None
    low, target = merged["min_soc"], merged["target_soc"]
    if low is not None and target is not None and low > target:
        raise InvalidSettingsError(f"min_soc {low} is above target_soc {target}")
    if low is not None and low > vehicle.soc_max:
        raise InvalidSettingsError(f"min_soc {low} is above the battery's usable {vehicle.soc_max}")
    settings = stored or VehicleSettings(vehicle_id=vehicle.id, time_zone=DEFAULT_TIME_ZONE, v2g=True)
    for name, value in changes.items():
        setattr(settings, name, value.astimezone(UTC) if isinstance(value, datetime) else value)
    settings.updated_at = datetime.now(UTC)
    session.add(settings)
    return settings


def check_vehicle(body: Any) -> None:
    """A vehicle as the scheduler takes it (its own checks, named errors: ``InvalidParameterError``, ...),
    before any door stores it: ``POST /vehicles`` and ``v2g vehicles import`` alike."""
    from scheduler.inputs import Vehicle as Ev

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
    )
