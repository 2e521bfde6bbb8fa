"""Field data as received: stations, idTokens, transactions and meter registers, each message stored
before it is believed, and every refusal named, logged and counted.

Field data is hostile: a message can be late, doubled, out of order, or wrong. The rules:

- a station id the registry does not know is refused at connection (``UnknownStationError``); an EVSE
  it does not have, ``UnknownEvseError``; an idToken that authorises no vehicle, ``UnknownIdTokenError``
  (the transaction is still recorded, unattributed, so that its energy is never lost);
- meter samples are idempotent on (station, transaction, seq_no): a message sent twice is stored once
  (``DuplicateMessageError``, acknowledged so that the station stops resending); one older than the last
  stored is kept (``OutOfOrderMessageError``, counted) since energy is read from registers; a jump in
  seq_no is a ``SequenceGapError`` (counted: the registers still carry the energy);
- a register that runs backwards against the samples around it in the station's time is refused
  (``RegisterBackwardsError``); an event for a transaction never started is recorded as started there
  (``UnknownTransactionError``, counted);
- a transaction without an end is closed at its last sample when the day is closed
  (``TransactionNeverEndedError``).

Writes go through :class:`GroupCommit`: every message's rows are committed (in one transaction with the
messages around it) before the station gets its answer, so an acknowledged message is never lost and
the database sees a few commits a second, not one per message.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import (
    ChargingProfileRow,
    EvChargingNeedsRow,
    FieldRejection,
    IdTokenRow,
    MeterReading,
    OcppTransaction,
    PlugSession,
    Station,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

IMPORT = "Energy.Active.Import.Register"
EXPORT = "Energy.Active.Export.Register"
NET = "Energy.Active.Net.Register"


class FieldDataError(Exception):
    """A message from the field refused or flagged; its class name is the rejection's kind."""


class UnknownStationError(FieldDataError):
    pass


class UnknownEvseError(FieldDataError):
    pass


class UnknownIdTokenError(FieldDataError):
    pass


class UnknownTransactionError(FieldDataError):
    pass


class DuplicateMessageError(FieldDataError):
    pass


class OutOfOrderMessageError(FieldDataError):
    pass


class SequenceGapError(FieldDataError):
    pass


class RegisterBackwardsError(FieldDataError):
    pass


class MalformedFrameError(FieldDataError):
    pass


class MissingRegisterError(FieldDataError):
    pass


class TransactionNeverEndedError(FieldDataError):
    pass


class ProfileRejectedError(FieldDataError):
    pass


class OcppVersionMismatchError(FieldDataError):
    """A station offered another OCPP version than the one it is registered for."""


class FutureTimestampError(FieldDataError):
    """A station's timestamp ahead of the CSMS's clock by more than the tolerance: the CSMS's time stands."""


class EndBeforeStartError(FieldDataError):
    """A transaction's end before its start: it ends at its start."""


class StaleTransactionError(FieldDataError):
    """A car started a transaction while another of its own was open: the older one is closed."""


class UnknownVehicleError(FieldDataError):
    """An open transaction of no registered vehicle: it is not planned."""


class ImpossibleStateOfChargeError(FieldDataError):
    """A car's energy from its meter lies outside its battery: it is not planned."""


class InvalidMeterSignatureError(FieldDataError):
    pass


class StationAuthenticationError(FieldDataError):
    """A connection refused at the handshake: no, malformed or wrong HTTP Basic credentials, a user that
    is not the station id of the URL, or a station without a password (security profile 0 not allowed)."""


SIGNING_METHOD = "ECDSA-secp256k1-SHA256"
ENCODING_METHOD = "V2G-JSON"


def sign_meter_value(
    key: bytes, transaction_id: str, at: str, import_wh: int, export_wh: int
) -> dict[str, Any]:
    """A meter's ``signedMeterValue`` (OCPP 2.x): the reading and the meter's signature over it, in an
    OCMF-like envelope ``V2G|<reading JSON>|<signature JSON>`` (base64)."""
    import base64
    import hashlib
    import json

    from eth_keys.datatypes import PrivateKey

    reading = json.dumps(
        {"TX": transaction_id, "TM": at, "IM": import_wh, "EX": export_wh}, separators=(",", ":")
    )
    private = PrivateKey(key)
    signature = private.sign_msg_hash(hashlib.sha256(reading.encode()).digest()).to_bytes().hex()
    envelope = f"V2G|{reading}|" + json.dumps({"SA": SIGNING_METHOD, "SD": signature}, separators=(",", ":"))
    return {
        "signed_meter_data": base64.b64encode(envelope.encode()).decode(),
        "signing_method": SIGNING_METHOD,
        "encoding_method": ENCODING_METHOD,
        "public_key": private.public_key.to_bytes().hex(),
    }


def verify_meter_value(
    signed: dict[str, Any], public_key_hex: str, transaction_id: str, sample: Sample
) -> dict[str, Any]:
    """Check a signed meter value against the station meter's registered key and the sample it came with;
    returns what is kept for the audit, or raises :class:`InvalidMeterSignatureError`."""
    import base64
    import hashlib
    import json

    from eth_keys.datatypes import PublicKey, Signature
    from eth_keys.exceptions import BadSignature
    from eth_utils.exceptions import ValidationError

    try:
        envelope = base64.b64decode(str(signed["signed_meter_data"]), validate=True).decode()
        tag, reading, trailer = envelope.split("|", 2)
        signature = bytes.fromhex(json.loads(trailer)["SD"])
        values = json.loads(reading)
        public_key = PublicKey(bytes.fromhex(public_key_hex))
        valid = tag == "V2G" and public_key.verify_msg_hash(
            hashlib.sha256(reading.encode()).digest(), Signature(signature)
        )
    except (KeyError, ValueError, TypeError, BadSignature, ValidationError) as exc:
        raise InvalidMeterSignatureError(
            f"transaction {transaction_id}: unreadable signed meter value ({exc})"
        ) from None
    if not valid:
        raise InvalidMeterSignatureError(
            f"transaction {transaction_id}: the meter's signature does not verify"
        )
    if (values.get("TX"), values.get("IM"), values.get("EX")) != (
        transaction_id,
        sample.import_wh,
        sample.export_wh,
    ):
        raise InvalidMeterSignatureError(
            f"transaction {transaction_id}: the signed reading {values} is not the reported "
            f"{sample.import_wh}/{sample.export_wh} Wh"
        )
    try:
        signed_at = parse_time(str(values.get("TM")))
    except ValueError:
        signed_at = None
    if signed_at != sample.measured_at:
        raise InvalidMeterSignatureError(
            f"transaction {transaction_id}: the signed time {values.get('TM')} is not the sample's "
            f"{sample.measured_at.isoformat()}"
        )
    return {"envelope": signed["signed_meter_data"], "public_key": public_key_hex, "verified": True}


@dataclass(frozen=True)
class Sample:
    """One meter sample: the registers at the station's time (whole Wh).

    A meter that reports only its import register has ``export_wh`` 0 (and the other way round); one that
    reports only ``Energy.Active.Net.Register`` (import minus export) has ``net`` set and its register in
    ``import_wh``: its rises are imported energy, its falls exported energy."""

    measured_at: datetime
    import_wh: int
    export_wh: int
    soc: float | None = None
    signed: dict[str, Any] | None = None
    net: bool = False


def parse_time(text: str) -> datetime:
    """An OCPP timestamp (RFC 3339) as an aware UTC datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp without offset: {text}")
    return value.astimezone(UTC)


def _get(d: dict[str, Any], snake: str, camel: str) -> Any:
    return d[snake] if snake in d else d.get(camel)


#: Energy units and their factor to Wh (OCPP 2.0.1 part 2, UnitOfMeasureType; ``multiplier`` is a power of
#: ten on top).
ENERGY_UNITS = {"Wh": 1.0, "kWh": 1000.0}


def _register_wh(sampled: dict[str, Any]) -> float:
    unit = _get(sampled, "unit_of_measure", "unitOfMeasure") or {}
    name = unit.get("unit", "Wh")
    if name not in ENERGY_UNITS:
        raise MalformedFrameError(f"energy register in {name!r} (Wh or kWh)")
    multiplier = unit.get("multiplier", 0)
    if not isinstance(multiplier, int) or not -3 <= multiplier <= 9:
        raise MalformedFrameError(f"unitOfMeasure multiplier {multiplier!r}")
    value = float(sampled["value"])
    if not math.isfinite(value) or value < -1e15 or value > 1e15:
        raise MalformedFrameError(f"register value {sampled['value']!r}")
    return value * ENERGY_UNITS[name] * 10.0**multiplier


def _whole_wh(value: float) -> int:
    """A register in whole Wh: nearest, halves up (the trade rounding rule)."""
    return math.floor(value + 0.5)


def samples_of(meter_values: list[dict[str, Any]] | None) -> list[Sample]:
    """The energy registers in OCPP ``meterValue`` items, as real meters report them: Import and Export
    registers, either alone (the other is 0), ``Energy.Active.Net.Register`` alone, per-phase values
    (summed when the meter gives no total), Wh or kWh with ``unitOfMeasure`` multipliers. Items with no
    energy register (SoC only, ...) carry no sample."""
    out: list[Sample] = []
    for item in meter_values or []:
        when = parse_time(str(item["timestamp"]))
        totals: dict[str, float] = {}
        phases: dict[str, dict[str, float]] = {}
        soc: float | None = None
        signed: dict[str, Any] | None = None
        for sampled in _get(item, "sampled_value", "sampledValue") or []:
            measurand = sampled.get("measurand", IMPORT)
            if measurand in (IMPORT, EXPORT, NET):
                value = _register_wh(sampled)
                phase = sampled.get("phase")
                if phase is None:
                    totals[measurand] = value
                elif phase in ("L1", "L2", "L3"):
                    phases.setdefault(measurand, {})[phase] = value
                signed_value = _get(sampled, "signed_meter_value", "signedMeterValue")
                if signed_value and (phase is None or signed is None):
                    signed = {
                        "signed_meter_data": _get(signed_value, "signed_meter_data", "signedMeterData"),
                        "signing_method": _get(signed_value, "signing_method", "signingMethod"),
                        "encoding_method": _get(signed_value, "encoding_method", "encodingMethod"),
                        "public_key": _get(signed_value, "public_key", "publicKey"),
                    }
            elif measurand == "SoC":
                soc = float(sampled["value"])
        registers = {m: totals.get(m, sum(phases.get(m, {}).values())) for m in (IMPORT, EXPORT, NET)}
        present = {m for m in (IMPORT, EXPORT, NET) if m in totals or m in phases}
        if not present:
            continue
        if IMPORT in present or EXPORT in present:
            out.append(Sample(when, _whole_wh(registers[IMPORT]), _whole_wh(registers[EXPORT]), soc, signed))
        else:
            out.append(Sample(when, _whole_wh(registers[NET]), 0, soc, signed, net=True))
    return out


class Batched(Protocol):
    """Writes that many messages make alike (a frame at the end of its station's chain, the next samples
    of a transaction): :meth:`write` does a whole batch's in a few statements, :meth:`write_one` one of
    them alone (when its batch is written again write by write), :meth:`done` learns what was committed
    (``(item, result)`` in order) and what was not, :meth:`reset` that a transaction failed."""

    def write(self, session: Session, items: list[Any]) -> list[Any]: ...

    def write_one(self, session: Session, item: Any) -> Any: ...

    def done(self, committed: list[tuple[Any, Any]], failed: list[Any]) -> None: ...

    def reset(self) -> None: ...


class _TogetherFailedError(Exception):
    """A write of a batch written together (no savepoint of its own) raised: the batch is rolled back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Job:
    fn: Callable[[Session], Any] | None  # a write of its own; None for an item of a Batched kind
    item: Any
    kind: Batched | None
    isolated: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class GroupCommit:
    """One writer thread that runs many messages' writes in one database transaction.

    :meth:`run` queues ``fn(session)`` and returns (awaitably) its result once the transaction holding
    it has committed; a function that raises has only its own writes undone (a savepoint) and its
    exception is raised to its caller. Writes that cannot be refused on their own go without savepoints,
    after the batch's others: a record of what was sent (``savepoint=False``), and the items of a
    :class:`Batched` kind (:meth:`add`), which a batch writes together (a frame chain's rows in one
    INSERT, a transaction's next samples in three statements for all of them: on PostgreSQL a round
    trip per statement, not per message). Should any of these raise, the batch is rolled back and written
    again write by write, each in its savepoint (a Batched item by its ``write_one``): the writes that
    fail alone fail, by name, to their callers; the others stand. A transaction that fails itself (its
    begin, its commit, the connection) fails the whole batch and is never written again: a commit that
    failed may have been made."""

    def __init__(self, sessions: sessionmaker[Session], max_batch: int = 500) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="field-writer", daemon=True)
        self._thread.start()
        self.commits = 0
        self.writes = 0
        #: batches written again write by write, after the batch as one failed
        self.retried = 0

    async def run(self, fn: Callable[[Session], T], *, savepoint: bool = True) -> T:
        result: T = await self._put(fn, None, None, savepoint)
        return result

    def add(self, kind: Batched, item: Any) -> asyncio.Future[Any]:
        """Queue ``item`` of a :class:`Batched` kind now (ahead of anything queued after it) and return the
        future of its result: a frame added before its message's rules is stored in the same transaction
        or an earlier one, so no later than they are."""
        return self._put(None, item, kind, False)

    def _put(
        self, fn: Callable[[Session], Any] | None, item: Any, kind: Batched | None, isolated: bool
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Job(fn, item, kind, isolated, future, loop))
        return future

    def run_sync(self, fn: Callable[[Session], T]) -> T:
        """The same, from a thread that is not the event loop's (tests, the day's close)."""
        with self.sessions.begin() as session:
            return fn(session)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            together = any(not j.isolated for j in batch)
            try:
                outcomes = self._write(batch, together=together)
            except _TogetherFailedError as failed:  # a write without its savepoint raised: written again
                logger.warning(
                    "a batch of %d field writes failed as one (%s: %s): each is written on its own",
                    len(batch), type(failed.error).__name__, failed.error,
                )  # fmt: skip
                self.retried += 1
                try:
                    outcomes = self._write(batch, together=False)
                except Exception as again:
                    outcomes = self._lost(batch, again)
            except Exception as exc:
                # the transaction itself (begin, commit, the connection): never written again, since a
                # commit that failed may have been made (a connection lost during COMMIT)
                outcomes = self._lost(batch, exc)
            self._done(batch, outcomes)
            for j, (value, error) in zip(batch, outcomes, strict=True):
                j.loop.call_soon_threadsafe(_settle, j.future, value, error)

    def _lost(self, batch: list[_Job], exc: Exception) -> list[tuple[Any, BaseException | None]]:
        """A batch whose transaction failed: nobody's writes stand (as far as this side can know), and
        what the Batched kinds keep from earlier commits is forgotten (a database restored or failed
        over may have lost them too)."""
        logger.error("field data commit failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        for kind in {id(j.kind): j.kind for j in batch if j.kind is not None}.values():
            kind.reset()
        return [(None, exc)] * len(batch)

    def _write(self, batch: list[_Job], *, together: bool) -> list[tuple[Any, BaseException | None]]:
        """One transaction for the batch: ``together``, the writes that go without savepoints after the
        isolated ones (raising if any of them does); otherwise every write in its own savepoint. Each
        write's (value, error)."""
        outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * len(batch)
        with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "sqlite":
                # the write lock first (waiting for it as long as the busy timeout allows): a deferred
                # transaction that read before another process committed cannot write at all ("database
                # is locked" at once, no waiting)
                session.execute(text("BEGIN IMMEDIATE"))
            for k, j in enumerate(batch):
                if j.isolated or not together:
                    try:
                        with session.begin_nested():
                            value = j.fn(session) if j.fn is not None else j.kind.write_one(session, j.item)  # type: ignore[union-attr]
                        # only once its savepoint is released: a release that fails (a database locked)
                        # is this write's failure, never a success and a failure both
                        outcomes[k] = (value, None)
                    except Exception as exc:  # this write's own refusal: the others stand
                        outcomes[k] = (None, exc)
            if together:
                try:
                    kinds: dict[int, tuple[Batched, list[int]]] = {}
                    for k, j in enumerate(batch):
                        if j.isolated:
                            continue
                        if j.fn is not None:
                            outcomes[k] = (j.fn(session), None)
                        else:
                            kinds.setdefault(id(j.kind), (j.kind, []))[1].append(k)  # type: ignore[arg-type]
                    for kind, ks in kinds.values():
                        values = kind.write(session, [batch[k].item for k in ks])
                        for k, value in zip(ks, values, strict=True):
                            outcomes[k] = (value, None)
                    session.flush()  # their rows now: a failure here is theirs, the commit's is not
                except Exception as exc:
                    raise _TogetherFailedError(exc) from exc
        self.commits += 1
        self.writes += len(batch)
        return outcomes

    @staticmethod
    def _done(batch: list[_Job], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        kinds: dict[int, tuple[Batched, list[tuple[Any, Any]], list[Any]]] = {}
        for j, (value, error) in zip(batch, outcomes, strict=True):
            if j.kind is None:
                continue
            _, committed, failed = kinds.setdefault(id(j.kind), (j.kind, [], []))
            if error is None:
                committed.append((j.item, value))
            else:
                failed.append(j.item)
        for kind, committed, failed in kinds.values():
            try:
                kind.done(committed, failed)
            except Exception:  # a kind's bookkeeping: never the writer's end
                logger.exception("field writer: %s.done failed", type(kind).__name__)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def refuse_credit(session: Session, station_id: str, transaction_id: str) -> None:
    """Keep that a transaction was answered NoCredit at its start: the operations loop plans no energy
    for it (in whichever process it runs, and after a restart)."""
    tx = session.get(OcppTransaction, (station_id, transaction_id))
    if tx is not None:
        tx.credit_refused = True


def reject(session: Session, station_id: str | None, error: FieldDataError, raw: str | None = None) -> None:
    """Record a refusal (in its own savepoint: the message's other writes may stand or not)."""
    kind = type(error).__name__
    logger.warning(
        "%s from %s: %s", kind, station_id or "?", error, extra={"station": station_id, "refusal": kind}
    )
    session.add(
        FieldRejection(
            station_id=station_id,
            kind=kind,
            detail=str(error)[:500],
            raw=None if raw is None else raw[:2000],
            at=datetime.now(UTC),
        )
    )


# --- the rules, one function per message kind (each runs inside GroupCommit) -----------------------------


def known_station(session: Session, station_id: str) -> Station:
    station = session.get(Station, station_id)
    if station is None:
        raise UnknownStationError(f"station {station_id} is not in the registry")
    return station


def boot(session: Session, station_id: str, now: datetime) -> Station:
    station = known_station(session, station_id)
    station.boots += 1
    station.last_seen = now
    return station


def seen(session: Session, station_id: str, now: datetime) -> None:
    station = session.get(Station, station_id)
    if station is not None:
        station.last_seen = now


def _number(parameters: dict[str, Any] | None, *keys: str) -> float | None:
    """The first of ``keys`` in ``parameters`` that is a finite number."""
    for key in keys:
        value = (parameters or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def open_transaction(session: Session, station_id: str, evse_id: int) -> OcppTransaction | None:
    """The EVSE's transaction: the open one started last (an older one left open is a stale transaction)."""
    return session.scalars(
        select(OcppTransaction)
        .where(
            OcppTransaction.station_id == station_id,
            OcppTransaction.evse_id == evse_id,
            OcppTransaction.ended_at.is_(None),
        )
        .order_by(OcppTransaction.started_at.desc(), OcppTransaction.transaction_id.desc())
    ).first()


def ev_message(
    session: Session,
    station_id: str,
    evse_id: int,
    kind: str,
    body: dict[str, Any],
    now: datetime,
) -> EvChargingNeedsRow:
    """Store what a car said through its station: ``needs`` (``NotifyEVChargingNeeds``: departure,
    requested energy, state of charge and capacity, power limits; AC, DC and 2.1's V2X parameters) or
    ``schedule`` (``NotifyEVChargingSchedule``, kept as said). Attached to the EVSE's open transaction."""
    station = known_station(session, station_id)
    if not 1 <= evse_id <= station.evses:
        raise UnknownEvseError(f"station {station_id} has no EVSE {evse_id}")
    station.last_seen = now
    tx = open_transaction(session, station_id, evse_id)
    row = EvChargingNeedsRow(
        station_id=station_id,
        evse_id=evse_id,
        transaction_id=tx.transaction_id if tx else None,
        kind=kind,
        received_at=now,
        import_wh_at=tx.last_import_wh if tx else None,
        body=body,
    )
    if kind == "needs":
        needs = body.get("charging_needs") or {}
        ac, dc = needs.get("ac_charging_parameters"), needs.get("dc_charging_parameters")
        v2x = needs.get("v2x_charging_parameters")
        departure = needs.get("departure_time")
        if isinstance(departure, str):
            row.departure_at = parse_time(departure)
        energy = next(
            (
                e
                for e in (
                    _number(v2x, "ev_target_energy_request"),
                    _number(dc, "energy_amount"),
                    _number(ac, "energy_amount"),
                )
                if e is not None
            ),
            None,
        )
        row.energy_wh = round(energy) if energy is not None and energy >= 0 else None
        row.soc = _number(dc, "state_of_charge")
        capacity = _number(dc, "ev_energy_capacity")
        row.capacity_wh = round(capacity) if capacity is not None and capacity > 0 else None
        mode = str(needs.get("requested_energy_transfer", ""))
        phases = {"AC_single_phase": 1, "AC_two_phase": 2}.get(mode, 3)
        current, voltage = _number(ac, "ev_max_current"), _number(ac, "ev_max_voltage")
        ac_power = phases * current * voltage if current is not None and voltage is not None else None
        # a limit that is not a positive power is no limit the planner can keep: left out, not believed
        row.max_charge_w = next(
            (
                p
                for p in (_number(v2x, "max_charge_power"), _number(dc, "ev_max_power"), ac_power)
                if p is not None and p > 0
            ),
            None,
        )
        discharge = _number(v2x, "max_discharge_power")
        row.max_discharge_w = abs(discharge) if discharge is not None else None
    session.add(row)
    return row


def authorize(session: Session, station_id: str, token: str) -> str | None:
    """The vehicle ``token`` authorises, or ``None`` (``UnknownIdTokenError`` recorded)."""
    row = session.get(IdTokenRow, token)
    if row is None:
        reject(session, station_id, UnknownIdTokenError(f"idToken {token!r} authorises no vehicle"))
        return None
    return row.vehicle_id


def _plug_session_of(session: Session, vehicle_id: str | None, at: datetime) -> str | None:
    if vehicle_id is None:
        return None
    candidates = list(
        session.scalars(
            select(PlugSession).where(PlugSession.vehicle_id == vehicle_id).order_by(PlugSession.arrival)
        )
    )
    # the booking whose window is nearest the actual start (a car may come early or late)
    best = min(
        candidates,
        key=lambda p: (
            0.0
            if p.arrival <= at < p.departure
            else min(abs((p.arrival - at).total_seconds()), abs((p.departure - at).total_seconds()))
        ),
        default=None,
    )
    return best.id if best is not None else None


@dataclass(frozen=True)
class EventOutcome:
    stored: int
    flagged: list[str]
    vehicle_id: str | None
    ended: bool
    #: the transaction's state after the event, for the CSMS's in-order fast path
    tail: TxTail | None = None


@dataclass(frozen=True)
class TxTail:
    """Where a transaction stands: its last seq_no and latest registers (an in-order next message is
    checked against these alone)."""

    last_seq_no: int
    last_measured_at: datetime | None
    last_import_wh: int
    last_export_wh: int
    signs: bool  # the station's meter signs: every sample needs its signature verified (slow path)

    def accepts(self, seq_no: int, samples: list[Sample]) -> bool:
        """Whether a message is the next in order with every register at or after the last, from a meter
        that does not sign: then nothing but this tail can contradict it (the CSMS's fast path)."""
        if self.signs or seq_no != self.last_seq_no + 1 or self.last_measured_at is None:
            return False
        at, imported, exported = self.last_measured_at, self.last_import_wh, self.last_export_wh
        for s in samples:
            if (
                s.signed is not None
                or s.net
                or s.measured_at < at
                or s.import_wh < imported
                or s.export_wh < exported
            ):
                return False
            at, imported, exported = s.measured_at, s.import_wh, s.export_wh
        return True


InOrder = tuple[str, str, int, list[Sample], datetime]
READINGS, STATIONS, TRANSACTIONS = (
    cast(Table, MeterReading.__table__),
    cast(Table, Station.__table__),
    cast(Table, OcppTransaction.__table__),
)  # station, transaction, seq_no, samples, received


class Unkept(ABC):
    """A :class:`Batched` kind that keeps nothing between batches: an item alone is a batch of one."""

    @abstractmethod
    def write(self, session: Session, items: list[Any]) -> list[Any]: ...

    def write_one(self, session: Session, item: Any) -> Any:
        return self.write(session, [item])[0]

    def done(self, committed: list[tuple[Any, Any]], failed: list[Any]) -> None:
        return None

    def reset(self) -> None:
        return None


class InOrderSamples(Unkept):
    """The fast path for the next in-order messages of known transactions from stations whose meters do
    not sign (the CSMS checked each seq_no and its registers against :class:`TxTail`), a whole batch at
    once (the field writer's :class:`Batched` kind): their samples in one INSERT, the stations'
    ``last_seen`` and the transactions' tails in one executemany each."""

    def write(self, session: Session, items: list[InOrder]) -> list[None]:
        # Core statements, executemany each (the ORM's bulk forms cost as much Python again)
        readings, stations, transactions = READINGS, STATIONS, TRANSACTIONS
        session.execute(
            insert(readings),
            [
                {
                    "station_id": station_id,
                    "transaction_id": transaction_id,
                    "seq_no": seq_no,
                    "sample": k,
                    "measured_at": s.measured_at,
                    "received_at": now,
                    "import_wh": s.import_wh,
                    "export_wh": s.export_wh,
                    "soc": s.soc,
                    "signed": None,
                }
                for station_id, transaction_id, seq_no, samples, now in items
                for k, s in enumerate(samples)
            ],
        )
        session.execute(
            update(stations).where(stations.c.id == bindparam("b_id")).values(last_seen=bindparam("b_now")),
            [{"b_id": station_id, "b_now": now} for station_id, _, _, _, now in items],
        )
        session.execute(
            update(transactions)
            .where(
                transactions.c.station_id == bindparam("b_station"),
                transactions.c.transaction_id == bindparam("b_transaction"),
            )
            .values(
                last_seq_no=bindparam("b_seq_no"),
                last_measured_at=bindparam("b_at"),
                last_import_wh=bindparam("b_import"),
                last_export_wh=bindparam("b_export"),
            ),
            [
                {
                    "b_station": station_id,
                    "b_transaction": transaction_id,
                    "b_seq_no": seq_no,
                    "b_at": samples[-1].measured_at,
                    "b_import": samples[-1].import_wh,
                    "b_export": samples[-1].export_wh,
                }
                for station_id, transaction_id, seq_no, samples, _ in items
            ],
        )
        return [None] * len(items)


class ProfileRecords(Unkept):
    """The records of the profiles sent and their answers (the field writer's :class:`Batched` kind): a
    batch's in one INSERT (the ORM's unit of work spent as long again on them as on the frames)."""

    def write(self, session: Session, items: list[dict[str, Any]]) -> list[None]:
        session.execute(insert(PROFILES), items)
        return [None] * len(items)


PROFILES = cast(Table, ChargingProfileRow.__table__)


#: How far a station's clock may run ahead of the CSMS's before its timestamps are not believed (the
#: metering service's default clock tolerance).
CLOCK_AHEAD_TOLERANCE = timedelta(seconds=900)


def _not_ahead(session: Session, station_id: str, timestamp: datetime, now: datetime, what: str) -> datetime:
    """``timestamp``, or the CSMS's ``now`` when the station's is further ahead than the tolerance
    (``FutureTimestampError`` recorded): a transaction never starts or ends in the future."""
    if timestamp <= now + CLOCK_AHEAD_TOLERANCE:
        return timestamp
    reject(
        session,
        station_id,
        FutureTimestampError(
            f"{what} at {timestamp.isoformat()}, {(timestamp - now).total_seconds():.0f} s ahead of the "
            f"CSMS's clock: the CSMS's time {now.isoformat()} is used"
        ),
    )
    return now


def transaction_event(
    session: Session,
    station_id: str,
    *,
    event_type: str,
    seq_no: int,
    transaction_id: str,
    evse_id: int | None,
    id_token: str | None,
    samples: list[Sample],
    timestamp: datetime,
    stopped_reason: str | None,
    now: datetime,
) -> EventOutcome:
    """A TransactionEvent: the transaction's row and its samples, every rule applied."""
    station = known_station(session, station_id)
    station.last_seen = now
    flagged: list[str] = []
    tx = session.get(OcppTransaction, (station_id, transaction_id))
    if tx is None:
        if evse_id is None or not (1 <= evse_id <= station.evses):
            raise UnknownEvseError(f"station {station_id} has no EVSE {evse_id}")
        if event_type != "Started":
            error = UnknownTransactionError(
                f"{event_type} for transaction {transaction_id} that never started"
            )
            reject(session, station_id, error)
            flagged.append(type(error).__name__)
        vehicle_id = authorize(session, station_id, id_token) if id_token else None
        if id_token is None:
            flagged.append("UnknownIdTokenError")
            reject(session, station_id, UnknownIdTokenError(f"transaction {transaction_id} without idToken"))
        started = _not_ahead(session, station_id, timestamp, now, f"transaction {transaction_id} started")
        if started != timestamp:
            flagged.append("FutureTimestampError")
        tx = OcppTransaction(
            station_id=station_id,
            transaction_id=transaction_id,
            evse_id=evse_id,
            vehicle_id=vehicle_id,
            plug_session_id=_plug_session_of(session, vehicle_id, started),
            started_at=started,
            last_seq_no=-1,
            last_import_wh=0,
            last_export_wh=0,
        )
        session.add(tx)
        session.flush()
    elif tx.vehicle_id is None and id_token:
        tx.vehicle_id = authorize(session, station_id, id_token)
        tx.plug_session_id = _plug_session_of(session, tx.vehicle_id, tx.started_at)
    if seq_no <= tx.last_seq_no:
        duplicate = session.scalar(
            select(MeterReading.id).where(
                MeterReading.station_id == station_id,
                MeterReading.transaction_id == transaction_id,
                MeterReading.seq_no == seq_no,
            )
        )
        if duplicate is not None or (not samples and seq_no == tx.last_seq_no):
            reject(
                session,
                station_id,
                DuplicateMessageError(f"transaction {transaction_id} seq_no {seq_no} again"),
            )
            return EventOutcome(0, ["DuplicateMessageError"], tx.vehicle_id, tx.ended_at is not None)
        reject(
            session,
            station_id,
            OutOfOrderMessageError(f"transaction {transaction_id} seq_no {seq_no} after {tx.last_seq_no}"),
        )
        flagged.append("OutOfOrderMessageError")
    elif seq_no > tx.last_seq_no + 1 and tx.last_seq_no >= 0:
        reject(
            session,
            station_id,
            SequenceGapError(f"transaction {transaction_id}: seq_no {tx.last_seq_no} then {seq_no}"),
        )
        flagged.append("SequenceGapError")
    try:
        if samples:
            _store_samples(session, station, tx, [(seq_no, k) for k in range(len(samples))], samples, now)
        tx.last_seq_no = max(tx.last_seq_no, seq_no)
        if event_type == "Ended":
            end = _not_ahead(session, station_id, timestamp, now, f"transaction {transaction_id} ended")
            if end < tx.started_at:
                reject(
                    session,
                    station_id,
                    EndBeforeStartError(
                        f"transaction {transaction_id} ended {end.isoformat()}, before it started "
                        f"{tx.started_at.isoformat()}: it ends at its start"
                    ),
                )
                flagged.append("EndBeforeStartError")
                end = tx.started_at
            tx.ended_at = end
            tx.stopped_reason = stopped_reason
        session.flush()
    except IntegrityError as exc:  # the same sample raced in: it is stored once
        raise DuplicateMessageError(f"transaction {transaction_id} seq_no {seq_no} stored already") from exc
    stored = len(samples)
    tail = TxTail(
        tx.last_seq_no,
        tx.last_measured_at,
        tx.last_import_wh,
        tx.last_export_wh,
        bool(station.meter_public_key),
    )
    return EventOutcome(stored, flagged, tx.vehicle_id, tx.ended_at is not None, tail)


def _store_sample(
    session: Session,
    station: Station,
    tx: OcppTransaction,
    seq_no: int,
    k: int,
    sample: Sample,
    now: datetime,
) -> None:
    """Every rule one sample passes before it is stored (registers only forward, its signature), then
    the row, and the transaction's tail moved on when it is the newest sample so far."""
    if sample.net:
        pass  # a net register falls when the car gives energy back: no direction to check
    elif tx.last_measured_at is not None and sample.measured_at >= tx.last_measured_at:
        # the newest sample so far: only the latest one can contradict it
        if sample.import_wh < tx.last_import_wh or sample.export_wh < tx.last_export_wh:
            raise RegisterBackwardsError(
                f"transaction {tx.transaction_id}: registers {sample.import_wh}/{sample.export_wh} Wh at "
                f"{sample.measured_at.isoformat()} against {tx.last_import_wh}/{tx.last_export_wh} Wh at "
                f"{tx.last_measured_at.isoformat()} (before)"
            )
    else:
        _check_monotonic(session, station.id, tx.transaction_id, sample)
    session.add(
        MeterReading(
            station_id=station.id,
            transaction_id=tx.transaction_id,
            seq_no=seq_no,
            sample=k,
            measured_at=sample.measured_at,
            received_at=now,
            import_wh=sample.import_wh,
            export_wh=sample.export_wh,
            soc=sample.soc,
            signed=_audit_signature(station, tx.transaction_id, sample),
        )
    )
    if tx.last_measured_at is None or sample.measured_at >= tx.last_measured_at:
        tx.last_measured_at = sample.measured_at
        tx.last_import_wh, tx.last_export_wh = sample.import_wh, sample.export_wh


def _store_samples(
    session: Session,
    station: Station,
    tx: OcppTransaction,
    keys: list[tuple[int, int]],
    samples: list[Sample],
    now: datetime,
) -> None:
    """:func:`_store_sample` for each sample (``keys``: its sequence number and index), in one bulk insert
    when the samples run forward in time from the transaction's tail (a flood of samples is one
    statement, not one ORM row each); otherwise one by one, each checked against its stored neighbours."""
    forward = not any(s.net for s in samples) and all(
        a.measured_at <= b.measured_at for a, b in itertools.pairwise(samples)
    )
    if not forward or (tx.last_measured_at is not None and samples[0].measured_at < tx.last_measured_at):
        for (seq_no, k), sample in zip(keys, samples, strict=True):
            _store_sample(session, station, tx, seq_no, k, sample, now)
        return
    at, imported, exported = tx.last_measured_at, tx.last_import_wh, tx.last_export_wh
    rows = []
    for (seq_no, k), sample in zip(keys, samples, strict=True):
        if at is not None and (sample.import_wh < imported or sample.export_wh < exported):
            raise RegisterBackwardsError(
                f"transaction {tx.transaction_id}: registers {sample.import_wh}/{sample.export_wh} Wh at "
                f"{sample.measured_at.isoformat()} against {imported}/{exported} Wh at "
                f"{at.isoformat()} (before)"
            )
        rows.append(
            {
                "station_id": station.id,
                "transaction_id": tx.transaction_id,
                "seq_no": seq_no,
                "sample": k,
                "measured_at": sample.measured_at,
                "received_at": now,
                "import_wh": sample.import_wh,
                "export_wh": sample.export_wh,
                "soc": sample.soc,
                "signed": _audit_signature(station, tx.transaction_id, sample),
            }
        )
        at, imported, exported = sample.measured_at, sample.import_wh, sample.export_wh
    session.execute(insert(READINGS), rows)  # Core: executemany, no ORM rows
    tx.last_measured_at, tx.last_import_wh, tx.last_export_wh = at, imported, exported


def evse_meter_values(
    session: Session, station_id: str, evse_id: int, samples: list[Sample], now: datetime
) -> int:
    """MeterValues (outside TransactionEvent): attributed to the EVSE's open transaction, under the same
    rules as a TransactionEvent's samples; idempotent on the sample's time (the message carries no
    sequence number, so ``-timestamp`` stands in for it)."""
    station = known_station(session, station_id)
    if not 1 <= evse_id <= station.evses:
        raise UnknownEvseError(f"station {station_id} has no EVSE {evse_id}")
    tx = open_transaction(session, station_id, evse_id)
    if tx is None:
        raise UnknownTransactionError(f"meter values on EVSE {evse_id} of {station_id} without a transaction")
    # what the transaction holds already over the frame's span, read once (a frame of thousands of samples
    # is two queries, not two per sample: the CSMS's one writer serves every other station meanwhile)
    mine = (MeterReading.station_id == station_id, MeterReading.transaction_id == tx.transaction_id)
    first, last = min(s.measured_at for s in samples), max(s.measured_at for s in samples)
    seen = {
        (measured_at.astimezone(UTC), import_wh, export_wh)
        for measured_at, import_wh, export_wh in session.execute(
            select(MeterReading.measured_at, MeterReading.import_wh, MeterReading.export_wh).where(
                *mine, MeterReading.measured_at >= first, MeterReading.measured_at <= last
            )
        )
    }
    seqs = {-int(s.measured_at.timestamp()) for s in samples}
    taken = dict(
        session.execute(
            select(MeterReading.seq_no, func.max(MeterReading.sample))
            .where(*mine, MeterReading.seq_no.in_(seqs))
            .group_by(MeterReading.seq_no)
        ).all()
    )
    keys: list[tuple[int, int]] = []
    fresh: list[Sample] = []
    for k, sample in enumerate(samples):
        # the message carries no sequence number: a resend is recognised by its content (time and
        # registers), and several samples in one second are each kept
        key = (sample.measured_at.astimezone(UTC), sample.import_wh, sample.export_wh)
        if key in seen:
            reject(session, station_id, DuplicateMessageError(f"meter value at {sample.measured_at} again"))
            continue
        seen.add(key)
        seq = -int(sample.measured_at.timestamp())
        keys.append((seq, int(taken.get(seq, -1)) + 1 + k))
        fresh.append(sample)
    if fresh:
        _store_samples(session, station, tx, keys, fresh, now)
    return len(fresh)


def _audit_signature(station: Station, transaction_id: str, sample: Sample) -> dict[str, Any] | None:
    """A signed sample verified against the station meter's key (a forged one is refused); a station
    without a registered meter key must not send signed values it cannot be held to, so those are kept
    marked unverified; an unsigned sample from a station whose meter signs is refused."""
    if sample.signed is None:
        if station.meter_public_key:
            raise InvalidMeterSignatureError(
                f"transaction {transaction_id}: the meter of station {station.id} signs its values; "
                "this one is unsigned"
            )
        return None
    if not station.meter_public_key:
        return {
            **sample.signed,
            "verified": False,
            "reason": "no meter public key registered for the station",
        }
    return verify_meter_value(sample.signed, station.meter_public_key, transaction_id, sample)


def _check_monotonic(session: Session, station_id: str, transaction_id: str, sample: Sample) -> None:
    """Registers only run forwards in the station's time: compare with the samples just before and after."""
    base = select(MeterReading).where(
        MeterReading.station_id == station_id, MeterReading.transaction_id == transaction_id
    )
    before = session.scalars(
        base.where(MeterReading.measured_at <= sample.measured_at)
        .order_by(MeterReading.measured_at.desc())
        .limit(1)
    ).first()
    after = session.scalars(
        base.where(MeterReading.measured_at > sample.measured_at).order_by(MeterReading.measured_at).limit(1)
    ).first()
    for other, direction in ((before, "before"), (after, "after")):
        if other is None:
            continue
        sign = 1 if direction == "before" else -1
        for name, mine, theirs in (
            ("import", sample.import_wh, other.import_wh),
            ("export", sample.export_wh, other.export_wh),
        ):
            if sign * (mine - theirs) < 0:
                raise RegisterBackwardsError(
                    f"transaction {transaction_id}: {name} register {mine} Wh at "
                    f"{sample.measured_at.isoformat()} "
                    f"against {theirs} Wh at {other.measured_at.isoformat()} ({direction})"
                )


def close_open_transactions(
    session: Session, before: datetime, *, silent_for: timedelta = timedelta(days=1)
) -> list[str]:
    """Transactions started before ``before`` that never ended, sent no sample since, and are over by the
    station's own word or silence: a later transaction started on the same EVSE (an EVSE holds one car at
    a time), the station heard from not once in the ``silent_for`` before ``before`` (gone), or the
    transaction itself silent that long while its station still talks (its Ended lost). Each is
    closed at its last sample (``TransactionNeverEndedError`` recorded for each). Any other open
    transaction is running, not abandoned, and stays open: a car charging across midnight, a station that
    samples rarely, or one offline for a while that will send its queued events (its energy up to
    ``before`` is settled from the samples it sent; later ones are the next day's adjustments). Returns
    the ids closed."""
    closed = []
    for tx in session.scalars(
        select(OcppTransaction).where(OcppTransaction.ended_at.is_(None), OcppTransaction.started_at < before)
    ):
        if tx.last_measured_at is not None and tx.last_measured_at >= before:
            continue
        superseded = session.scalars(
            select(OcppTransaction.transaction_id).where(
                OcppTransaction.station_id == tx.station_id,
                OcppTransaction.evse_id == tx.evse_id,
                OcppTransaction.started_at > tx.started_at,
            )
        ).first()
        station = session.get(Station, tx.station_id)
        gone = station is None or station.last_seen is None or station.last_seen < before - silent_for
        # a station still heard from (heartbeats) whose transaction sent nothing for as long: its Ended
        # was lost, and the car has left
        mute = (tx.last_measured_at or tx.started_at) < before - silent_for
        if superseded is None and not gone and not mute:
            continue
        last = session.scalars(
            select(MeterReading.measured_at)
            .where(MeterReading.station_id == tx.station_id, MeterReading.transaction_id == tx.transaction_id)
            .order_by(MeterReading.measured_at.desc())
            .limit(1)
        ).first()
        tx.ended_at = last or tx.started_at
        tx.stopped_reason = "NeverEnded"
        reject(
            session,
            tx.station_id,
            TransactionNeverEndedError(
                f"transaction {tx.transaction_id} never ended: closed at its last sample"
            ),
        )
        closed.append(tx.transaction_id)
    return closed
