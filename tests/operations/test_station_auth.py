"""Stations prove who they are (OCPP 2.0.1 security profiles 1 and 2), over real websockets on loopback:
HTTP Basic at the handshake (401 and a named refusal otherwise), the same over TLS with a throwaway CA,
one connection per station id, and passwords set and rotated from the command line (stored hashed)."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from backend.cli import app
from backend.db.models import FieldRejection, MeterReading, Station
from backend.db.session import session_factory
from backend.operations.auth import basic_header, hash_password, parse_basic, verify_password
from backend.operations.csms import REPLACED, Csms
from backend.operations.simulator import SimClock, SimStation

T0 = datetime(2023, 7, 2, 10, tzinfo=UTC)
T = TypeVar("T")
PASSWORDS = {"CSA21": "a-password-for-CSA21-0123456789", "CSA201": "a-password-for-CSA201-012345678"}
HASHES = {sid: hash_password(password) for sid, password in PASSWORDS.items()}
#: The station each subprotocol is tried with (registered with that OCPP version).
BY_PROTOCOL = {"ocpp2.1": "CSA21", "ocpp2.0.1": "CSA201"}
PROTOCOLS = pytest.mark.parametrize("subprotocol", ["ocpp2.1", "ocpp2.0.1"])
BOOT = {"chargingStation": {"model": "Test", "vendorName": "v2g-settle"}, "reason": "PowerUp"}
runner = CliRunner()


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    factory = session_factory(f"sqlite:///{tmp_path / 'auth.sqlite'}")
    with factory.begin() as db:
        for sid, version in (("CSA21", "2.1"), ("CSA201", "2.0.1")):
            db.add(
                Station(
                    id=sid,
                    ocpp_version=version,
                    can_discharge=False,
                    evses=1,
                    periods_per_schedule=24,
                    password_hash=HASHES[sid],
                )
            )
        db.add(
            Station(id="CSOPEN", ocpp_version="2.1", can_discharge=False, evses=1, periods_per_schedule=24)
        )
    return factory


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def refusals(sessions: sessionmaker[Session]) -> list[FieldRejection]:
    with sessions() as db:
        return list(db.scalars(select(FieldRejection).order_by(FieldRejection.id)))


async def open_station(
    url: str,
    station_id: str,
    subprotocol: str,
    password: str | None = None,
    *,
    user: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> ClientConnection:
    headers = {} if password is None else {"Authorization": basic_header(user or station_id, password)}
    return await connect(
        f"{url}/{station_id}",
        subprotocols=[Subprotocol(subprotocol)],
        additional_headers=headers,
        ssl=tls,
        open_timeout=30,
    )


async def call(ws: ClientConnection, unique_id: str, action: str, payload: dict[str, Any]) -> Any:
    await ws.send(json.dumps([2, unique_id, action, payload]))
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def with_csms(
    sessions: sessionmaker[Session],
    scenario: Callable[[Csms, str], Coroutine[Any, Any, T]],
    *,
    tls: ssl.SSLContext | None = None,
    allow_unauthenticated: bool = False,
) -> T:
    csms = Csms(sessions, lambda: T0, allow_unauthenticated=allow_unauthenticated)
    port = await csms.start(ssl=tls)
    try:
        return await scenario(csms, f"{'ws' if tls is None else 'wss'}://127.0.0.1:{port}")
    finally:
        await csms.stop()


async def refused_with(coro: Awaitable[ClientConnection]) -> InvalidStatus:
    """The handshake's refusal (an HTTP status instead of the upgrade)."""
    with pytest.raises(InvalidStatus) as refused:
        ws = await coro
        await ws.close()
    return refused.value


# --- profile 1: HTTP Basic at the handshake ---------------------------------------------------------------


@PROTOCOLS
def test_without_credentials_a_station_is_refused_at_the_handshake(
    sessions: sessionmaker[Session], subprotocol: str
) -> None:
    sid = BY_PROTOCOL[subprotocol]

    async def scenario(csms: Csms, url: str) -> InvalidStatus:
        refusal = await refused_with(open_station(url, sid, subprotocol))
        assert sid not in csms.stations
        return refusal

    refusal = run(with_csms(sessions, scenario))
    assert refusal.response.status_code == 401
    assert refusal.response.headers["WWW-Authenticate"].startswith("Basic ")
    [row] = refusals(sessions)
    assert (row.kind, row.station_id, row.raw) == ("StationAuthenticationError", sid, f"/{sid}")
    assert "no credentials" in row.detail


@PROTOCOLS
def test_a_wrong_password_is_refused_and_never_recorded(
    sessions: sessionmaker[Session], subprotocol: str
) -> None:
    sid = BY_PROTOCOL[subprotocol]
    wrong = "not-the-password-of-this-station"

    async def scenario(csms: Csms, url: str) -> InvalidStatus:
        return await refused_with(open_station(url, sid, subprotocol, wrong))

    refusal = run(with_csms(sessions, scenario))
    assert refusal.response.status_code == 401
    assert refusal.response.headers["WWW-Authenticate"].startswith("Basic ")
    [row] = refusals(sessions)
    assert (row.kind, row.station_id) == ("StationAuthenticationError", sid)
    assert "wrong password" in row.detail
    assert wrong not in row.detail + (row.raw or "")


@PROTOCOLS
def test_the_right_password_gets_a_boot_accepted(sessions: sessionmaker[Session], subprotocol: str) -> None:
    sid = BY_PROTOCOL[subprotocol]

    async def scenario(csms: Csms, url: str) -> Any:
        ws = await open_station(url, sid, subprotocol, PASSWORDS[sid])
        try:
            assert ws.subprotocol == subprotocol
            return await call(ws, "1", "BootNotification", BOOT)
        finally:
            await ws.close()

    answer = run(with_csms(sessions, scenario))
    assert answer[0] == 3 and answer[2]["status"] == "Accepted"
    assert refusals(sessions) == []
    with sessions() as db:
        station = db.get(Station, sid)
        assert station is not None and station.boots == 1


def test_a_reconnect_with_the_verified_password_skips_scrypt_and_a_wrong_one_does_not(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet reconnecting after a drop must not cost 50 ms of scrypt a station: a password this process
    verified against this stored hash is checked by a keyed digest; a wrong password, or a rotated hash,
    pays the full verification (and is refused when wrong)."""
    from backend.operations import auth

    sid, subprotocol = "CSA201", "ocpp2.0.1"
    verified: list[str] = []

    def counting(password: str, stored: str) -> bool:
        verified.append(password)
        return verify_password(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)

    async def scenario(csms: Csms, url: str) -> list[int]:
        seen = []
        for _ in range(3):
            ws = await open_station(url, sid, subprotocol, PASSWORDS[sid])
            await ws.close()
            seen.append(len(verified))
        refusal = await refused_with(open_station(url, sid, subprotocol, "not-the-password-of-this-station"))
        assert refusal.response.status_code == 401
        seen.append(len(verified))
        with sessions.begin() as db:  # the password rotated: the old one is verified (and refused) again
            station = db.get(Station, sid)
            assert station is not None
            station.password_hash = hash_password("a-brand-new-password-for-CSA201")
        refusal = await refused_with(open_station(url, sid, subprotocol, PASSWORDS[sid]))
        assert refusal.response.status_code == 401
        seen.append(len(verified))
        return seen

    assert run(with_csms(sessions, scenario)) == [1, 1, 1, 2, 3]


@PROTOCOLS
def test_a_basic_user_other_than_the_urls_station_is_refused(
    sessions: sessionmaker[Session], subprotocol: str
) -> None:
    async def scenario(csms: Csms, url: str) -> InvalidStatus:
        # CSA201's own, right credentials, presented for CSA21
        return await refused_with(open_station(url, "CSA21", subprotocol, PASSWORDS["CSA201"], user="CSA201"))

    assert run(with_csms(sessions, scenario)).response.status_code == 401
    [row] = refusals(sessions)
    assert (row.kind, row.station_id) == ("StationAuthenticationError", "CSA21")
    assert "'CSA201' is not station CSA21" in row.detail


def test_unknown_ids_and_malformed_credentials_are_refused_alike(sessions: sessionmaker[Session]) -> None:
    async def scenario(csms: Csms, url: str) -> list[int]:
        statuses = []
        for coro in (
            open_station(url, "NOPE", "ocpp2.1"),
            open_station(url, "NOPE", "ocpp2.1", "whatever-password-123"),
        ):
            statuses.append((await refused_with(coro)).response.status_code)
        garbled = connect(
            f"{url}/CSA21",
            subprotocols=[Subprotocol("ocpp2.1")],
            additional_headers={"Authorization": "Basic %%%"},
        )
        statuses.append((await refused_with(garbled)).response.status_code)
        return statuses

    assert run(with_csms(sessions, scenario)) == [401, 401, 401]
    assert [(r.kind, r.station_id) for r in refusals(sessions)] == [
        ("UnknownStationError", "NOPE"),
        ("UnknownStationError", "NOPE"),
        ("StationAuthenticationError", "CSA21"),
    ]


def test_a_station_without_a_password_connects_only_under_profile_0(sessions: sessionmaker[Session]) -> None:
    async def refused(csms: Csms, url: str) -> int:
        return (await refused_with(open_station(url, "CSOPEN", "ocpp2.1"))).response.status_code

    assert run(with_csms(sessions, refused)) == 401
    [row] = refusals(sessions)
    assert row.kind == "StationAuthenticationError" and "security profile 0 not allowed" in row.detail

    async def bench(csms: Csms, url: str) -> tuple[Any, int]:
        ws = await open_station(url, "CSOPEN", "ocpp2.1")
        try:
            answer = await call(ws, "1", "BootNotification", BOOT)
        finally:
            await ws.close()
        # a station that has a password must present it, profile 0 or not
        status = (await refused_with(open_station(url, "CSA21", "ocpp2.1"))).response.status_code
        return answer, status

    answer, status = run(with_csms(sessions, bench, allow_unauthenticated=True))
    assert answer[0] == 3 and answer[2]["status"] == "Accepted"
    assert status == 401


# --- one connection per station id ------------------------------------------------------------------------


def tx_event(event: str, seq: int, at: datetime, import_wh: int) -> dict[str, Any]:
    stamp = at.isoformat().replace("+00:00", "Z")
    return {
        "eventType": event,
        "timestamp": stamp,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq,
        "transactionInfo": {"transactionId": "T1"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [
            {
                "timestamp": stamp,
                "sampledValue": [
                    {"value": import_wh, "measurand": "Energy.Active.Import.Register"},
                    {"value": 0, "measurand": "Energy.Active.Export.Register"},
                ],
            }
        ],
    }


@PROTOCOLS
def test_a_second_connection_replaces_the_first(sessions: sessionmaker[Session], subprotocol: str) -> None:
    sid = BY_PROTOCOL[subprotocol]
    password = PASSWORDS[sid]

    async def scenario(csms: Csms, url: str) -> list[Any]:
        first = await open_station(url, sid, subprotocol, password)
        assert (await call(first, "1", "BootNotification", BOOT))[0] == 3
        assert (await call(first, "2", "TransactionEvent", tx_event("Updated", 0, T0, 1000)))[0] == 3
        # the same seqNo from the old connection and, at once, from the new one (the answer was lost)
        await first.send(json.dumps([2, "3", "TransactionEvent", tx_event("Updated", 1, T0, 2000)]))
        second = await open_station(url, sid, subprotocol, password)
        answers = [await call(second, "1", "TransactionEvent", tx_event("Updated", 1, T0, 2000))]
        await asyncio.wait_for(first.wait_closed(), 10)
        assert first.close_code == REPLACED and first.close_reason == "replaced by a new connection"
        answers.append(await call(second, "2", "Heartbeat", {}))
        answers.append(
            await call(
                second, "3", "TransactionEvent", tx_event("Updated", 2, T0 + timedelta(minutes=5), 3000)
            )
        )
        link = csms.stations[sid]  # the new connection serves (the old one's end did not remove it)
        assert link._connection is not None and link._connection.remote_address == second.local_address
        with pytest.raises(ConnectionClosed):
            await call(first, "4", "Heartbeat", {})
        await second.close()
        return answers

    answers = run(with_csms(sessions, scenario))
    assert [a[0] for a in answers] == [3, 3, 3]  # answered, never a CALLERROR (InternalError)
    # a CALLERROR this side sends is recorded as a MalformedFrameError ("InternalError: ..."): none
    kinds = [r.kind for r in refusals(sessions)]
    assert "MalformedFrameError" not in kinds and kinds.count("DuplicateMessageError") <= 1
    with sessions() as db:
        stored = [r.import_wh for r in db.scalars(select(MeterReading).order_by(MeterReading.seq_no))]
    assert stored == [1000, 2000, 3000]  # the seqNo sent on both connections stored once


# --- profile 2: the same over TLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def throwaway_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA made for the test and a server certificate for 127.0.0.1 signed by it (openssl's CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command-line tool is not installed")
    d = tmp_path_factory.mktemp("ca")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=v2g-settle test CA",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def server_context(ca: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(ca["cert"], ca["key"])
    return context


def test_over_tls_a_trusting_station_connects_and_others_fail(
    sessions: sessionmaker[Session], throwaway_ca: dict[str, Path]
) -> None:
    trusting = ssl.create_default_context(cafile=str(throwaway_ca["ca"]))

    async def scenario(csms: Csms, url: str) -> Any:
        ws = await open_station(url, "CSA21", "ocpp2.1", PASSWORDS["CSA21"], tls=trusting)
        try:
            answer = await call(ws, "1", "BootNotification", BOOT)
        finally:
            await ws.close()
        # the password is still required over TLS
        assert (
            await refused_with(open_station(url, "CSA21", "ocpp2.1", tls=trusting))
        ).response.status_code == 401
        # a client that does not trust the CA (the system's trust store) fails the TLS handshake
        with pytest.raises(ssl.SSLCertVerificationError):
            await open_station(url, "CSA21", "ocpp2.1", PASSWORDS["CSA21"], tls=ssl.create_default_context())
        # plain ws:// to the TLS port does not get a websocket
        plain = url.replace("wss://", "ws://")
        with pytest.raises((InvalidHandshake, OSError, TimeoutError)):
            ws = await open_station(plain, "CSA21", "ocpp2.1", PASSWORDS["CSA21"])
            await ws.close()
        # a simulated station over TLS (the client context handed to it)
        clock = SimClock(T0, 600.0)
        station = SimStation(
            "CSA201",
            url,
            "2.0.1",
            clock,
            None,
            password=PASSWORDS["CSA201"],
            ssl_context=trusting,
        )
        await station.run(T0 + timedelta(seconds=1))
        return answer

    answer = run(with_csms(sessions, scenario, tls=server_context(throwaway_ca)))
    assert answer[0] == 3 and answer[2]["status"] == "Accepted"
    with sessions() as db:
        assert [db.get(Station, sid).boots for sid in ("CSA21", "CSA201")] == [1, 1]  # type: ignore[union-attr]


def test_operate_takes_a_tls_certificate_and_key_together(
    throwaway_ca: dict[str, Path], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'o.sqlite'}"
    alone = runner.invoke(app, ["operate", "--tls-cert", str(throwaway_ca["cert"]), "--db", db])
    assert alone.exit_code == 2
    assert alone.output.strip() == "InvalidTlsError: --tls-cert and --tls-key: give both or neither"
    swapped = runner.invoke(
        app,
        [
            "operate",
            "--tls-cert",
            str(throwaway_ca["key"]),
            "--tls-key",
            str(throwaway_ca["key"]),
            "--db",
            db,
        ],
    )
    assert swapped.exit_code == 2 and swapped.output.startswith("InvalidTlsError: --tls-cert ")
    assert len(swapped.output.strip().splitlines()) == 1


# --- setting and rotating passwords from the command line -------------------------------------------------


SUFFIX = "; one for all EVSEs, or one per EVSE separated by ;)"


def test_stations_import_stores_passwords_hashed_and_rated_power(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    sessions = session_factory(db)
    first = "station-one-password-0123"
    good = tmp_path / "stations.csv"
    good.write_text(
        "station_id,ocpp_version,can_discharge,evses,periods_per_schedule,max_power_kw,password\n"
        f"CS1,2.1,true,1,24,11,{first}\nCS2,2.0.1,false,2,24,,\n"
    )
    result = runner.invoke(app, ["stations", "import", str(good), "--db", db])
    assert result.exit_code == 0 and "2 station(s) registered" in result.output, result.output
    assert "1 station(s) without a password" in result.output and "CS2" in result.output
    with sessions() as s:
        cs1, cs2 = s.get(Station, "CS1"), s.get(Station, "CS2")
        assert cs1 is not None and cs2 is not None
        assert cs1.password_hash is not None and cs1.password_hash.startswith("scrypt$16384$8$1$")
        assert first not in cs1.password_hash and verify_password(first, cs1.password_hash)
        assert (cs1.max_power_kw, cs2.max_power_kw, cs2.password_hash) == (11.0, 22.0, None)
        stored = cs1.password_hash

    # one rating per EVSE
    good.write_text(
        "station_id,ocpp_version,can_discharge,evses,periods_per_schedule,max_power_kw,password\n"
        "CS2,2.0.1,false,2,24,11;22,\n"
    )
    assert runner.invoke(app, ["stations", "import", str(good), "--db", db]).exit_code == 0
    with sessions() as s:
        cs2 = s.get(Station, "CS2")
        assert cs2 is not None and (cs2.max_power_kw, cs2.evse_max_kw) == (22.0, [11.0, 22.0])

    # re-imported without a password (the column empty, or absent): the stored hash is kept
    good.write_text(
        "station_id,ocpp_version,can_discharge,evses,periods_per_schedule,max_power_kw,password\n"
        "CS1,2.1,true,1,24,7.4,\n"
    )
    assert runner.invoke(app, ["stations", "import", str(good), "--db", db]).exit_code == 0
    with sessions() as s:
        cs1 = s.get(Station, "CS1")
        assert cs1 is not None and (cs1.password_hash, cs1.max_power_kw) == (stored, 7.4)

    header = "station_id,ocpp_version,can_discharge,evses,periods_per_schedule,max_power_kw,password\n"
    for row, message in (
        (
            "CS3,2.1,false,1,24,lots,",
            "max_power_kw 'lots' (kW per EVSE, more than 0 and at most 1000" + SUFFIX,
        ),
        (
            "CS3,2.1,false,1,24,0,",
            "max_power_kw '0' (kW per EVSE, more than 0 and at most 1000" + SUFFIX,
        ),
        (
            "CS3,2.1,false,1,24,1000.5,",
            "max_power_kw '1000.5' (kW per EVSE, more than 0 and at most 1000" + SUFFIX,
        ),
        (
            "CS3,2.1,false,1,24,nan,",
            "max_power_kw 'nan' (kW per EVSE, more than 0 and at most 1000" + SUFFIX,
        ),
        ("CS3,2.1,false,1,24,22,short", "a station password has 16 to 40 characters"),
        ("CS3,2.1,false,2,24,11;22;7,", "max_power_kw '11;22;7' gives 3 ratings for 2 EVSEs"),
        (
            "CS3,2.1,false,2,24,11;x,",
            "max_power_kw '11;x' (kW per EVSE, more than 0 and at most 1000" + SUFFIX,
        ),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(header + "CS4,2.1,false,1,24,22,\n" + row + "\n")
        refused = runner.invoke(app, ["stations", "import", str(bad), "--db", db])
        assert refused.exit_code == 2
        assert refused.output.strip() == f"InvalidRegistryFileError: {bad} line 3: {message}"
    with sessions() as s:
        assert s.get(Station, "CS3") is None and s.get(Station, "CS4") is None  # the whole file refused


def test_stations_password_rotates_the_old_one_is_refused(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'auth.sqlite'}"  # the fixture's
    unknown = runner.invoke(app, ["stations", "password", "NOPE", "--db", db])
    assert unknown.exit_code == 2 and unknown.output.startswith("UnknownStationError: STATION_ID NOPE: ")
    assert len(unknown.output.strip().splitlines()) == 1

    rotated = runner.invoke(app, ["stations", "password", "CSA21", "--db", db])
    assert rotated.exit_code == 0, rotated.output
    new = rotated.output.strip()
    assert len(new) == 32 and new != PASSWORDS["CSA21"]
    with sessions() as s:
        station = s.get(Station, "CSA21")
        assert station is not None and station.password_hash is not None
        assert new not in station.password_hash and verify_password(new, station.password_hash)

    async def scenario(csms: Csms, url: str) -> tuple[int, Any]:
        old = await refused_with(open_station(url, "CSA21", "ocpp2.1", PASSWORDS["CSA21"]))
        ws = await open_station(url, "CSA21", "ocpp2.1", new)
        try:
            return old.response.status_code, await call(ws, "1", "BootNotification", BOOT)
        finally:
            await ws.close()

    status, answer = run(with_csms(sessions, scenario))
    assert status == 401 and answer[0] == 3 and answer[2]["status"] == "Accepted"


def test_basic_headers_round_trip() -> None:
    assert parse_basic(basic_header("CS-1", "pass:word with ü")) == ("CS-1", "pass:word with ü")
    assert not verify_password("anything", "md5$abc")
    assert not verify_password("anything", "scrypt$1048576$8$1$00$00")  # beyond the memory bound: refused
