"""OCPP-J conformance over real websockets: the CALLERROR code of each kind of bad CALL, on both versions;
the registered OCPP version enforced at the handshake; timestamps checked against the transaction's own
history and the CSMS's clock."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from backend.db.models import FieldRejection, OcppTransaction
from backend.operations.auth import basic_header
from tests.operations.hostile import DAY, PASSWORD, Field, hostile_field, register_value

BOOT = {"reason": "PowerUp", "chargingStation": {"model": "M1", "vendorName": "V"}}


def boot(**changes: Any) -> list[Any]:
    """A BootNotification CALL with ``changes`` to its payload (None: the field removed)."""
    payload = {**BOOT, **changes}
    return [2, "c1", "BootNotification", {k: v for k, v in payload.items() if v is not None}]


#: (what the station sends, the code the CSMS must answer): one case per OCPP-J error code.
CASES: list[tuple[str, Any, str]] = [
    ("not JSON", "this is not json", "RpcFrameworkError"),
    ("not an OCPP-J message", {"hello": 1}, "RpcFrameworkError"),
    ("a CALL without payload", [2, "c1", "Heartbeat"], "RpcFrameworkError"),
    ("a message type no version defines", [9, "c1", "Heartbeat", {}], "MessageTypeNotSupported"),
    ("a property the schema does not define", boot(extra=1), "FormatViolation"),
    ("a payload that is not an object", [2, "c1", "Heartbeat", [1, 2]], "ProtocolError"),
    ("an action no OCPP version defines", [2, "c1", "FlyToTheMoon", {}], "NotImplemented"),
    (
        "an action of the version the CSMS does not handle",
        [2, "c1", "FirmwareStatusNotification", {"status": "Idle"}],
        "NotSupported",
    ),
    ("a required field missing", boot(reason=None), "OccurrenceConstraintViolation"),
    (
        "a field of the wrong type",
        boot(chargingStation={"model": 5, "vendorName": "V"}),
        "TypeConstraintViolation",
    ),
    (
        "a string too long",
        boot(chargingStation={"model": "M" * 21, "vendorName": "V"}),
        "TypeConstraintViolation",
    ),
    ("a value outside its enumeration", boot(reason="Bored"), "PropertyConstraintViolation"),
]


def _run(tmp_path: Path, case: Any) -> None:
    async def go() -> None:
        async with hostile_field(f"sqlite:///{tmp_path / 'field.sqlite'}") as field:
            await case(field)

    asyncio.run(go())


def _station(version: str) -> str:
    return "st21" if version == "2.1" else "st201"


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_every_kind_of_bad_call_gets_its_ocpp_j_error_code(tmp_path: Path, version: str) -> None:
    async def case(field: Field) -> None:
        async with field.station(_station(version)) as st:
            for name, sent, code in CASES:
                await st.websocket.send(sent if isinstance(sent, str) else json.dumps(sent))
                answer = json.loads(await asyncio.wait_for(st.websocket.recv(), 10))
                assert answer[0] == 4 and answer[2] == code, (name, answer)
                assert answer[1] == (sent[1] if isinstance(sent, list) else "-1"), (name, answer)
            # never answered: a 2.1 SEND, a response without its payload (answered: 2.0.1's unknown type 6)
            await st.websocket.send(json.dumps([6, "s1", "NotifyPeriodicEventStream", {"id": 1}]))
            await st.websocket.send(json.dumps([3, "r1"]))
            if version == "2.0.1":
                answer = json.loads(await asyncio.wait_for(st.websocket.recv(), 10))
                assert answer[:3] == [4, "s1", "MessageTypeNotSupported"], answer
            # a good CALL after all of them is answered as ever, and its answer is the very next message
            await st.websocket.send(json.dumps([2, "hb", "Heartbeat", {}]))
            answer = json.loads(await asyncio.wait_for(st.websocket.recv(), 10))
            assert answer[:2] == [3, "hb"], answer
        with field.sessions() as db:
            named = db.scalar(
                select(func.count())
                .select_from(FieldRejection)
                .where(FieldRejection.station_id == _station(version))
            )
        assert named == len(CASES) + 2  # each refusal recorded by name, the unanswered ones too

    _run(tmp_path, case)


async def _connect(field: Field, station_id: str, offered: list[str]) -> Any:
    return await connect(
        f"ws://127.0.0.1:{field.csms.port}/{station_id}",
        subprotocols=[Subprotocol(p) for p in offered],
        additional_headers={"Authorization": basic_header(station_id, PASSWORD)},
        ping_interval=None,
    )


def test_a_station_speaks_the_ocpp_version_it_is_registered_for(tmp_path: Path) -> None:
    async def case(field: Field) -> None:
        # offered both: the registered one is chosen, whatever the order
        async with await _connect(field, "st201", ["ocpp2.1", "ocpp2.0.1"]) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
        async with await _connect(field, "st21", ["ocpp2.0.1", "ocpp2.1"]) as ws:
            assert ws.subprotocol == "ocpp2.1"
        # offered only the other version: refused, by name
        with pytest.raises((InvalidHandshake, ConnectionClosed)):
            ws = await _connect(field, "st201", ["ocpp2.1"])
            await asyncio.wait_for(ws.recv(), 10)
        with field.sessions() as db:
            [refusal] = db.scalars(
                select(FieldRejection).where(FieldRejection.kind == "OcppVersionMismatchError")
            )
        assert "registered for OCPP 2.0.1" in refusal.detail and "ocpp2.1" in refusal.detail

    _run(tmp_path, case)


def test_a_start_in_the_future_and_an_end_before_the_start_are_named_and_never_stored(tmp_path: Path) -> None:
    async def case(field: Field) -> None:
        now = DAY + timedelta(hours=8)
        field.clock.now = now
        async with field.station("st201") as st:
            ahead = now + timedelta(hours=2)
            assert (await st.event("Started", "ahead", ahead, [register_value(ahead, 0)], token="TOKEN0"))[
                0
            ] == 3
            start = now - timedelta(minutes=30)
            await st.event("Started", "back", start, [register_value(start, 0)], token="TOKEN1", evse=2)
            end = start - timedelta(hours=1)
            await st.event("Ended", "back", end, [], evse=2)
        with field.sessions() as db:
            ahead_tx = db.get_one(OcppTransaction, ("st201", "ahead"))
            back_tx = db.get_one(OcppTransaction, ("st201", "back"))
            kinds = dict(
                db.execute(select(FieldRejection.kind, func.count()).group_by(FieldRejection.kind)).all()
            )
        assert ahead_tx.started_at == now  # the CSMS's time, not two hours ahead
        assert back_tx.ended_at == back_tx.started_at == start  # never an end before the start
        assert kinds.get("FutureTimestampError") == 1 and kinds.get("EndBeforeStartError") == 1

    _run(tmp_path, case)
