"""The CSMS: OCPP 2.0.1 and 2.1 over websockets (the ``ocpp`` package on ``websockets``).

A station connects to ``ws://HOST:PORT/<station id>`` (``wss://`` with TLS) with subprotocol ``ocpp2.1``
or ``ocpp2.0.1`` and HTTP Basic credentials (user = station id, its password: OCPP security profiles 1
and 2); an id the registry does not know, or wrong credentials, are refused at the handshake with HTTP
401 (``UnknownStationError``, ``StationAuthenticationError``).
Handled: BootNotification, Heartbeat, StatusNotification, Authorize, TransactionEvent
(Started/Updated/Ended with meter values), MeterValues; sent: SetChargingProfile,
ClearChargingProfile. With a credit gate (:mod:`backend.operations.credit`), Authorize and
TransactionEvent(Started) answer ``NoCredit`` when the owner's free escrow does not cover the session.
Every message is stored (:mod:`backend.operations.field`) before it is
answered; a frame that is not OCPP-J gets a CALLERROR (FormatViolation) and is counted, and every
CALLERROR this side sends (a schema violation, ...) is counted too.

A station that reconnects (same id) replaces its old connection; its open transactions continue, and
the operations loop sends it its current profiles again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from ssl import SSLContext
from typing import Any

import websockets
from ocpp.messages import MessageType
from ocpp.routing import on
from ocpp.v21 import ChargePoint as V21ChargePoint
from ocpp.v21 import call as v21_call
from ocpp.v21 import call_result as v21_result
from ocpp.v201 import ChargePoint as V201ChargePoint
from ocpp.v201 import call as v201_call
from ocpp.v201 import call_result as v201_result
from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.headers import build_www_authenticate_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from backend import jsontext
from backend.db.models import ChargingProfileRow, Station
from backend.metering import frames
from backend.operations import auth, conformance, ocpp_keys
from backend.operations import field as rules
from backend.operations.credit import CreditGate
from backend.operations.field import (
    FieldDataError,
    GroupCommit,
    MalformedFrameError,
    OcppVersionMismatchError,
    StationAuthenticationError,
)

logger = logging.getLogger(__name__)

ocpp_keys.install()  # the package's key conversion, memoised: large frames no longer hold the event loop

#: A MeterValues frame larger than this is read in a worker thread (a flood of samples from one station
#: must not hold the event loop every other station is served on), bytes.
LARGE_FRAME_BYTES = 64 * 1024
#: How long a thread holds the GIL before the event loop may take it (seconds; Python's default 0.005).
SWITCH_INTERVAL_S = 0.001
# The package logs every frame at INFO and a station's invalid message with a traceback; this module
# records each refusal itself (named, counted, in field_rejections), so the package's own lines are noise.
logging.getLogger("ocpp").setLevel(logging.CRITICAL)

SUBPROTOCOLS = ["ocpp2.1", "ocpp2.0.1"]
HEARTBEAT_S = 60
#: The close code an old connection gets when the same station connects again.
REPLACED = 4000


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class CsmsStats:
    messages: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    profiles_sent: int = 0
    profiles_rejected: int = 0

    def count(self, kind: str) -> None:
        self.rejected[kind] = self.rejected.get(kind, 0) + 1


def profile_record(
    station_id: str, evse_id: int, profile: dict[str, Any], sent_at: datetime, status: str
) -> ChargingProfileRow:
    """The record of a profile sent to a station and its answer."""
    return ChargingProfileRow(**profile_values(station_id, evse_id, profile, sent_at, status))


def profile_values(
    station_id: str, evse_id: int, profile: dict[str, Any], sent_at: datetime, status: str
) -> dict[str, Any]:
    """The columns of :func:`profile_record`."""
    return {
        "station_id": station_id,
        "evse_id": evse_id,
        "transaction_id": profile.get("transaction_id"),
        "sent_at": sent_at,
        "status": status,
        "body": profile,
    }


class _StationHandlers:
    """The CSMS side of one station's connection (mixed into the version's ChargePoint)."""

    csms: Csms
    id: str
    result: Any
    calls: Any
    _ocpp_version: str
    _handled: set[str]
    _validated: set[str]
    _call_lock: asyncio.Lock
    _response_timeout: float
    _unique_id_generator: Callable[[], Any]

    async def call_wire(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Send a CALL whose payload is as the station gets it (:func:`ocpp_keys.wire`), as the package's
        ``ChargePoint.call`` does (one call at a time, its answer matched by id within the response
        timeout); returns the answer's payload as sent (camelCase), None for a CALLERROR."""
        unique_id = str(self._unique_id_generator())
        message = jsontext.dumps([2, unique_id, action, payload])
        async with self._call_lock:
            await self._send(message)
            response = await self._get_specific_response(  # type: ignore[attr-defined]
                unique_id, self._response_timeout
            )
        if response.message_type_id == MessageType.CallError:
            logger.warning("%s answered %s with a CALLERROR: %s", self.id, action, response)
            return None
        return response.payload if isinstance(response.payload, dict) else {}

    async def route_message(self, raw_msg: str | bytes) -> None:
        text = raw_msg.decode() if isinstance(raw_msg, bytes) else raw_msg
        self.csms.stats.messages += 1
        # the frame as received, appended to the station's hash chain ahead of what the rules derive from
        # it: committed no later than they are, so before the station gets its answer
        received_at = self._now()  # when it arrived, not when the writer gets to it
        stored = self.csms.writer.add(self.csms.chain, (self.id, text, received_at))
        try:
            await self._route(text)
        finally:
            await stored

    async def _route(self, text: str) -> None:
        try:
            frame: Any = json.loads(text)
        except ValueError:
            frame = None
        error = conformance.message_error(frame, self._ocpp_version)
        if error is not None:
            await self.csms.refuse(self.id, MalformedFrameError(f"{error.code}: {error.description}"), text)
            if error.answer:  # a response (CALLRESULT, CALLERROR) or a 2.1 SEND is never answered
                unique_id = (
                    frame[1]
                    if isinstance(frame, list) and len(frame) > 1 and isinstance(frame[1], str)
                    else "-1"
                )
                await super()._send(json.dumps(error.frame(unique_id)))  # type: ignore[misc]
            return
        if frame[0] == 2:
            error = await self._call_error(frame, large=len(text) > LARGE_FRAME_BYTES)
            if error is not None:
                await self._send(json.dumps(error.frame(frame[1])))
                return
            if frame[2] == "MeterValues" and len(text) > LARGE_FRAME_BYTES:
                payload = frame[3]
                if isinstance(payload.get("meterValue"), list):
                    await self._large_meter_values(frame[1], payload)
                    return
        await super().route_message(text)  # type: ignore[misc]

    async def _call_error(self, frame: list[Any], *, large: bool) -> conformance.CallError | None:
        """The CALLERROR the specification wants for this CALL, if any (:mod:`conformance`): its frame, its
        action for this station's OCPP version, its payload against the action's schema (a large payload
        checked in a worker thread, beside the event loop)."""
        error = conformance.frame_error(frame) or conformance.action_error(
            frame[2], self._ocpp_version, self._handled
        )
        if error is not None or frame[2] not in self._validated:
            return error
        if large:
            return await asyncio.to_thread(conformance.payload_error, frame[2], frame[3], self._ocpp_version)
        return conformance.payload_error(frame[2], frame[3], self._ocpp_version)

    def _conform(self) -> None:
        """The actions this CSMS handles and those whose payloads it checks against their schema: checked
        in :meth:`_call_error`, so the package does not check them again."""
        route_map: dict[str, dict[str, Any]] = self.route_map  # type: ignore[attr-defined]
        self._handled = {action for action, handlers in route_map.items() if "_on_action" in handlers}
        self._validated = {
            action for action, handlers in route_map.items() if not handlers.get("_skip_schema_validation")
        }
        for handlers in route_map.values():
            handlers["_skip_schema_validation"] = True

    async def _large_meter_values(self, unique_id: str, payload: dict[str, Any]) -> None:
        """A large MeterValues frame (thousands of samples) read in a worker thread: the event loop goes on
        serving the other stations meanwhile. The same rules and answer as :meth:`on_meter_values`."""
        started = time.monotonic()
        meter_value = await asyncio.to_thread(ocpp_keys.camel_to_snake_case, payload["meterValue"])
        await self._meter_values(payload.get("evseId"), meter_value, parsed_off_loop=True)
        await self._send(json.dumps([3, unique_id, {}]))
        # fair share: this station's next frame is read after as long as this one took (its own
        # connection waits, TCP holds the sender back), so a flooding station gets at most half the CSMS
        await asyncio.sleep(min(time.monotonic() - started, 1.0))

    async def _send(self, message: str) -> None:
        if message.startswith("[4,"):  # a CALLERROR this side answers: the station sent something invalid
            try:
                code, description = json.loads(message)[2:4]
            except ValueError:
                code, description = "?", message
            if code == "InternalError":  # this side failed (a database busy): not the station's doing
                logger.warning(
                    "%s: a message could not be taken (%s): the station sends it again",
                    self.id,
                    description,
                    extra={"station": self.id},
                )
            elif code != "FormatViolation" or "OCPP-J" not in description:
                await self.csms.refuse(self.id, MalformedFrameError(f"{code}: {description}"), None)
        await super()._send(message)  # type: ignore[misc]

    def _now(self) -> datetime:
        return self.csms.clock()

    @on("BootNotification")
    async def on_boot(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        now = self._now()
        await self.csms.writer.run(lambda s: rules.boot(s, self.id, now))
        self.csms.notify("boot", self.id)
        return self.result.BootNotification(current_time=iso(now), interval=HEARTBEAT_S, status="Accepted")

    @on("Heartbeat")
    async def on_heartbeat(self, **_: Any) -> Any:
        now = self._now()
        await self.csms.writer.run(lambda s: rules.seen(s, self.id, now))
        return self.result.Heartbeat(current_time=iso(now))

    @on("StatusNotification")
    async def on_status(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ) -> Any:
        now = self._now()
        await self.csms.writer.run(lambda s: rules.seen(s, self.id, now))
        return self.result.StatusNotification()

    @on("NotifyEVChargingNeeds")
    async def on_charging_needs(self, evse_id: int, charging_needs: dict[str, Any], **extra: Any) -> Any:
        """The car's departure, energy and limits (ISO 15118): stored, and the fleet re-planned with them."""
        body = {"charging_needs": charging_needs, **extra}
        await self._ev_message(evse_id, "needs", body)
        return self.result.NotifyEVChargingNeeds(status="Accepted")

    @on("NotifyEVChargingSchedule")
    async def on_charging_schedule(self, evse_id: int, **body: Any) -> Any:
        """The schedule the car chose from the profile it was given: kept as it said it."""
        await self._ev_message(evse_id, "schedule", body)
        return self.result.NotifyEVChargingSchedule(status="Accepted")

    async def _ev_message(self, evse_id: int, kind: str, body: dict[str, Any]) -> None:
        now = self._now()
        try:
            await self.csms.writer.run(lambda s: rules.ev_message(s, self.id, evse_id, kind, body, now))
        except (FieldDataError, ValueError, TypeError) as exc:
            error = exc if isinstance(exc, FieldDataError) else MalformedFrameError(f"{kind}: {exc!r}")
            await self.csms.refuse(self.id, error, json.dumps(body, default=str)[:500])
            return
        if kind == "needs":
            self.csms.notify("needs", self.id)

    @on("Authorize")
    async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        token = str(id_token.get("id_token", ""))
        vehicle = await self.csms.writer.run(lambda s: rules.authorize(s, self.id, token))
        status = "Accepted" if vehicle else "Invalid"
        if vehicle and not await self.csms.credit_ok(self.id, vehicle, None):
            status = "NoCredit"
        return self.result.Authorize(id_token_info={"status": status})

    # The two high-volume messages skip the package's JSON-schema validation (milliseconds per message on
    # the 2.1 schemas): their fields are parsed strictly here instead, and anything missing or malformed is
    # refused by name (MalformedFrameError, MissingRegisterError, ...).
    @on("TransactionEvent", skip_schema_validation=True)
    async def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        evse: dict[str, Any] | None = None,
        id_token: dict[str, Any] | None = None,
        meter_value: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> Any:
        now = self._now()
        try:
            token = str(id_token["id_token"]) if id_token else None
            transaction_id = str(transaction_info["transaction_id"])
            if event_type not in ("Started", "Updated", "Ended") or not isinstance(seq_no, int) or seq_no < 0:
                raise ValueError(f"eventType {event_type!r} / seqNo {seq_no!r}")
            samples = rules.samples_of(meter_value)
            when = rules.parse_time(timestamp)
            tail = self.csms.tails.get(self.id, {}).get(transaction_id)
            if (
                event_type == "Updated"
                and samples
                and token is None
                and tail is not None
                and tail.accepts(seq_no, samples)
            ):
                stored = (self.id, transaction_id, seq_no, samples, now)
                await self.csms.writer.add(self.csms.in_order, stored)
                last = samples[-1]
                self.csms.tails.setdefault(self.id, {})[transaction_id] = rules.TxTail(
                    seq_no, last.measured_at, last.import_wh, last.export_wh, False
                )
                return self.result.TransactionEvent()
            outcome = await self.csms.writer.run(
                lambda s: rules.transaction_event(
                    s,
                    self.id,
                    event_type=event_type,
                    seq_no=seq_no,
                    transaction_id=transaction_id,
                    evse_id=int(evse["id"]) if evse else None,
                    id_token=token,
                    samples=samples,
                    timestamp=when,
                    stopped_reason=transaction_info.get("stopped_reason"),
                    now=now,
                )
            )
        except (FieldDataError, ValueError, KeyError, TypeError) as exc:
            error = (
                exc if isinstance(exc, FieldDataError) else MalformedFrameError(f"TransactionEvent: {exc!r}")
            )
            await self.csms.refuse(self.id, error, json.dumps(transaction_info, default=str)[:500])
            return self.result.TransactionEvent()
        for kind in outcome.flagged:
            self.csms.stats.count(kind)
        if outcome.tail is not None and not outcome.ended:
            self.csms.tails.setdefault(self.id, {})[transaction_id] = outcome.tail
        else:
            self.csms.tails.get(self.id, {}).pop(transaction_id, None)
        if event_type == "Started":
            self.csms.notify("arrival", self.id)
        elif event_type == "Ended":
            self.csms.notify("departure", self.id)
        if token is None:
            return self.result.TransactionEvent()
        status = "Accepted" if outcome.vehicle_id else "Invalid"
        if (
            event_type == "Started"
            and outcome.vehicle_id
            and not await self.csms.credit_ok(self.id, outcome.vehicle_id, transaction_id)
        ):
            status = "NoCredit"
            await self.csms.writer.run(lambda s: rules.refuse_credit(s, self.id, transaction_id))
            self.csms.notify("credit", self.id)  # re-plan without it (it was planned at its arrival)
        return self.result.TransactionEvent(id_token_info={"status": status})

    @on("MeterValues", skip_schema_validation=True)
    async def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        await self._meter_values(evse_id, meter_value)
        return self.result.MeterValues()

    async def _meter_values(
        self, evse_id: Any, meter_value: list[Any], *, parsed_off_loop: bool = False
    ) -> None:
        now = self._now()
        try:
            if not isinstance(evse_id, int) or isinstance(evse_id, bool):
                raise TypeError(f"evseId {evse_id!r} is not an integer")
            samples = (
                await asyncio.to_thread(rules.samples_of, meter_value)
                if parsed_off_loop
                else rules.samples_of(meter_value)
            )
            # the transaction's tail moves here too: the fast path must not trust a cached one
            self.csms.tails.pop(self.id, None)
            await self.csms.writer.run(lambda s: rules.evse_meter_values(s, self.id, evse_id, samples, now))
        except (FieldDataError, ValueError, KeyError, TypeError) as exc:
            error = exc if isinstance(exc, FieldDataError) else MalformedFrameError(f"MeterValues: {exc!r}")
            await self.csms.refuse(self.id, error, json.dumps(meter_value, default=str)[:500])


class V21Station(_StationHandlers, V21ChargePoint):  # type: ignore[misc]
    result = v21_result
    calls = v21_call

    def __init__(self, station_id: str, connection: Any, csms: Csms) -> None:
        super().__init__(station_id, connection, response_timeout=30)
        self.csms = csms
        self._conform()


class V201Station(_StationHandlers, V201ChargePoint):  # type: ignore[misc]
    result = v201_result
    calls = v201_call

    def __init__(self, station_id: str, connection: Any, csms: Csms) -> None:
        super().__init__(station_id, connection, response_timeout=30)
        self.csms = csms
        self._conform()


class Csms:
    """The central system: accepts station connections, stores what they send, sends them profiles."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_event: Callable[[str, str], None] | None = None,
        *,
        allow_unauthenticated: bool = False,
        credit: CreditGate | None = None,
    ) -> None:
        """``allow_unauthenticated``: OCPP security profile 0, for a bench or development only: a
        station registered without a password connects without credentials. A station that has a
        password must present it either way (HTTP Basic, profile 1; over TLS, profile 2). ``credit``:
        authorise sessions against the owner's free escrow (:mod:`backend.operations.credit`;
        ``NoCredit`` below it); without it, a known idToken is enough."""
        self.credit = credit
        self.sessions = sessions
        self.clock = clock
        self.writer = GroupCommit(sessions)
        #: the stations' frame chains (their heads kept once committed) and the in-order fast path's
        #: writes: each written for a whole batch of messages at once
        self.chain = frames.FrameChain()
        self.in_order = rules.InOrderSamples()
        self.profile_records = rules.ProfileRecords()
        self.allow_unauthenticated = allow_unauthenticated
        self.stations: dict[str, V21Station | V201Station] = {}
        #: set when the connection serving a station (``stations``) has ended: a new connection for the
        #: same id closes the old one and waits for this before it serves
        self._ended: dict[str, asyncio.Event] = {}
        #: scrypt verifications at once (each 16 MiB and a core for ~40 ms; a waiting one costs nothing)
        self._verifying = asyncio.Semaphore(2)
        #: (station, stored hash) → keyed digest of the password last verified against it (this process only)
        self._verified: dict[tuple[str, str], bytes] = {}
        #: the OCPP version each connection's station is registered for (set at its handshake)
        self._registered: weakref.WeakKeyDictionary[ServerConnection, str] = weakref.WeakKeyDictionary()
        #: when the connection serving each station (``stations``) began (wall clock: processes compare it)
        self.connected_at: dict[str, datetime] = {}
        self._verify_key = secrets.token_bytes(32)
        #: open transactions' tails, for the in-order fast path (filled by the full rules; a restart
        #: starts empty and the first message of each transaction takes the full path)
        self.tails: dict[str, dict[str, rules.TxTail]] = {}  # station → transaction → tail
        self.stats = CsmsStats()
        self.on_event = on_event
        self._server: Server | None = None
        self.port = 0

    async def credit_ok(self, station_id: str, vehicle_id: str, transaction_id: str | None) -> bool:
        """Whether the vehicle's owner may start a session (always, without a credit gate). A check
        that cannot be made (the chain unreachable) refuses: an unbounded session is not authorised."""
        if self.credit is None:
            return True
        at = self.clock()
        exclude = (station_id, transaction_id) if transaction_id is not None else None
        try:
            credit = await asyncio.to_thread(self.credit.check, vehicle_id, at=at, exclude=exclude)
        except Exception as exc:  # the chain or the database: named, counted, refused
            logger.warning("%s: NoCredit for %s: CreditCheckError: %s", station_id, vehicle_id, exc)
            self.stats.count("CreditCheckError")
            return False
        if credit.allowed:
            return True
        self.stats.count("NoCredit")
        if credit.price_per_kwh is None:  # nothing stored to bound what the session may cost
            logger.warning(
                "%s: NoCredit for %s (owner %s): no price is stored, so the session's cost has no bound "
                "(import the day-ahead prices: v2g prices import, POST /prices, or the price inbox)",
                station_id,
                vehicle_id,
                credit.owner_id,
                extra={"station": station_id, "refusal": "NoCredit"},
            )
            return False
        logger.info(
            "%s: NoCredit for %s (owner %s): free %d (balance %d, under notice %d, open exposure %d) "
            "< session exposure %d",
            station_id,
            vehicle_id,
            credit.owner_id,
            credit.free,
            credit.escrow.balance,
            credit.escrow.held,
            credit.open_exposure,
            credit.session_exposure,
        )
        return False

    def notify(self, kind: str, station_id: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, station_id)

    async def refuse(self, station_id: str | None, error: FieldDataError, raw: str | None) -> None:
        self.stats.count(type(error).__name__)
        await self.writer.run(lambda s: rules.reject(s, station_id, error, raw))

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl: SSLContext | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Listen on ``ws://host:port/<station id>``, or ``wss://`` with ``ssl`` (a server context with its
        certificate chain loaded: security profile 2). Returns the port. ``reuse_port``: share the port
        with other processes (``SO_REUSEPORT``; :mod:`backend.operations.pool`)."""
        # the event loop gets the GIL back within a millisecond of another thread's turn, not Python's
        # default five: a Heartbeat takes a handful of turns on the loop while a large frame is parsed in a
        # thread beside it and the writer commits (p99 under a flood in the same process 138-166 → 73-97 ms)
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._server = await serve(
            self._connection,
            host,
            port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=self._select_subprotocol,
            process_request=self._authenticate,
            ssl=ssl,
            ping_interval=None,
            max_size=2**20,
            compression=None,  # OCPP frames are small: deflating each costs more than it saves
            reuse_port=reuse_port,
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        logger.info("CSMS listening on %s://%s:%d", "ws" if ssl is None else "wss", host, self.port)
        return self.port

    def _select_subprotocol(
        self, connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """The OCPP version the station is registered for, if it offers it; else none (OCPP-J: the
        station then closes; :meth:`_connection` names the mismatch). A station registered for 2.0.1
        never speaks 2.1, and the other way round."""
        version = self._registered.get(connection)
        wanted = Subprotocol(f"ocpp{version}") if version else None
        return wanted if wanted in subprotocols else None

    async def _authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        """The handshake's check (``process_request``): the station of the URL is registered and proves it
        with HTTP Basic (user = station id, its password); otherwise HTTP 401, the refusal recorded by
        name (``UnknownStationError``, ``StationAuthenticationError``; never the credentials). Sets
        ``connection.username`` to the station id it let through."""
        path = request.path
        station_id = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        header = request.headers.get("Authorization")
        credentials: tuple[str, str] | None = None
        if header is not None:
            try:
                credentials = auth.parse_basic(header)
            except auth.MalformedCredentialsError as exc:
                return await self._unauthorized(
                    connection, station_id, StationAuthenticationError(str(exc)), path
                )

        def lookup(session: Session) -> tuple[bool, str | None, str | None]:
            station = session.get(Station, station_id) if station_id else None
            if station is None:
                return False, None, None
            return True, station.password_hash, station.ocpp_version

        known, stored, version = await self.writer.run(lookup)
        if version is not None:
            self._registered[connection] = version  # the subprotocol it may speak (_select_subprotocol)
        if credentials is None:
            if known and stored is None and self.allow_unauthenticated:
                connection.username = station_id
                return None
            error: FieldDataError = (
                rules.UnknownStationError(f"station {station_id} is not in the registry")
                if not known
                else StationAuthenticationError(
                    f"station {station_id}: no credentials"
                    + ("" if stored is not None else " (it has no password: security profile 0 not allowed)")
                )
            )
            return await self._unauthorized(connection, station_id, error, path, missing=True)
        user, password = credentials
        # a station that proved this very password against this very stored hash before (a reconnect) is
        # checked by a keyed digest in memory, not scrypt again: a fleet reconnecting after a drop costs
        # microseconds, not 50 ms a station. Anything else (a new or wrong password, a rotated hash, an
        # unknown id) pays the full verification: no telling known ids apart.
        remembered = (
            known
            and stored is not None
            and user == station_id
            and hmac.compare_digest(self._verified.get((station_id, stored), b""), self._digest(password))
        )
        if remembered:
            valid = True
        else:
            async with self._verifying:
                valid = await asyncio.to_thread(auth.verify_password, password, stored or auth.dummy_hash())
            if valid and known and stored is not None and user == station_id:
                self._verified[(station_id, stored)] = self._digest(password)
        if not known:
            error = rules.UnknownStationError(f"station {station_id} is not in the registry")
        elif user != station_id:
            error = StationAuthenticationError(f"Basic user {user[:64]!r} is not station {station_id}")
        elif stored is None:
            if self.allow_unauthenticated:
                connection.username = station_id
                return None
            error = StationAuthenticationError(
                f"station {station_id} has no password (security profile 0 not allowed)"
            )
        elif not valid:
            error = StationAuthenticationError(f"station {station_id}: wrong password")
        else:
            connection.username = station_id
            return None
        return await self._unauthorized(connection, station_id, error, path)

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._verify_key, password.encode(), hashlib.sha256).digest()

    async def _unauthorized(
        self,
        connection: ServerConnection,
        station_id: str,
        error: FieldDataError,
        path: str,
        *,
        missing: bool = False,
    ) -> Response:
        await self.refuse(station_id or None, error, path)
        response = connection.respond(
            HTTPStatus.UNAUTHORIZED, "Missing credentials\n" if missing else "Invalid credentials\n"
        )
        response.headers["WWW-Authenticate"] = build_www_authenticate_basic("OCPP CSMS")
        return response

    async def _connection(self, websocket: ServerConnection) -> None:
        station_id: str | None = getattr(websocket, "username", None)
        if station_id is None:  # not let through by _authenticate (cannot happen: serve() always asks it)
            await websocket.close(1008, "not authenticated")
            return
        path = websocket.request.path if websocket.request is not None else "/"
        if websocket.subprotocol is None:
            registered = self._registered.get(websocket)
            offered = websocket.request.headers.get("Sec-WebSocket-Protocol", "") if websocket.request else ""
            await self.refuse(
                station_id,
                OcppVersionMismatchError(
                    f"station {station_id} is registered for OCPP {registered}; it offered "
                    f"{offered or 'no subprotocol'}"
                ),
                path,
            )
            await websocket.close(1002, f"OCPP {registered} required")
            return
        cls = V21Station if websocket.subprotocol == "ocpp2.1" else V201Station
        link = cls(station_id, websocket, self)
        ended = asyncio.Event()
        old, old_ended = self.stations.get(station_id), self._ended.get(station_id)
        self.stations[station_id] = link
        self._ended[station_id] = ended
        self.connected_at[station_id] = datetime.now(UTC)
        try:
            if old is not None and old_ended is not None:
                # one connection per station: the old one is closed, and its message in hand (if any) is
                # answered or dropped before the new one's first is handled (no two writers of a seq_no)
                logger.info("station %s connected again: its old connection is replaced", station_id)
                await old._connection.close(REPLACED, "replaced by a new connection")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(old_ended.wait(), timeout=30)
            # its chain's head from the database: another process of a pool may have served it since
            self.chain.forget(station_id)
            if self.stations.get(station_id) is link:
                self.notify("connected", station_id)
            await link.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            ended.set()
            # its transactions' tails go with it: the station may send its next message to another
            # process of a pool, and back here later (the full rules take the first message again)
            self.tails.pop(station_id, None)
            if self.stations.get(station_id) is link:
                del self.stations[station_id]
                del self._ended[station_id]
                self.connected_at.pop(station_id, None)
                self.notify("disconnected", station_id)

    async def request_stop(self, station_id: str, transaction_id: str) -> str:
        """Ask a station to end a transaction (``RequestStopTransaction``, as OCPP has a CSMS end one the
        station left open); returns its answer: Accepted, Rejected, Offline or Failed."""
        link = self.stations.get(station_id)
        if link is None:
            return "Offline"
        try:
            response = await link.call(link.calls.RequestStopTransaction(transaction_id=transaction_id))
        except (TimeoutError, websockets.ConnectionClosed) as exc:
            logger.info("RequestStopTransaction to %s not delivered: %s", station_id, exc)
            return "Failed"
        return "Failed" if response is None else str(response.status)

    async def set_profile(self, station_id: str, evse_id: int, profile: dict[str, Any]) -> str:
        """Send a TxProfile; returns the station's answer: Accepted, Rejected, Offline or Failed."""
        link = self.stations.get(station_id)
        sent_at = self.clock()
        if link is None:
            status = "Offline"
        else:
            try:
                # built by backend.operations.profiles, whose output the tests validate against the schema
                payload = ocpp_keys.wire({"evse_id": evse_id, "charging_profile": profile})
                answer = await link.call_wire("SetChargingProfile", payload)
                status = "Failed" if answer is None else str(answer.get("status", "Failed"))
            except (TimeoutError, websockets.ConnectionClosed) as exc:
                logger.info("profile to %s not delivered: %s", station_id, exc)
                status = "Failed"
        self.stats.profiles_sent += 1

        if status == "Rejected":
            self.stats.profiles_rejected += 1
            error = rules.ProfileRejectedError(
                f"station {station_id} EVSE {evse_id} rejected profile {profile['id']}"
            )

            def store(session: Session) -> None:  # its row made each time it runs (a batch may run twice)
                session.add(profile_record(station_id, evse_id, profile, sent_at, status))
                rules.reject(session, station_id, error)

            await self.writer.run(store)
        else:  # a record of what was sent: nothing to refuse, written with its batch's others at once
            record = profile_values(station_id, evse_id, profile, sent_at, status)
            await self.writer.add(self.profile_records, record)
        return status

    async def clear_profile(self, station_id: str, profile_id: int) -> str:
        link = self.stations.get(station_id)
        if link is None:
            return "Offline"
        response = await link.call(link.calls.ClearChargingProfile(charging_profile_id=profile_id))
        return "Failed" if response is None else str(response.status)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await asyncio.to_thread(self.writer.close)
