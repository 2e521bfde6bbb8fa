"""What the meters measured, from the raw frames alone: every Wh a register advanced, accepted into a
segment of its transaction or refused by name.

The rules, applied to each station's frames in the order they were received (the same on every replay,
so the settler, the metering service and an auditor with an export all get the same figures):

- A transaction is named by its TransactionEvents; MeterValues belong to the EVSE's open transaction
  started last. A TransactionEvent whose ``seqNo`` was seen is a resend (ignored); a MeterValues sample
  identical to one already taken (time and registers) likewise.
- The first sample of a transaction is its baseline. Each later sample advances the transaction's
  register *level*; the advance (import and export, whole Wh) is either an accepted segment
  ``[previous sample's time, this sample's time]`` or a refusal of exactly that many Wh with its reason.
  The level moves either way, so each Wh of register advance is counted once: a forged jump is refused
  once and the samples after it are judged from there. A sample whose registers fall is refused with
  0 Wh and moves nothing (``RegisterBackwardsError``).
- Refusals: ``ClockSkewError`` (the sample's time more than ``clock_tolerance_s`` after the CSMS received
  it, or more than that before it when the message is not flagged ``offline``: such energy is counted at
  the receive time and never lands in a day only the station's clock knows); ``InvalidMeterSignatureError``
  (a station registered with a meter key sent an unsigned sample, a signature that does not verify, or one
  over another time, transaction or value than the sample's); ``OutOfOrderSampleError`` (a rise reported
  at a time before the transaction's latest sample); ``ImplausibleEnergyError`` (more than the EVSE's rated
  power over the time since the previous sample allows, ``power_tolerance`` and ``slack_wh`` on top, or a
  net charge beyond what the car's battery can take); ``UnattributedEnergyError`` (no idToken of the
  transaction authorises a registered vehicle).

Accepted segments are split over the intervals they overlap by linear interpolation, each segment's Wh
rounded on its own (largest remainder): a later frame only adds segments, so a day's accepted energy
never shrinks when late data arrives, and what was settled stays settled.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import IdTokenRow, Station, Vehicle
from backend.metering.frames import Frame
from backend.operations.field import (
    FieldDataError,
    InvalidMeterSignatureError,
    MalformedFrameError,
    Sample,
    parse_time,
    samples_of,
    verify_meter_value,
)

INTERVAL = timedelta(minutes=15)


@dataclass(frozen=True)
class MeterPolicy:
    """The metering service's rules (served at ``GET /policy``, so that the settler replays with the same)."""

    clock_tolerance_s: float = 900.0
    power_tolerance: float = 0.10
    #: Register resolution and a sample's one-second time stamp: a few Wh any reading may be off.
    slack_wh: int = 20
    #: The grid-side energy one charge may put into a battery: capacity / this efficiency.
    grid_to_battery: float = 0.85

    def to_json(self) -> dict[str, Any]:
        return {
            "clock_tolerance_s": self.clock_tolerance_s,
            "power_tolerance": self.power_tolerance,
            "slack_wh": self.slack_wh,
            "grid_to_battery": self.grid_to_battery,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MeterPolicy:
        return cls(
            float(d["clock_tolerance_s"]),
            float(d["power_tolerance"]),
            int(d["slack_wh"]),
            float(d["grid_to_battery"]),
        )


class ClockSkewError(FieldDataError):
    pass


class ImplausibleEnergyError(FieldDataError):
    pass


class OutOfOrderSampleError(FieldDataError):
    pass


class UnattributedEnergyError(FieldDataError):
    pass


@dataclass(frozen=True)
class StationInfo:
    evses: int
    max_kw: tuple[float, ...]  # per EVSE, 1-based index - 1
    public_key: str | None

    def rated_kw(self, evse_id: int | None) -> float:
        if evse_id is not None and 1 <= evse_id <= len(self.max_kw):
            return self.max_kw[evse_id - 1]
        return max(self.max_kw)


@dataclass(frozen=True)
class Registry:
    """What the operator registered: stations (EVSEs, rated power, meter key), idTokens, vehicles."""

    stations: Mapping[str, StationInfo]
    tokens: Mapping[str, str]  # idToken → vehicle
    vehicles: Mapping[str, tuple[str, float]]  # vehicle → (owner, battery kWh)

    @classmethod
    def load(cls, session: Session) -> Registry:
        stations = {}
        for s in session.scalars(select(Station)):
            per_evse = list(s.evse_max_kw or [])
            max_kw = tuple(
                float(per_evse[k]) if k < len(per_evse) else float(s.max_power_kw) for k in range(s.evses)
            )
            stations[s.id] = StationInfo(s.evses, max_kw, s.meter_public_key)
        return cls(
            stations,
            {t.token: t.vehicle_id for t in session.scalars(select(IdTokenRow))},
            {v.id: (v.owner_id, v.battery_kwh) for v in session.scalars(select(Vehicle))},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stations": {
                k: {"evses": v.evses, "max_kw": list(v.max_kw), "public_key": v.public_key}
                for k, v in sorted(self.stations.items())
            },
            "tokens": dict(sorted(self.tokens.items())),
            "vehicles": {k: list(v) for k, v in sorted(self.vehicles.items())},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Registry:
        return cls(
            {
                k: StationInfo(int(v["evses"]), tuple(float(x) for x in v["max_kw"]), v["public_key"])
                for k, v in d["stations"].items()
            },
            {str(k): str(v) for k, v in d["tokens"].items()},
            {str(k): (str(v[0]), float(v[1])) for k, v in d["vehicles"].items()},
        )


@dataclass(frozen=True)
class Segment:
    """Accepted energy of a transaction between two of its samples."""

    station_id: str
    transaction_id: str
    start: datetime
    end: datetime
    import_wh: int
    export_wh: int
    signed: bool


@dataclass(frozen=True)
class Refusal:
    """Register advance refused by name, counted at ``at`` (its interval and day)."""

    station_id: str
    transaction_id: str
    at: datetime
    import_wh: int
    export_wh: int
    reason: str
    detail: str
    frame_seq: int

    @property
    def wh(self) -> int:
        return self.import_wh + self.export_wh


@dataclass
class _Tx:
    station_id: str
    transaction_id: str
    evse_id: int | None
    started_at: datetime
    vehicle_id: str | None = None
    ended: bool = False
    seen_seq: set[int] = field(default_factory=set)
    level: tuple[int, int] | None = None  # (import, export) or (net, 0)
    net: bool = False
    last_at: datetime | None = None
    taken: set[tuple[datetime, int, int]] = field(default_factory=set)
    net_in_wh: int = 0  # accepted import − export: what went into the battery, at the grid side


@dataclass(frozen=True)
class TxInfo:
    station_id: str
    transaction_id: str
    evse_id: int | None
    vehicle_id: str | None
    owner_id: str | None
    started_at: datetime

    @property
    def session_id(self) -> str:
        return f"{self.station_id}/{self.transaction_id}"


@dataclass
class Ledger:
    transactions: dict[tuple[str, str], TxInfo]
    segments: list[Segment]
    refusals: list[Refusal]

    def accepted(self, width: timedelta = INTERVAL) -> dict[tuple[str, str, datetime], tuple[int, int]]:
        """Accepted (import, export) Wh per ``(station, transaction, interval start)`` of attributed
        transactions (unattributed ones are refusals)."""
        out: dict[tuple[str, str, datetime], list[int]] = defaultdict(lambda: [0, 0])
        for seg in self.segments:
            for interval, imp, exp in split_segment(seg, width):
                row = out[(seg.station_id, seg.transaction_id, interval)]
                row[0] += imp
                row[1] += exp
        return {k: (v[0], v[1]) for k, v in out.items() if v[0] or v[1]}


def interval_of(at: datetime, width: timedelta = INTERVAL) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((at - epoch) // width) * width


def _micros(d: timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _cumulative(total: int, elapsed_us: int, span_us: int) -> int:
    """The register's rise after ``elapsed_us`` of ``span_us``, in whole Wh (nearest, halves up; exact
    integers, the same on every machine)."""
    return (2 * total * elapsed_us + span_us) // (2 * span_us)


def split_segment(seg: Segment, width: timedelta = INTERVAL) -> list[tuple[datetime, int, int]]:
    """A segment's Wh over the intervals it overlaps by linear interpolation: the interpolated register is
    rounded to whole Wh at each interval boundary and each interval gets the difference (so the intervals
    add up to the segment exactly, and a long segment spreads evenly); a segment of no duration lies in
    its end's interval."""
    if seg.end <= seg.start:
        return [(interval_of(seg.end, width), seg.import_wh, seg.export_wh)]
    span = _micros(seg.end - seg.start)
    out = []
    t = interval_of(seg.start, width)
    done_imp = done_exp = 0
    while t < seg.end:
        boundary = min(t + width, seg.end)
        elapsed = _micros(boundary - seg.start)
        imp = _cumulative(seg.import_wh, elapsed, span)
        exp = _cumulative(seg.export_wh, elapsed, span)
        if imp - done_imp or exp - done_exp:
            out.append((t, imp - done_imp, exp - done_exp))
        done_imp, done_exp = imp, exp
        t += width
    return out


def _call(frame: str) -> tuple[str, dict[str, Any]] | None:
    try:
        message = json.loads(frame)
    except ValueError:
        return None
    if (
        not isinstance(message, list)
        or len(message) != 4
        or message[0] != 2
        or not isinstance(message[2], str)
        or not isinstance(message[3], dict)
    ):
        return None
    return message[2], message[3]


class _Replay:
    def __init__(self, registry: Registry, policy: MeterPolicy) -> None:
        self.registry = registry
        self.policy = policy
        self.txs: dict[tuple[str, str], _Tx] = {}
        self.segments: list[Segment] = []
        self.refusals: list[Refusal] = []

    def frame(self, f: Frame) -> None:
        call = _call(f.frame)
        if call is None or f.station_id not in self.registry.stations:
            return
        action, payload = call
        try:
            if action == "TransactionEvent":
                self._transaction_event(f, payload)
            elif action == "MeterValues":
                self._meter_values(f, payload)
        except (FieldDataError, ValueError, KeyError, TypeError, AttributeError):
            return  # malformed: refused live by the CSMS; its registers are carried by the next sample

    def _transaction_event(self, f: Frame, p: dict[str, Any]) -> None:
        tx_id = str(p["transactionInfo"]["transactionId"])
        seq_no = p["seqNo"]
        if not isinstance(seq_no, int) or p["eventType"] not in ("Started", "Updated", "Ended"):
            raise MalformedFrameError("eventType / seqNo")
        samples = samples_of(p.get("meterValue"))
        when = parse_time(str(p["timestamp"]))
        evse = p.get("evse")
        key = (f.station_id, tx_id)
        tx = self.txs.get(key)
        if tx is None:
            tx = _Tx(f.station_id, tx_id, int(evse["id"]) if evse else None, when)
            self.txs[key] = tx
        if seq_no in tx.seen_seq:
            return
        tx.seen_seq.add(seq_no)
        token = (p.get("idToken") or {}).get("idToken")
        if tx.vehicle_id is None and token is not None:
            tx.vehicle_id = self.registry.tokens.get(str(token))
        offline = p.get("offline") is True
        for sample in samples:
            self._sample(f, tx, sample, offline)
        if p["eventType"] == "Ended":
            tx.ended = True

    def _meter_values(self, f: Frame, p: dict[str, Any]) -> None:
        evse_id = int(p["evseId"])
        samples = samples_of(p["meterValue"])
        open_txs = [
            t
            for t in self.txs.values()
            if t.station_id == f.station_id and t.evse_id == evse_id and not t.ended
        ]
        if not open_txs:
            return
        tx = max(open_txs, key=lambda t: (t.started_at, t.transaction_id))
        for sample in samples:
            ident = (sample.measured_at, sample.import_wh, sample.export_wh)
            if ident in tx.taken:
                continue
            self._sample(f, tx, sample, offline=False)

    def _refuse(self, f: Frame, tx: _Tx, at: datetime, imp: int, exp: int, error: FieldDataError) -> None:
        self.refusals.append(
            Refusal(f.station_id, tx.transaction_id, at, imp, exp, type(error).__name__, str(error), f.seq)
        )

    def _sample(self, f: Frame, tx: _Tx, sample: Sample, offline: bool) -> None:
        station = self.registry.stations[f.station_id]
        tx.taken.add((sample.measured_at, sample.import_wh, sample.export_wh))
        if tx.level is None:  # the baseline: no energy of its own
            tx.level = (sample.import_wh, sample.export_wh)
            tx.net = sample.net
            if not self._skewed(f, sample, offline):
                tx.last_at = sample.measured_at
            return
        if sample.net or tx.net:
            rise = sample.import_wh - tx.level[0]
            imp, exp = max(rise, 0), max(-rise, 0)
            level = (sample.import_wh, 0)
        else:
            imp, exp = sample.import_wh - tx.level[0], sample.export_wh - tx.level[1]
            level = (sample.import_wh, sample.export_wh)
            if imp < 0 or exp < 0:
                return  # a register running backwards: refused live (RegisterBackwardsError), 0 Wh here
        if imp == 0 and exp == 0:
            later = tx.last_at is None or sample.measured_at > tx.last_at
            if later and not self._skewed(f, sample, offline):
                tx.last_at = sample.measured_at
            return
        tx.level = level
        error: FieldDataError | None = None
        at = sample.measured_at
        if self._skewed(f, sample, offline):
            error = ClockSkewError(
                f"sample at {sample.measured_at.isoformat()} received at {f.received_at.isoformat()}"
            )
            at = f.received_at
        elif tx.last_at is not None and sample.measured_at < tx.last_at:
            error = OutOfOrderSampleError(
                f"a rise at {sample.measured_at.isoformat()} before the sample at {tx.last_at.isoformat()}"
            )
        else:
            error = self._signature_error(station, tx, sample) or self._implausible(
                station, tx, sample, imp, exp
            )
        if error is not None:
            self._refuse(f, tx, at, imp, exp, error)
            if not isinstance(error, ClockSkewError):
                tx.last_at = max(tx.last_at or sample.measured_at, sample.measured_at)
            return
        start = tx.last_at if tx.last_at is not None else sample.measured_at
        self.segments.append(
            Segment(
                f.station_id,
                tx.transaction_id,
                start,
                sample.measured_at,
                imp,
                exp,
                station.public_key is not None,
            )
        )
        tx.net_in_wh += imp - exp
        tx.last_at = sample.measured_at

    def _skewed(self, f: Frame, sample: Sample, offline: bool) -> bool:
        ahead = (sample.measured_at - f.received_at).total_seconds()
        tolerance = self.policy.clock_tolerance_s
        return ahead > tolerance or (-ahead > tolerance and not offline)

    @staticmethod
    def _signature_error(station: StationInfo, tx: _Tx, sample: Sample) -> FieldDataError | None:
        if station.public_key is None:
            return None
        if sample.signed is None:
            return InvalidMeterSignatureError(
                f"the meter of station {tx.station_id} signs its values; this one is unsigned"
            )
        try:
            verify_meter_value(sample.signed, station.public_key, tx.transaction_id, sample)
        except InvalidMeterSignatureError as exc:
            return exc
        return None

    def _implausible(
        self, station: StationInfo, tx: _Tx, sample: Sample, imp: int, exp: int
    ) -> FieldDataError | None:
        p = self.policy
        rated = station.rated_kw(tx.evse_id)
        # after a baseline whose time is not believed (ClockSkewError) the duration is unknown: only the
        # battery bound below applies to the first rise
        seconds = (sample.measured_at - tx.last_at).total_seconds() if tx.last_at is not None else math.inf
        allowed = rated * 1000.0 * (seconds + 1.0) / 3600.0 * (1.0 + p.power_tolerance) + p.slack_wh
        if max(imp, exp) > allowed:
            return ImplausibleEnergyError(
                f"{max(imp, exp):,} Wh in {seconds:,.0f} s on an EVSE rated {rated:g} kW "
                f"(at most {allowed:,.0f} Wh)"
            )
        vehicle = self.registry.vehicles.get(tx.vehicle_id or "")
        if vehicle is not None:
            room = vehicle[1] * 1000.0 / p.grid_to_battery * (1.0 + p.power_tolerance) + p.slack_wh
            if tx.net_in_wh + imp - exp > room:
                return ImplausibleEnergyError(
                    f"{tx.net_in_wh + imp - exp:,} Wh charged in one transaction into a "
                    f"{vehicle[1]:g} kWh battery (at most {room:,.0f} Wh)"
                )
        return None

    def ledger(self) -> Ledger:
        infos = {}
        for key, tx in self.txs.items():
            vehicle = self.registry.vehicles.get(tx.vehicle_id or "")
            infos[key] = TxInfo(
                tx.station_id,
                tx.transaction_id,
                tx.evse_id,
                tx.vehicle_id if vehicle else None,
                vehicle[0] if vehicle else None,
                tx.started_at,
            )
        segments, refusals = [], list(self.refusals)
        for seg in self.segments:
            info = infos[(seg.station_id, seg.transaction_id)]
            if info.owner_id is not None:
                segments.append(seg)
                continue
            for interval, imp, exp in split_segment(seg):
                refusals.append(
                    Refusal(
                        seg.station_id,
                        seg.transaction_id,
                        interval,
                        imp,
                        exp,
                        UnattributedEnergyError.__name__,
                        "no idToken of the transaction authorises a registered vehicle",
                        0,
                    )
                )
        return Ledger(infos, segments, refusals)


def replay(
    frames: Mapping[str, Iterable[Frame]], registry: Registry, policy: MeterPolicy | None = None
) -> Ledger:
    """The ledger of everything the given frames (each station's in chain order) say."""
    run = _Replay(registry, policy or MeterPolicy())
    for station_id in sorted(frames):
        for f in frames[station_id]:
            run.frame(f)
    return run.ledger()
