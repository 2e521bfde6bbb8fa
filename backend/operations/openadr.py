"""Demand response over OpenADR 2.0b: the aggregator's VEN (the ``openleadr`` package).

The VEN registers with the grid operator's VTN and polls it for events addressed to this platform's grid
nodes: its own node (``V2G_OPENADR_NODE``, the operations loop's own connection) and every registered site
(``v2g sites import``; a site's resource id is its id). An event names them among its targets (an event
that names no resource is the own node's); each one it names is read as an import limit per interval of
that connection:

- ``SIMPLE`` levels 1, 2 and 3: the fractions ``simple_levels`` of the site's import limit (0: none);
- ``LOAD_DISPATCH`` ``setpoint``: the import the site may take, kW (the signal's ``powerReal`` scale
  respected: ``none`` W, ``k`` kW, ``M`` MW; kW when the signal names none);
- ``LOAD_DISPATCH`` ``delta``: that much less than the last plan foresaw in each interval.

Every other signal, and an event for no node this VEN answers for, is declined by name
(``UnsupportedSignalError``, ``NotOurNodeError``). An event the VTN wants an answer for is tried on the
fleet as it is, connection by connection (:meth:`OperationsLoop.can_hold`): opted in when at each the
cars the plan cannot steer fit under it and no car would leave shorter of its owner's energy than without
it; else opted out
(``CannotDeliverError`` and why). An event the VTN wants no answer for is mandatory and held regardless.
An event held becomes rows of ``dr_events``, which the re-plan (triggered at once) honours as it does
the API's (each row naming its site); a cancellation removes them. Every event, answer and reason is kept
in ``openadr_events``; :func:`delivery` compares what each DR event asked with what the meters of its
connection measured, and the VEN reports the own node's metered import to the VTN as
``TELEMETRY_USAGE`` (``powerReal``, kW) when the VTN asks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import warnings
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from backend.clock import GRID_EPOCH
from backend.db.models import DrEventRow, OpenAdrEventRow, SiteRow, Station
from backend.operations.metered import metered_intervals
from scheduler.inputs import DREvent

if TYPE_CHECKING:
    from backend.operations.loop import OperationsLoop

logger = logging.getLogger(__name__)

#: The longest event the VEN holds (the API's DR events have the same bound).
MAX_EVENT = timedelta(days=7)


class OpenAdrError(ValueError):
    """Why an event was declined (the class name is the reason's name)."""


class NotOurNodeError(OpenAdrError):
    """The event targets resources this VEN does not answer for."""


class UnsupportedSignalError(OpenAdrError):
    """A signal this VEN cannot read as an import limit (or an open-ended one)."""


class CannotDeliverError(OpenAdrError):
    """The fleet cannot hold the event without breaking a promise to its owners or a car it cannot steer."""


@dataclass(frozen=True)
class VenConfig:
    #: The VTN's base URL, e.g. ``https://vtn.example.org/OpenADR2/Simple/2.0b``.
    vtn_url: str
    ven_name: str = "v2g-settle"
    #: The VEN id the VTN gave at an earlier registration (None: the VTN assigns one).
    ven_id: str | None = None
    #: The resource id of the grid node this VEN answers for (the site of the operations loop).
    node: str = "site"
    #: The site import limit's fraction at SIMPLE levels 1, 2 and 3.
    simple_levels: tuple[float, float, float] = (0.5, 0.25, 0.0)
    #: Message signing (both or neither): PEM files; the VTN's certificate fingerprint; a CA for TLS.
    cert: str | None = None
    key: str | None = None
    passphrase: str | None = None
    vtn_fingerprint: str | None = None
    ca_file: str | None = None
    #: How often the VEN offers its telemetry (the VTN chooses within it), seconds.
    report_every_s: float = 60.0
    #: Seconds between attempts to register while the VTN cannot be reached.
    retry_s: float = 60.0


@dataclass(frozen=True)
class Ask:
    """One interval of an event as an import limit on a connection (``site_id`` None: the own node)."""

    start: datetime
    duration_s: int
    import_limit_kw: float
    site_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": self.start.isoformat(),
            "duration_s": self.duration_s,
            "import_limit_kw": self.import_limit_kw,
        }
        if self.site_id is not None:
            out["site_id"] = self.site_id
        return out


#: kW per unit of a ``powerReal`` payload, by the signal's SI scale code.
KW_PER_UNIT = {"none": 0.001, "k": 1.0, "M": 1000.0}


def _kw_per_unit(signal: Mapping[str, Any]) -> float:
    measurement = signal.get("measurement")
    scale = measurement.get("scale") if isinstance(measurement, Mapping) else None
    if scale is None:
        return 1.0
    if scale not in KW_PER_UNIT:
        raise UnsupportedSignalError(f"a power scale {scale!r} (none, k or M)")
    return KW_PER_UNIT[scale]


def addressed(event: Mapping[str, Any], node: str, sites: Collection[str]) -> list[str | None]:
    """The connections an event is for: ``None`` for the VEN's own node, and each registered site its
    targets name (by resource id); an event that names no resource is the own node's. Resources that are
    not this platform's are another VEN's; an event with none of this platform's is
    :class:`NotOurNodeError`."""
    targets = list(event.get("targets") or [])
    resources = {t["resource_id"] for t in targets if isinstance(t, Mapping) and t.get("resource_id")}
    if not resources:
        return [None]
    ours: list[str | None] = [None] if node in resources else []
    ours += sorted((resources & set(sites)) - {node})
    if not ours:
        also = f" and the sites {', '.join(sorted(sites))}" if sites else ""
        raise NotOurNodeError(f"for {', '.join(sorted(resources))}; this VEN answers for {node}{also}")
    return ours


def asked_limits(
    event: Mapping[str, Any],
    *,
    node: str,
    site_limit_kw: float,
    simple_levels: tuple[float, float, float],
    planned_kw: Callable[[datetime], float | None],
    interval_minutes: int = 15,
) -> list[Ask]:
    """The site import limits an OpenADR event (as ``openleadr`` parses it) asks for, interval by
    interval; :class:`NotOurNodeError` or :class:`UnsupportedSignalError` when it cannot be read."""
    targets = list(event.get("targets") or [])
    resources = {t["resource_id"] for t in targets if isinstance(t, Mapping) and t.get("resource_id")}
    if resources and node not in resources:
        raise NotOurNodeError(f"for {', '.join(sorted(resources))}; this VEN answers for {node}")
    period = event.get("active_period") or {}
    period_end = (
        period["dtstart"] + period["duration"] if period.get("duration") and period.get("dtstart") else None
    )
    signals = event.get("event_signals") or []
    if isinstance(signals, Mapping):
        signals = signals.get("event_signals") or []
    asks: list[Ask] = []
    width = timedelta(minutes=interval_minutes)
    for signal in signals:
        name = str(signal.get("signal_name", "")).upper()
        kind = str(signal.get("signal_type", ""))
        if (name, kind) not in {
            ("SIMPLE", "level"),
            ("LOAD_DISPATCH", "setpoint"),
            ("LOAD_DISPATCH", "delta"),
        }:
            raise UnsupportedSignalError(f"{signal.get('signal_name')}/{kind} is not read as an import limit")
        for interval in signal.get("intervals") or []:
            start = interval["dtstart"].astimezone(UTC)
            duration = interval.get("duration") or timedelta(0)
            if duration <= timedelta(0):  # open-ended: until the event's end, when it has one
                if period_end is None:
                    raise UnsupportedSignalError(
                        f"{name}/{kind}: an open-ended interval from {start:%Y-%m-%d %H:%M} UTC"
                    )
                duration = period_end - start
            if duration > MAX_EVENT:
                raise UnsupportedSignalError(
                    f"{name}/{kind}: an interval of {duration} (at most {MAX_EVENT})"
                )
            value = float(interval["signal_payload"])
            if value != value or value in (float("inf"), float("-inf")):
                raise UnsupportedSignalError(f"{name}/{kind}: payload {value}")
            if name == "SIMPLE":
                level = int(value)
                if level != value or not 0 <= level <= 3:
                    raise UnsupportedSignalError(f"SIMPLE level {value} (0-3)")
                if level:
                    asks.append(
                        Ask(start, int(duration.total_seconds()), site_limit_kw * simple_levels[level - 1])
                    )
            elif kind == "setpoint":
                kw = value * _kw_per_unit(signal)
                if kw < 0:
                    raise UnsupportedSignalError(f"LOAD_DISPATCH setpoint {kw} kW (an import limit is >= 0)")
                asks.append(Ask(start, int(duration.total_seconds()), kw))
            else:  # delta: less than the plan, interval by interval of the plan
                less = value * _kw_per_unit(signal)
                t = start
                while t < start + duration:
                    step = min(width - (t - GRID_EPOCH) % width, start + duration - t)
                    planned = planned_kw(t)
                    if planned is None:
                        raise UnsupportedSignalError(
                            f"LOAD_DISPATCH delta at {t:%Y-%m-%d %H:%M} UTC: no plan to take it from"
                        )
                    asks.append(Ask(t, int(step.total_seconds()), max(planned - less, 0.0)))
                    t += step
    return asks


def _planned(loop: OperationsLoop | None, site: str | None) -> Callable[[datetime], float | None]:
    """The import the loop's last plan of ``site`` foresaw at a time (what a ``delta`` comes off)."""
    if loop is None:
        return lambda _: None
    return lambda at: loop.planned_import_kw(at, site)


def _row_ids(event_id: str, n: int) -> list[str]:
    """The ``dr_events`` ids of an event's intervals (``oadr:<event id>:<i>``, hashed when long)."""
    tag = event_id if len(event_id) <= 40 else hashlib.sha256(event_id.encode()).hexdigest()[:40]
    return [f"oadr:{tag}:{i}" for i in range(n)]


def record(
    db: Session,
    *,
    event_id: str,
    vtn_id: str,
    modification_number: int,
    signal: str,
    asks: Sequence[Ask],
    opt: str,
    reason: str | None,
    received_at: datetime,
) -> None:
    """Store the event and its answer; an event held (``optIn``, ``mandatory``) replaces its DR rows."""
    row = db.get(OpenAdrEventRow, event_id)
    if row is not None and row.dr_event_ids:
        db.execute(delete(DrEventRow).where(DrEventRow.id.in_(row.dr_event_ids)))
    ids = _row_ids(event_id, len(asks)) if opt in ("optIn", "mandatory") else []
    for rid, ask in zip(ids, asks, strict=False):
        db.add(
            DrEventRow(
                id=rid,
                start=ask.start,
                duration_s=ask.duration_s,
                import_limit_kw=ask.import_limit_kw,
                site_id=ask.site_id,
            )
        )
    values = {
        "vtn_id": vtn_id,
        "modification_number": modification_number,
        "signal": signal[:64],
        "asked": [a.as_json() for a in asks],
        "opt": opt,
        "reason": reason,
        "dr_event_ids": ids,
        "received_at": received_at,
    }
    if row is None:
        db.add(OpenAdrEventRow(event_id=event_id, **values))
    else:
        for k, v in values.items():
            setattr(row, k, v)


@dataclass(frozen=True)
class DeliveredInterval:
    """One interval of a DR event: the import it allowed and what the meters measured (kW, means)."""

    start: datetime
    asked_kw: float
    metered_kw: float
    hours: float = 0.25

    @property
    def excess_kwh(self) -> float:
        return max(self.metered_kw - self.asked_kw, 0.0) * self.hours


@dataclass(frozen=True)
class Delivery:
    event_id: str
    source: str  # "openadr" or "api" (the API, a file)
    answer: str
    intervals: list[DeliveredInterval]
    #: the site it limits (``None``: the operations loop's own connection)
    site_id: str | None = None

    @property
    def excess_kwh(self) -> float:
        return sum(i.excess_kwh for i in self.intervals)

    @property
    def held(self) -> bool:
        """The meters stayed under the limit, to the watt-hour."""
        return self.excess_kwh < 0.001


def delivery(
    db: Session, start: datetime, end: datetime, *, until: datetime, interval_minutes: int = 15
) -> list[Delivery]:
    """Every DR event overlapping ``[start, end)``: per interval ended by ``until``, the import it allowed
    and its site's metered net import (the import less the export of every transaction at a station
    behind that site; an event naming no site: at the stations registered without one)."""
    width = timedelta(minutes=interval_minutes)
    rows = list(
        db.scalars(select(DrEventRow).where(DrEventRow.start < end).order_by(DrEventRow.start, DrEventRow.id))
    )
    rows = [r for r in rows if r.start + timedelta(seconds=r.duration_s) > start]
    if not rows:
        return []
    origin = {rid: e for e in db.scalars(select(OpenAdrEventRow)) for rid in e.dr_event_ids}
    lo = min(r.start for r in rows)
    lo = lo - (lo - GRID_EPOCH) % width
    hi = max(r.start + timedelta(seconds=r.duration_s) for r in rows)
    hi = min(hi, until)
    net: dict[tuple[str | None, datetime], int] = defaultdict(int)
    if hi > lo:
        n = int((hi - lo) / width)
        site_of: dict[str, str | None] = {
            sid: site for sid, site in db.execute(select(Station.id, Station.site_id))
        }
        for m in metered_intervals(db, lo, lo + n * width, interval_minutes):
            net[(site_of.get(m.station_id), m.interval_start)] += m.import_wh - m.export_wh
    groups: dict[str, list[DrEventRow]] = defaultdict(list)
    for r in rows:
        e = origin.get(r.id)
        groups[e.event_id if e is not None else r.id].append(r)
    out = []
    for key, members in groups.items():
        limits: dict[datetime, float] = {}
        for r in members:
            t = r.start - (r.start - lo) % width
            while t < r.start + timedelta(seconds=r.duration_s):
                limits[t] = min(limits.get(t, float("inf")), r.import_limit_kw)
                t += width
        e = origin.get(members[0].id)
        out.append(
            Delivery(
                key,
                "openadr" if e is not None else "api",
                e.opt if e is not None else "stored",
                [
                    DeliveredInterval(
                        t,
                        kw,
                        net.get((members[0].site_id, t), 0) / 1000.0 / (width.total_seconds() / 3600),
                        width.total_seconds() / 3600,
                    )
                    for t, kw in sorted(limits.items())
                    if t + width <= until
                ],
                members[0].site_id,
            )
        )
    return out


class Ven:
    """The platform's OpenADR 2.0b VEN, run beside the operations loop (``v2g operate --openadr-vtn``)."""

    def __init__(
        self,
        config: VenConfig,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        *,
        site_limit_kw: float,
        planner: Callable[[], OperationsLoop | None],
        interval_minutes: int = 15,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.clock = clock
        self.site_limit_kw = site_limit_kw
        self.planner = planner
        self.interval_minutes = interval_minutes
        self.client: Any = None
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()

    @property
    def ven_id(self) -> str | None:
        return None if self.client is None else self.client.ven_id

    async def start(self) -> None:
        """Register with the VTN in the background (again every ``retry_s`` while it cannot be reached)."""
        self._task = asyncio.create_task(self._register())

    async def _register(self) -> None:
        with warnings.catch_warnings():  # signxml's DSA annotations, at import
            warnings.simplefilter("ignore")
            from openleadr import OpenADRClient
        # the package sets its logger to INFO when imported (a line per poll): its warnings only
        logging.getLogger("openleadr").setLevel(logging.WARNING)
        c = self.config
        while True:
            client = OpenADRClient(
                ven_name=c.ven_name,
                vtn_url=c.vtn_url,
                cert=c.cert,
                key=c.key,
                passphrase=c.passphrase,
                vtn_fingerprint=c.vtn_fingerprint,
                show_fingerprint=False,
                ca_file=c.ca_file,
                ven_id=c.ven_id,
                allow_jitter=False,
            )
            client.add_handler("on_event", self.on_event)
            client.add_handler("on_update_event", self.on_event)
            client.add_report(
                self._telemetry,
                resource_id=c.node,
                measurement="REAL_POWER",
                scale="k",
                sampling_rate=timedelta(seconds=c.report_every_s),
                report_duration=timedelta(hours=1),
            )
            self.client = client
            await client.run()
            if client.registration_id:
                logger.info("OpenADR: registered with %s as VEN %s", c.vtn_url, client.ven_id)
                self.registered.set()
                return
            logger.warning(
                "OpenADR: %s did not register this VEN; trying again in %.0f s", c.vtn_url, c.retry_s
            )
            await asyncio.sleep(c.retry_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        client = self.client
        if client is not None:
            if client.scheduler.running:
                client.scheduler.shutdown(wait=False)
            if client.report_queue_task:
                client.report_queue_task.cancel()
            if client.client_session is not None and not client.client_session.closed:
                await client.client_session.close()

    def _sites(self) -> dict[str, float]:
        """The registered sites and their import limits (kW): the nodes besides the VEN's own."""
        with self.sessions() as db:
            return {site.id: site.import_limit_kw for site in db.scalars(select(SiteRow))}

    async def _telemetry(self) -> list[tuple[datetime, float]]:
        """The node's metered net import over the last interval, kW: the stations behind the operations
        loop's own connection (registered without a site), the one its events limit."""
        now = self.clock()
        width = timedelta(minutes=self.interval_minutes)

        def read() -> float:
            with self.sessions() as db:
                own = set(db.scalars(select(Station.id).where(Station.site_id.is_(None))))
                wh = sum(
                    m.import_wh - m.export_wh
                    for m in metered_intervals(db, now - width, now, self.interval_minutes)
                    if m.station_id in own
                )
            return wh / 1000.0 / (width.total_seconds() / 3600)

        return [(now, round(await asyncio.to_thread(read), 3))]

    async def on_event(self, event: dict[str, Any]) -> str:
        """Answer an event (``optIn``/``optOut``) and hold it, or let it go, at the next re-plan."""
        descriptor = event["event_descriptor"]
        event_id = str(descriptor["event_id"])
        modification = int(descriptor.get("modification_number") or 0)
        status = descriptor.get("event_status")
        vtn_id = str(getattr(self.client, "vtn_id", None) or "")
        signals = event.get("event_signals") or []
        signal = (
            "+".join(f"{s.get('signal_name')}/{s.get('signal_type')}" for s in signals)
            if isinstance(signals, list)
            else ""
        )
        now = self.clock()

        def known() -> str | None:
            with self.sessions() as db:
                row = db.get(OpenAdrEventRow, event_id)
                if row is not None and row.modification_number == modification and status != "cancelled":
                    return row.opt
            return None

        answered = await asyncio.to_thread(known)
        if answered is not None:  # the same event again (a poll, a restart): the same answer
            return "optOut" if answered == "optOut" else "optIn"
        loop = self.planner()
        if status == "cancelled":
            asks: list[Ask] = []
            opt, reason = "cancelled", None
        else:
            sites = await asyncio.to_thread(self._sites)
            try:
                targets = addressed(event, self.config.node, sites)
                asks = []
                for target in targets:
                    asks += [
                        replace(a, site_id=target)
                        for a in asked_limits(
                            event,
                            node=self.config.node if target is None else target,
                            site_limit_kw=self.site_limit_kw if target is None else sites[target],
                            simple_levels=self.config.simple_levels,
                            planned_kw=_planned(loop, target),
                            interval_minutes=self.interval_minutes,
                        )
                    ]
                opt, reason = "optIn", None
            except OpenAdrError as exc:
                targets, asks, opt, reason = [], [], "optOut", f"{type(exc).__name__}: {exc}"
            if opt == "optIn" and event.get("response_required") == "never":
                opt = "mandatory"
            elif opt == "optIn" and asks:
                for target in targets:
                    mine = tuple(
                        DREvent(f"trial:{i}", a.start, timedelta(seconds=a.duration_s), a.import_limit_kw)
                        for i, a in enumerate(asks)
                        if a.site_id == target
                    )
                    if not mine:
                        continue
                    where = "" if target is None else f"site {target}: "
                    if loop is None or not loop.plan_kw.get(target):
                        # nothing planned yet (the service starting, or no prices for today): nothing to
                        # try it on
                        why: str | None = "no plan yet to hold it against"
                    else:
                        why = await loop.can_hold(mine, target)
                    if why is not None:
                        opt, reason = "optOut", f"{CannotDeliverError.__name__}: {where}{why}"
                        break

        def store() -> None:
            with self.sessions.begin() as db:
                record(
                    db,
                    event_id=event_id,
                    vtn_id=vtn_id,
                    modification_number=modification,
                    signal=signal,
                    asks=asks,
                    opt=opt,
                    reason=reason,
                    received_at=now,
                )

        await asyncio.to_thread(store)
        if opt == "optOut":
            logger.warning("OpenADR event %s (%s) declined: %s", event_id, signal, reason)
        else:
            logger.info("OpenADR event %s (%s): %s, %d interval(s)", event_id, signal, opt, len(asks))
        if loop is not None:
            loop.trigger()
        return "optOut" if opt == "optOut" else "optIn"
