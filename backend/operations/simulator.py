"""Charging stations to run against: OCPP 2.0.1/2.1 clients on the same ``ocpp`` package, one websocket
each, many per process.

Each station hosts one EVSE and the day's plug-in of one vehicle (from the ElaadNL-based fleet): the car
arrives, authorises with its idToken, follows the charging profiles it gets (a 2.1 setpoint, or a 2.0.1
limit; full power when it has none) with battery physics (efficiencies, SoC bounds, the car's own
acceptance), reports its energy registers (Import/Export, Wh) every few minutes and leaves.

Trouble, seeded per station: departures earlier or later than booked, a car that takes less than its
limit, a station that drops its connection and later reconnects with the messages it queued meanwhile
(``offline``), a clock a few seconds off, and (when asked) resends of messages whose answer was "lost".

Time is a :class:`SimClock`: ``factor`` simulated seconds per real second, so a day runs in minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ssl import SSLContext
from typing import Any

import websockets
from ocpp import exceptions as ocpp_exceptions
from ocpp.routing import on
from ocpp.v21 import ChargePoint as V21ChargePoint
from ocpp.v21 import call as v21_call
from ocpp.v21 import call_result as v21_result
from ocpp.v201 import ChargePoint as V201ChargePoint
from ocpp.v201 import call as v201_call
from ocpp.v201 import call_result as v201_result
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from backend.clock import GRID_EPOCH
from backend.operations.auth import basic_header
from backend.operations.csms import iso
from backend.operations.field import EXPORT, IMPORT, samples_of, sign_meter_value
from backend.operations.profiles import power_at

logger = logging.getLogger(__name__)


class SimClock:
    """Simulated UTC time: ``start`` plus ``factor`` times the real time elapsed."""

    def __init__(self, start: datetime, factor: float = 1.0) -> None:
        self.start = start
        self.factor = factor
        self._t0 = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)

    async def sleep_until(self, at: datetime) -> None:
        wait = (at - self()).total_seconds() / self.factor
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class SimCar:
    """The vehicle plugged in at a station, with the booking the driver made."""

    vehicle_id: str
    id_token: str
    battery_kwh: float
    charge_kw: float
    discharge_kw: float
    soc_min: float
    soc_max: float
    eta_charge: float
    eta_discharge: float
    arrival: datetime
    departure: datetime  # actual (the booking may say otherwise)
    energy_kwh: float
    #: The share of a profile's charge power the car actually takes (< 1: a car that takes less).
    acceptance: float = 1.0
    #: The energy the car asks for over ISO 15118 (``NotifyEVChargingNeeds``, with its departure and
    #: current limits), kWh from the grid; None: a car that does not say (as many do not).
    wants_kwh: float | None = None


@dataclass
class Trouble:
    drop_at: datetime | None = None
    drop_for: timedelta = timedelta(0)
    clock_skew_s: float = 0.0
    resend_probability: float = 0.0


@dataclass
class StationStats:
    sent: int = 0
    resent: int = 0
    queued: int = 0
    reconnects: int = 0
    profiles: int = 0
    #: The registers (import + export, Wh) of the last meter value the CSMS acknowledged: energy the
    #: station may hold the CSMS to.
    acknowledged_wh: int = 0


class _SimHandlers:
    station: SimStation
    result: Any

    @on("SetChargingProfile")
    async def on_set_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        status = self.station.accept_profile(evse_id, charging_profile)
        return self.result.SetChargingProfile(status=status)

    @on("RequestStopTransaction")
    async def on_request_stop(self, transaction_id: str, **_: Any) -> Any:
        return self.result.RequestStopTransaction(status=self.station.request_stop(transaction_id))

    @on("ClearChargingProfile")
    async def on_clear_profile(self, **_: Any) -> Any:
        self.station.clear_profile()
        return self.result.ClearChargingProfile(status="Accepted")


class _V21Client(_SimHandlers, V21ChargePoint):  # type: ignore[misc]
    result = v21_result


class _V201Client(_SimHandlers, V201ChargePoint):  # type: ignore[misc]
    result = v201_result


@dataclass
class SimStation:
    """One simulated station (one EVSE) and the car of the day."""

    station_id: str
    url: str
    version: str  # "2.1" | "2.0.1"
    clock: SimClock
    car: SimCar | None
    can_discharge: bool = False
    max_kw: float = 22.0
    meter_every: timedelta = timedelta(minutes=5)
    #: Clock-aligned samples besides (OCPP ``AlignedDataInterval``): a register reading at every quarter
    #: hour, so each settlement interval's energy is read, not interpolated across its edge.
    aligned_every: timedelta | None = timedelta(minutes=15)
    trouble: Trouble = field(default_factory=Trouble)
    #: Reject every profile (a station that will not be steered).
    refuse_profiles: bool = False
    #: The private key of the station's meter: each sample then carries its signedMeterValue.
    meter_key: bytes | None = None
    #: The station's HTTP Basic password (OCPP security profile 1/2; ``None``: none sent, profile 0).
    password: str | None = field(default=None, repr=False)
    #: The client TLS context for a ``wss://`` URL (``None``: the system's default trust).
    ssl_context: SSLContext | None = field(default=None, repr=False)
    seed: int = 0
    #: The id of the car's transaction (default ``<station>-tx1``; a station that hosts a car a day over
    #: several days needs one per visit).
    transaction_id: str | None = None
    profile: dict[str, Any] | None = None
    #: when (simulated) the first profile was accepted: until then the car charged as the station does
    profile_at: datetime | None = None
    import_wh: float = 0.0
    export_wh: float = 0.0
    stats: StationStats = field(default_factory=StationStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._client: Any = None
        self._outbox: list[Any] = []
        self._online = False
        self._seq = 0
        self._transaction_id = self.transaction_id or f"{self.station_id}-tx1"
        self._calls = v21_call if self.version == "2.1" else v201_call
        #: every profile accepted (None: cleared), from when (simulated): the car follows each from the
        #: moment it came
        self._held: list[tuple[datetime, dict[str, Any] | None]] = []
        self._charging = False
        self._stop_requested = False

    # --- what the car does ------------------------------------------------------------------------

    def accept_profile(self, evse_id: int, profile: dict[str, Any]) -> str:
        if self.refuse_profiles or evse_id != 1:
            return "Rejected"
        now = self.clock()
        self.profile = profile
        self._held.append((now, profile))
        if self.profile_at is None:
            self.profile_at = now
        self.stats.profiles += 1
        return "Accepted"

    def request_stop(self, transaction_id: str) -> str:
        """The CSMS asks to end a transaction: the car's, while it is open, ends at the next meter step."""
        if transaction_id != self._transaction_id or not self._charging:
            return "Rejected"
        self._stop_requested = True
        return "Accepted"

    def clear_profile(self) -> None:
        self.profile = None
        self._held.append((self.clock(), None))

    def power_kw(self, at: datetime, profile: dict[str, Any] | None = None) -> float:
        """Grid-side power at ``at`` under ``profile`` (default: the one held now): > 0 charging, < 0
        discharging, within the car's and battery's limits."""
        car = self.car
        assert car is not None
        wanted_kw = min(car.charge_kw, self.max_kw)
        profile = self.profile if profile is None else profile
        if profile is not None:
            value, limit, discharge_limit = power_at(profile, at)
            wanted_w = float(value if value is not None else wanted_kw * 1000)
            if limit is not None:
                wanted_w = min(wanted_w, float(limit))
            if discharge_limit is not None:
                wanted_w = max(wanted_w, float(discharge_limit))
            wanted_kw = wanted_w / 1000.0
        if wanted_kw > 0:
            wanted_kw = min(wanted_kw, car.charge_kw * car.acceptance, self.max_kw)
        elif wanted_kw < 0:
            if not (self.version == "2.1" and self.can_discharge):
                wanted_kw = 0.0
            wanted_kw = max(wanted_kw, -car.discharge_kw)
        return wanted_kw

    def advance(self, start: datetime, end: datetime) -> None:
        """Charge or discharge from ``start`` to ``end`` as the car did: each profile from the moment the
        station accepted it, each of its periods from the period's start (battery physics; Wh)."""
        cuts = {start, end}
        for at, profile in self._held:
            if start < at < end:
                cuts.add(at)
            if profile is None:
                continue
            schedule = profile["charging_schedule"][0]
            begins = datetime.fromisoformat(str(schedule["start_schedule"]).replace("Z", "+00:00"))
            for period in schedule["charging_schedule_period"]:
                at = begins + timedelta(seconds=period["start_period"])
                if start < at < end:
                    cuts.add(at)
        times = sorted(cuts)
        for a, b in itertools.pairwise(times):
            held = [profile for at, profile in self._held if at <= a]
            self._advance(a, b, held[-1] if held else None)

    def _advance(self, start: datetime, end: datetime, profile: dict[str, Any] | None) -> None:
        """One stretch under one profile period (None: no profile, the car takes full power)."""
        car = self.car
        assert car is not None
        dt_h = (end - start).total_seconds() / 3600.0
        if dt_h <= 0:
            return
        p = self.power_kw(start, profile) if profile is not None else self._unsteered_kw()
        e_max, e_min = car.battery_kwh * car.soc_max, car.battery_kwh * car.soc_min
        if p > 0:
            room = max(e_max - car.energy_kwh, 0.0) / car.eta_charge
            grid_kwh = min(p * dt_h, room)
            car.energy_kwh += grid_kwh * car.eta_charge
            self.import_wh += grid_kwh * 1000.0
        elif p < 0:
            available = max(car.energy_kwh - e_min, 0.0) * car.eta_discharge
            grid_kwh = min(-p * dt_h, available)
            car.energy_kwh -= grid_kwh / car.eta_discharge
            self.export_wh += grid_kwh * 1000.0

    def _unsteered_kw(self) -> float:
        """What the car draws before any profile: the station's and the car's full charge power."""
        car = self.car
        assert car is not None
        return min(car.charge_kw * car.acceptance, self.max_kw)

    @staticmethod
    def register(wh: float) -> int:
        """A meter register shows whole Wh, truncated (a float's last bit never costs a Wh)."""
        return int(wh + 1e-6)

    def meter_value(self, at: datetime) -> dict[str, Any]:
        car = self.car
        assert car is not None
        stamp = iso(at + timedelta(seconds=self.trouble.clock_skew_s))
        imported: dict[str, Any] = {
            "value": float(self.register(self.import_wh)),
            "measurand": IMPORT,
            "unit_of_measure": {"unit": "Wh"},
        }
        if self.meter_key is not None:
            imported["signed_meter_value"] = sign_meter_value(
                self.meter_key,
                self._transaction_id,
                stamp,
                self.register(self.import_wh),
                self.register(self.export_wh),
            )
        return {
            "timestamp": stamp,
            "sampled_value": [
                imported,
                {
                    "value": float(self.register(self.export_wh)),
                    "measurand": EXPORT,
                    "unit_of_measure": {"unit": "Wh"},
                },
                {
                    "value": round(100.0 * car.energy_kwh / car.battery_kwh, 1),
                    "measurand": "SoC",
                    "unit_of_measure": {"unit": "Percent"},
                },
            ],
        }

    # --- the protocol -------------------------------------------------------------------------------

    async def _connect(self) -> None:
        subprotocol = Subprotocol("ocpp2.1" if self.version == "2.1" else "ocpp2.0.1")
        headers = (
            {} if self.password is None else {"Authorization": basic_header(self.station_id, self.password)}
        )
        websocket = await connect(
            f"{self.url}/{self.station_id}",
            subprotocols=[subprotocol],
            additional_headers=headers,
            ssl=self.ssl_context,
            ping_interval=None,
            compression=None,
        )
        cls = _V21Client if self.version == "2.1" else _V201Client
        client = cls(self.station_id, websocket, response_timeout=30)
        client.station = self
        self._client = client
        self._websocket = websocket
        self._reader = asyncio.create_task(self._read(client))
        self._online = True
        await self._call(
            self._calls.BootNotification(
                charging_station={"model": "SimStation", "vendor_name": "v2g-settle"}, reason="PowerUp"
            )
        )
        await self._call(
            self._calls.StatusNotification(
                timestamp=iso(self.clock()), connector_status="Available", evse_id=1, connector_id=1
            )
        )

    async def _read(self, client: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await client.start()

    async def _call(self, payload: Any) -> Any:
        if not self._online:
            self._outbox.append(payload)
            self.stats.queued += 1
            return None
        try:
            response = await self._request(payload)
        except (websockets.ConnectionClosed, TimeoutError):
            return self._queue_after_loss(payload)
        self.stats.sent += 1
        for value in getattr(payload, "meter_value", None) or []:
            for sample in samples_of([value]):
                self.stats.acknowledged_wh = max(
                    self.stats.acknowledged_wh, sample.import_wh + sample.export_wh
                )
        if self.trouble.resend_probability and self._rng.random() < self.trouble.resend_probability:
            try:
                await self._request(payload)  # the answer "was lost": the same message again
            except (websockets.ConnectionClosed, TimeoutError):
                return self._queue_after_loss(payload)
            self.stats.resent += 1
        return response

    async def _request(self, payload: Any) -> Any:
        """The call and its answer; a connection that closes meanwhile (the reader ends) fails it at once
        rather than after the response timeout, and so does a CALLERROR ``InternalError`` (the CSMS could
        not store the message: it is not acknowledged, and is sent again). Any other CALLERROR is the
        CSMS refusing the message: ``None``."""
        call = asyncio.ensure_future(self._client.call(payload, suppress=False))
        await asyncio.wait({call, self._reader}, return_when=asyncio.FIRST_COMPLETED)
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            raise TimeoutError("the connection closed before the answer")
        try:
            return call.result()
        except ocpp_exceptions.InternalError as exc:
            raise TimeoutError(f"the CSMS could not take the message: {exc}") from None
        except ocpp_exceptions.OCPPError:
            return None

    def _queue_after_loss(self, payload: Any) -> None:
        """The CSMS went away (a restart): queue the message (its answer never came, so it may be stored
        already: the CSMS recognises it by its seq_no) and reconnect later."""
        self._online = False
        self._reader.cancel()
        self._outbox.append(payload)
        self.stats.queued += 1

    async def _go_offline(self) -> None:
        self._online = False
        await self._websocket.close()
        self._reader.cancel()

    async def _reconnect(self) -> bool:
        """Connect again and send what was queued, in order; ``False`` if the CSMS does not answer yet."""
        try:
            await self._connect()
        except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed, TimeoutError):
            self._online = False
            return False
        self.stats.reconnects += 1
        queued, self._outbox = self._outbox, []
        for payload in queued:
            if hasattr(payload, "offline"):
                payload.offline = True
            await self._call(payload)
        return self._online

    def _event(self, event_type: str, trigger: str, at: datetime, **extra: Any) -> Any:
        car = self.car
        assert car is not None
        payload = self._calls.TransactionEvent(
            event_type=event_type,
            timestamp=iso(at + timedelta(seconds=self.trouble.clock_skew_s)),
            trigger_reason=trigger,
            seq_no=self._seq,
            transaction_info={"transaction_id": self._transaction_id, **extra},
            evse={"id": 1, "connector_id": 1},
            meter_value=[self.meter_value(at)],
            **(
                {"id_token": {"id_token": car.id_token, "type": "ISO14443"}}
                if event_type == "Started"
                else {}
            ),
        )
        self._seq += 1
        return payload

    async def _first_connect(self, until: datetime) -> None:
        """Connect, retrying as a station does (backing off, with jitter) while the CSMS is not up or too
        busy to finish the handshake (each one verifies a password: a whole fleet at once queues); a
        refused password (HTTP 401) is not retried, nor anything after ``until``."""
        delay = 0.5
        while True:
            try:
                await self._connect()
                return
            except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
                if isinstance(exc, websockets.InvalidStatus) and exc.response.status_code == 401:
                    raise
                if self.clock() >= until:
                    raise
                logger.info("station %s: connection failed (%s), retrying", self.station_id, exc)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 10.0)

    async def run(self, until: datetime) -> None:
        """Connect, host the car's visit, disconnect; returns at ``until`` (simulated) at the latest."""
        await self._first_connect(until)
        try:
            car = self.car
            if car is None or car.arrival >= until:
                await self.clock.sleep_until(until)
                return
            await self.clock.sleep_until(car.arrival)
            now = car.arrival  # the event's time (the clock may be a tick past it)
            await self._call(self._calls.Authorize(id_token={"id_token": car.id_token, "type": "ISO14443"}))
            await self._call(self._event("Started", "Authorized", now))
            if car.wants_kwh is not None:
                await self._call(
                    self._calls.NotifyEVChargingNeeds(
                        evse_id=1,
                        charging_needs={
                            "requested_energy_transfer": "AC_three_phase",
                            "departure_time": iso(car.departure),
                            "ac_charging_parameters": {
                                "energy_amount": round(car.wants_kwh * 1000),
                                "ev_min_current": 6,
                                "ev_max_current": max(6, round(car.charge_kw * 1000 / (3 * 230))),
                                "ev_max_voltage": 230,
                            },
                        },
                    )
                )
            last = now
            end = min(car.departure, until)
            dropped = False
            self._charging = True
            while last < end and not self._stop_requested:
                step_end = min(last + self.meter_every, end)
                aligned = False
                if self.aligned_every is not None:
                    boundary = last + self.aligned_every - (last - GRID_EPOCH) % self.aligned_every
                    if boundary <= step_end:
                        step_end, aligned = boundary, boundary < end
                await self.clock.sleep_until(step_end)
                self.advance(last, step_end)
                last = step_end
                drop = self.trouble.drop_at
                if drop is not None and not dropped and last >= drop and self._online:
                    await self._go_offline()
                    dropped = True
                planned_outage = dropped and drop is not None and last < drop + self.trouble.drop_for
                if not self._online and not planned_outage:
                    await self._reconnect()
                if last < end:
                    trigger = "MeterValueClock" if aligned else "MeterValuePeriodic"
                    await self._call(self._event("Updated", trigger, last))
            while not self._online:  # the last messages must reach the CSMS
                if not await self._reconnect():
                    await asyncio.sleep(0.2)
            self._charging = False
            if self._stop_requested:
                await self._call(self._event("Ended", "RemoteStop", last, stopped_reason="Remote"))
            else:
                reason = "EVDisconnected" if car.departure <= until else "Other"
                await self._call(self._event("Ended", "EVCommunicationLost", last, stopped_reason=reason))
            await self._call(
                self._calls.StatusNotification(
                    timestamp=iso(self.clock()), connector_status="Available", evse_id=1, connector_id=1
                )
            )
            deadline = time.monotonic() + 60
            while self._outbox and time.monotonic() < deadline:  # nothing is left unsent
                if not await self._reconnect():
                    await asyncio.sleep(0.2)
        finally:
            if self._online:
                await self._websocket.close()
                self._reader.cancel()


def seeded_trouble(
    rng: random.Random, day_start: datetime, *, drops: float = 0.1, skew_s: float = 20.0, resend: float = 0.0
) -> Trouble:
    """The trouble of one station: sometimes a drop of 10–40 minutes, a clock off by up to ``skew_s``."""
    drop_at = None
    if rng.random() < drops:
        drop_at = day_start + timedelta(hours=rng.uniform(8, 20))
    return Trouble(
        drop_at=drop_at,
        drop_for=timedelta(minutes=rng.uniform(10, 40)),
        clock_skew_s=rng.uniform(-skew_s, skew_s),
        resend_probability=resend,
    )


async def run_stations(
    stations: list[SimStation], until: datetime, on_done: Callable[[SimStation], None] | None = None
) -> None:
    """Run every station to ``until``; a station that fails is logged, the others go on."""

    async def one(station: SimStation) -> None:
        try:
            await station.run(until)
        except Exception:
            logger.exception("station %s failed", station.station_id)
        if on_done is not None:
            on_done(station)

    await asyncio.gather(*(one(s) for s in stations))


def day_start(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)
