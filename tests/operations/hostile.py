"""A field to attack: a database with a registry, the CSMS on loopback with a clock the test sets, and
stations that send exactly the frames a test writes (raw OCPP-J over real websockets)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_keys.datatypes import PrivateKey
from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from backend.db.models import IdTokenRow, Owner, PricePoint, Station, Vehicle
from backend.db.session import migrate, session_factory
from backend.operations.auth import basic_header, hash_password
from backend.operations.csms import Csms, iso
from backend.operations.field import EXPORT, IMPORT, sign_meter_value

DAY = datetime(2023, 7, 2, tzinfo=UTC)
PASSWORD = "a station's own password"
METER_KEY = b"\x07" * 32


@dataclass
class Clock:
    now: datetime = DAY + timedelta(hours=8)

    def __call__(self) -> datetime:
        return self.now


def register(sessions: sessionmaker[Session], versions: tuple[str, ...] = ("2.0.1", "2.1")) -> None:
    """Two owners' cars; per protocol an 11 kW station that does not sign and one whose meter signs."""
    import pandas as pd

    from scheduler.datasets import load_prices

    hourly = load_prices().window(DAY - timedelta(days=2), DAY + timedelta(days=40))
    with sessions.begin() as db:
        for k in range(2):
            db.add(Owner(id=f"owner-{k}", address="0x" + f"{k + 1:040x}"))
            db.flush()
            db.add(Vehicle(id=f"car-{k}", owner_id=f"owner-{k}", battery_kwh=60.0, charge_kw=11.0))
            db.flush()
            db.add(IdTokenRow(token=f"TOKEN{k}", vehicle_id=f"car-{k}"))
        for version in versions:
            tag = version.replace(".", "")
            for signs in (False, True):
                db.add(
                    Station(
                        id=f"st{tag}{'s' if signs else ''}",
                        ocpp_version=version,
                        can_discharge=version == "2.1",
                        evses=2,
                        periods_per_schedule=24,
                        meter_public_key=PrivateKey(METER_KEY).public_key.to_bytes().hex() if signs else None,
                        max_power_kw=11.0,
                        password_hash=hash_password(PASSWORD),
                        boots=0,
                    )
                )
        for utc, eur in zip(pd.DatetimeIndex(hourly.index), hourly.to_numpy(), strict=True):
            db.add(PricePoint(utc=utc.to_pydatetime(), eur_mwh=float(eur)))


def register_value(
    at: datetime,
    import_wh: float | None,
    export_wh: float | None = None,
    *,
    transaction_id: str | None = None,
    sign: bool = False,
    signed_at: datetime | None = None,
) -> dict[str, Any]:
    """One ``meterValue`` (camelCase, as on the wire) with the registers given."""
    sampled: list[dict[str, Any]] = []
    if import_wh is not None:
        sampled.append({"value": import_wh, "measurand": IMPORT, "unitOfMeasure": {"unit": "Wh"}})
    if export_wh is not None:
        sampled.append({"value": export_wh, "measurand": EXPORT, "unitOfMeasure": {"unit": "Wh"}})
    if sign:
        assert transaction_id is not None
        signed = sign_meter_value(
            METER_KEY, transaction_id, iso(signed_at or at), int(import_wh or 0), int(export_wh or 0)
        )
        sampled[0]["signedMeterValue"] = {
            "signedMeterData": signed["signed_meter_data"],
            "signingMethod": signed["signing_method"],
            "encodingMethod": signed["encoding_method"],
            "publicKey": signed["public_key"],
        }
    return {"timestamp": iso(at), "sampledValue": sampled}


def as_schema_owner(db: Session, statement: str) -> None:
    """Run an UPDATE or DELETE on the evidence tables as someone who can change the schema: the database's
    append-only guard (migration 0009) lifted first, as such an attacker would."""
    from sqlalchemy import text

    from backend.db.guards import append_only_statements

    assert db.bind is not None
    for ddl in append_only_statements(db.bind.dialect.name, install=False):
        db.execute(text(ddl))
    db.execute(text(statement))


@dataclass
class StationLink:
    station_id: str
    version: str
    websocket: ClientConnection
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    seq_no: itertools.count[int] = field(default_factory=itertools.count)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        unique = f"m{next(self.ids)}"
        await self.websocket.send(json.dumps([2, unique, action, payload]))
        while True:
            answer = json.loads(await asyncio.wait_for(self.websocket.recv(), 30))
            if answer[0] in (3, 4) and answer[1] == unique:
                return list(answer)

    async def event(
        self,
        event_type: str,
        transaction_id: str,
        at: datetime,
        meter_values: list[dict[str, Any]],
        *,
        token: str | None = None,
        evse: int = 1,
        seq_no: int | None = None,
        offline: bool = False,
    ) -> list[Any]:
        payload: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": iso(at),
            "triggerReason": "MeterValuePeriodic" if event_type == "Updated" else "Authorized",
            "seqNo": next(self.seq_no) if seq_no is None else seq_no,
            "transactionInfo": {"transactionId": transaction_id},
            "evse": {"id": evse, "connectorId": 1},
            "meterValue": meter_values,
        }
        if token is not None:
            payload["idToken"] = {"idToken": token, "type": "ISO14443"}
        if event_type == "Ended":
            payload["transactionInfo"]["stoppedReason"] = "EVDisconnected"
        if offline:
            payload["offline"] = True
        return await self.call("TransactionEvent", payload)

    async def meter_values(self, evse: int, meter_values: list[dict[str, Any]]) -> list[Any]:
        return await self.call("MeterValues", {"evseId": evse, "meterValue": meter_values})


@dataclass
class Field:
    database_url: str
    sessions: sessionmaker[Session]
    csms: Csms
    clock: Clock

    @asynccontextmanager
    async def station(self, station_id: str) -> AsyncIterator[StationLink]:
        version = "2.1" if station_id.startswith("st21") else "2.0.1"
        websocket = await connect(
            f"ws://127.0.0.1:{self.csms.port}/{station_id}",
            subprotocols=[Subprotocol("ocpp2.1" if version == "2.1" else "ocpp2.0.1")],
            additional_headers={"Authorization": basic_header(station_id, PASSWORD)},
            ping_interval=None,
        )
        try:
            yield StationLink(station_id, version, websocket)
        finally:
            await websocket.close()


@asynccontextmanager
async def hostile_field(url: str) -> AsyncIterator[Field]:
    migrate(url)
    sessions = session_factory(url)
    register(sessions)
    clock = Clock()
    csms = Csms(sessions, clock)
    await csms.start()
    try:
        yield Field(url, sessions, csms, clock)
    finally:
        await csms.stop()
