"""The operations loop: on each arrival, departure and interval, re-plan with what is known and send new
profiles to every station whose plan changed.

A re-plan solves the scheduler's MILP (:func:`scheduler.solve.solve`) from the current interval to the end
of the prices stored (:func:`span_of`: the UTC day as far as its market days are public, and past midnight,
up to 48 hours, once the next market day's prices are in, so a car staying overnight is planned to its
departure): the vehicles plugged in now, with the energy their registers say they have (arrival
energy plus metered charge times the charging efficiency, minus metered discharge over the discharge
efficiency), their booked departure and target; the bookings still to arrive (so capacity is kept for
them); the day's prices, site limits and DR events. Targets are soft (a shortfall costs
``REPLAN_SHORTFALL_EUR_KWH`` per kWh) so that a surprise never leaves a station without a plan.
A fresh solve rather than the warm-started :mod:`scheduler.horizon`: live events change the set of
sessions itself, which that model fixes in advance.

Each site (``v2g sites import``: a grid connection with its own import and export limits) is planned on
its own, as its own problem: the stations registered at it, its limits and the DR events that name it;
the stations registered without a site, the bookings still to arrive and the DR events that name no site
are the loop's own connection (``import_limit_kw``, ``export_limit_kw``). A site whose problem has no
answer in the time limit gets a plain load balancer's plan (:func:`scheduler.baselines.uncontrolled`);
the other sites' optimal plans still go out.

A vehicle at an OCPP 2.0.1 station (or one that cannot discharge) is planned charge-only. A vehicle
whose station rejected its profile is planned as what the station will do, full power until its target,
and taken out of the optimisation (its load is subtracted from the site's limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlalchemy import func, select, true
from sqlalchemy.orm import Session, aliased, sessionmaker

from backend.db.models import (
    DrEventRow,
    EvChargingNeedsRow,
    MeterReading,
    OcppTransaction,
    PlugSession,
    SiteRow,
    Station,
    Vehicle,
    VehicleSettings,
)
from backend.db.session import bound_chunks
from backend.operations.field import (
    FieldDataError,
    GroupCommit,
    ImpossibleStateOfChargeError,
    StaleTransactionError,
    UnknownVehicleError,
    reject,
)
from backend.operations.metered import PlannedEnergy
from backend.operations.profiles import profile_of, timing_of
from scheduler.baselines import uncontrolled
from scheduler.errors import MisalignedIntervalError, SchedulerError
from scheduler.horizon import REPLAN_SHORTFALL_EUR_KWH
from scheduler.inputs import DREvent, Horizon, Prices, Problem, Site
from scheduler.inputs import Session as PlugIn
from scheduler.inputs import Vehicle as Ev
from scheduler.schedule import Schedule
from scheduler.solve import solve

logger = logging.getLogger(__name__)

#: How often (real seconds) the loop looks for DR events stored since its last re-plan.
DR_POLL_S = 2.0
#: At most this many sites are solved at once (one core each).
SOLVE_THREADS = 4


#: How many re-plans' durations the loop keeps (a day of quarter-hour boundaries, with room for the
#: re-plans its sites' events trigger)
REPLANS_KEPT = 1024


@dataclass
class LoopStats:
    replans: int = 0
    failed_replans: int = 0
    #: sites whose problem had no answer, summed over re-plans (their cars got the load balancer's plan)
    failed_sites: int = 0
    profiles_sent: int = 0
    profiles_rejected: int = 0
    #: the last re-plans' durations (s), newest last: a service runs for months, its re-plans are not kept
    replan_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=REPLANS_KEPT))


#: How far a car's energy from its meter may stray outside its battery before its state is impossible
#: (registers and efficiencies are not exact), kWh.
SOC_SLACK_KWH = 1.0


@dataclass(frozen=True)
class Anomaly:
    """What is impossible about one car's transaction: named, and the car left out of the re-plan."""

    station_id: str
    transaction_id: str
    error: FieldDataError
    #: a stale transaction: closed no later than this (when the car started its next one)
    close_at: datetime | None = None


@dataclass(frozen=True)
class CarNeeds:
    """What the car said over ISO 15118 (its latest ``NotifyEVChargingNeeds``)."""

    departure_at: datetime | None
    energy_wh: int | None
    import_wh_at: int | None
    soc: float | None
    capacity_wh: int | None
    max_charge_w: float | None
    max_discharge_w: float | None


@dataclass(frozen=True)
class OwnerWord:
    """The owner's settings of the car (``PUT /vehicles/{id}/settings``)."""

    usual_departure: str | None
    time_zone: str
    next_departure: datetime | None
    target_soc: float | None
    min_soc: float | None
    v2g: bool

    def departure_after(self, now: datetime) -> datetime | None:
        """The owner's next departure after ``now``: the one set for next, else the usual time today (local
        time in its zone), or tomorrow once today's has passed."""
        if self.next_departure is not None and self.next_departure > now:
            return self.next_departure
        if self.usual_departure is None:
            return None
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(self.time_zone)
        hour, minute = (int(x) for x in self.usual_departure.split(":"))
        local = now.astimezone(zone)
        for days in (0, 1):
            day = (local + timedelta(days=days)).date()
            at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
            if at > now:
                return at
        return None


class Car(Protocol):
    """What the loop reads of a vehicle (a :class:`Vehicle` row, as the ORM's object or a plain row)."""

    @property
    def id(self) -> str: ...
    @property
    def owner_id(self) -> str: ...
    @property
    def battery_kwh(self) -> float: ...
    @property
    def charge_kw(self) -> float: ...
    @property
    def discharge_kw(self) -> float: ...
    @property
    def soc_min(self) -> float: ...
    @property
    def soc_max(self) -> float: ...
    @property
    def eta_charge(self) -> float: ...
    @property
    def eta_discharge(self) -> float: ...


class Booking(Protocol):
    """What the loop reads of a plug-in booked (a :class:`PlugSession` row, object or plain row)."""

    @property
    def id(self) -> str: ...
    @property
    def vehicle_id(self) -> str: ...
    @property
    def arrival(self) -> datetime: ...
    @property
    def departure(self) -> datetime: ...
    @property
    def arrival_kwh(self) -> float: ...
    @property
    def target_kwh(self) -> float: ...


@dataclass
class Present:
    station_id: str
    evse_id: int
    transaction_id: str
    vehicle: Car
    booking: Booking | None
    energy_kwh: float
    v2g: bool
    periods_per_schedule: int
    #: the transaction's import register now (Wh)
    import_wh: int = 0
    needs: CarNeeds | None = None
    owner_word: OwnerWord | None = None
    #: the site the station is behind; ``None``: the loop's own connection
    site_id: str | None = None


#: The longest span the loop plans over (h): the scheduler's horizon, two market days.
SPAN_HOURS = 48


def span_of(start: datetime, hourly_prices: pd.Series, interval_minutes: int = 15) -> Horizon:
    """The horizon from ``start`` over the whole hours ``hourly_prices`` (UTC index) holds without a gap,
    at most :data:`SPAN_HOURS`. Raises :class:`MisalignedIntervalError` when the first hour is absent."""
    stored = pd.DatetimeIndex(hourly_prices.index)
    wanted = pd.date_range(pd.Timestamp(start), periods=SPAN_HOURS, freq="h")
    present = wanted.isin(stored)
    hours = SPAN_HOURS if present.all() else int(np.argmin(present))
    if hours == 0:
        raise MisalignedIntervalError(f"no price for hour {wanted[0].isoformat()}")
    return Horizon(start, hours * 60 // interval_minutes, interval_minutes)


class ReplanOutOfTimeError(SchedulerError):
    """A site left unsolved: the re-plan's time limit went to the sites before it."""


class Stations(Protocol):
    """What the loop asks of the CSMS: one process's (:class:`~backend.operations.csms.Csms`) or several
    processes' (:class:`~backend.operations.pool.CsmsPool`)."""

    writer: GroupCommit

    async def set_profile(self, station_id: str, evse_id: int, profile: dict[str, Any]) -> str: ...

    async def request_stop(self, station_id: str, transaction_id: str) -> str: ...


class OperationsLoop:
    def __init__(
        self,
        csms: Stations,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        *,
        day_start: datetime,
        hourly_prices: pd.Series,
        import_limit_kw: float,
        export_limit_kw: float,
        interval_minutes: int = 15,
        degradation_eur_kwh: float = 0.0,
        solve_time_limit_s: float = 30.0,
    ) -> None:
        self.csms = csms
        self.sessions = sessions
        self.clock = clock
        #: what the loop plans over: from ``day_start`` for as many whole hours as ``hourly_prices`` holds
        #: without a gap (at most :data:`SPAN_HOURS`): the rest of the UTC day, and past midnight for the
        #: cars that stay overnight once the next market day's prices are public (:meth:`extend`)
        self.day = span_of(day_start, hourly_prices, interval_minutes)
        self.prices = Prices.from_hourly(self.day, hourly_prices)
        self.import_limit_kw = import_limit_kw
        self.export_limit_kw = export_limit_kw
        self.degradation_eur_kwh = degradation_eur_kwh
        #: A live plan must come in time: past this budget HiGHS returns its best plan so far (a day with
        #: prices far below zero needs binaries and can take longer than a quiet day).
        self.solve_time_limit_s = solve_time_limit_s
        self.stats = LoopStats()
        #: (station, transaction) → the plan last sent: its first interval and its powers (kW, 2 decimals)
        self.sent: dict[tuple[str, str], tuple[datetime, bytes]] = {}
        self.uncontrolled: set[str] = set()  # vehicles whose station refused profiles
        #: the net energy last planned per (vehicle, interval), Wh (charge > 0), for the deviation report
        self.planned_wh = PlannedEnergy(timedelta(minutes=interval_minutes))
        self._wake = asyncio.Event()
        self._stopped = False
        self._profile_ids = 0
        #: profiles handed to stations whose answers are still to come
        self._dispatching: set[asyncio.Task[None]] = set()
        self._evse_delivery: dict[tuple[str, int], asyncio.Task[None]] = {}
        #: what the cars left out of the re-plan may draw per site (kW), and cars refused while building it
        self._left_out_kw: dict[str | None, float] = {}
        #: each registered site's import and export limits (kW), as the last re-plan read them
        self._site_limits: dict[str, tuple[float, float]] = {}
        #: the DR events over the span by site, as the last re-plan read them
        self._dr: dict[str | None, list[DREvent]] = {}
        self._late: list[Anomaly] = []
        #: (station, transaction) whose impossible state was named already
        self._named: set[tuple[str, str]] = set()
        #: the sites a station's event asked to re-plan since the last re-plan began (``None``: every site)
        self._dirty: set[str | None] | None = None
        #: each station's site as the last re-plan read it
        self._site_of: dict[str, str | None] = {}
        #: one plan at a time: a re-plan, or a trial of a DR event the grid asks for (:meth:`can_hold`)
        self._planning = asyncio.Lock()
        #: per site, the horizon of the last problem built, what unsteered cars draw and the import limit (kW)
        self._unplanned: dict[str | None, tuple[Horizon, np.ndarray, np.ndarray]] = {}
        #: each connection's import of its last plan per interval start (kW; ``None``: the loop's own):
        #: what a DR "delta" is taken from, and what the OpenADR VEN reports against
        self.plan_kw: dict[str | None, dict[datetime, float]] = {}
        #: each site's last plan the solver made (optimal, or a MILP's best in its time): the site's next
        #: solve starts from it
        self._plans: dict[str | None, Schedule] = {}

    @property
    def site_plan_kw(self) -> dict[datetime, float]:
        """The loop's own connection's import of its last plan per interval start (kW)."""
        return self.plan_kw.get(None, {})

    def extend(self, hourly_prices: pd.Series) -> bool:
        """Plan further ahead with newly stored prices (the next market day's, public at noon): the span
        grows to the hours ``hourly_prices`` holds without a gap from the loop's start, and the loop
        re-plans at once. Returns whether it grew."""
        span = span_of(self.day.start, hourly_prices, self.day.interval_minutes)
        if span.intervals <= self.day.intervals:
            return False
        self.prices = Prices.from_hourly(span, hourly_prices)
        self.day = span
        logger.info("prices stored up to %s UTC: planning to then", f"{span.end:%Y-%m-%d %H:%M}")
        self._touch()
        return True

    def trigger(self, kind: str = "", station_id: str = "") -> None:
        """An arrival, a departure, a reconnect: re-plan now (safe to call from the CSMS's handlers). A
        station's event re-plans its site alone (a station the loop has not seen yet, or a trigger that
        names none, the whole fleet)."""
        if kind == "boot":
            self.sent = {k: v for k, v in self.sent.items() if k[0] != station_id}  # resend its profiles
        self._touch(station_id)

    def _touch(self, station_id: str = "") -> None:
        """Re-plan the site of ``station_id`` now (``""`` or a station not seen yet: every site)."""
        if self._dirty is not None:
            if station_id in self._site_of:
                self._dirty.add(self._site_of[station_id])
            else:
                self._dirty = None
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        """Re-plan at every interval boundary and on every trigger; a DR event stored meanwhile (the API's
        POST /dr-events, or a file imported into the database) is seen within ``DR_POLL_S`` and applied at
        once."""
        try:
            await self._run()
        finally:  # profiles still waiting for their station's answer end with the loop
            await self.cancel_deliveries()

    async def cancel_deliveries(self) -> None:
        """Stop waiting for the answers still to come (their profiles went out)."""
        tasks = list(self._dispatching)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        width = timedelta(minutes=self.day.interval_minutes)
        dr_seen = await asyncio.to_thread(self._dr_signature)
        dr_read = time.monotonic()

        async def dr_changed() -> bool:
            """Whether DR events, settings, sites or their stations changed since last read; if so, every
            site is owed a re-plan."""
            nonlocal dr_seen, dr_read
            dr_now, dr_read = await asyncio.to_thread(self._dr_signature), time.monotonic()
            if dr_now == dr_seen:
                return False
            logger.info("DR events, settings, sites or their stations changed: re-planning every site")
            dr_seen, self._dirty = dr_now, None
            return True

        due = self.clock()  # when every site is re-planned next: the first re-plan, then each boundary
        while not self._stopped:
            # cleared before the re-plan, never after: a trigger or a stop that comes during the re-plan
            # (an arrival, SIGTERM) is seen at once instead of at the next interval boundary
            self._wake.clear()
            # a boundary, a DR event or a setting stored is every site's, however busy the stations keep
            # the loop: checked before each re-plan, not only while it waits
            if time.monotonic() - dr_read >= DR_POLL_S:
                await dr_changed()
            now = self.clock()
            if now >= due:
                self._dirty = None
            if self._dirty is None:
                due = self.day.start + (int((now - self.day.start) / width) + 1) * width
            scope, self._dirty = self._dirty, set()
            try:
                if scope is None or scope:  # else woken with nothing owed (a stop)
                    await self.replan(scope)
            except Exception as exc:  # the stations keep the profiles in force; the next trigger retries
                self._dirty = None if scope is None or self._dirty is None else self._dirty | scope
                self.stats.failed_replans += 1
                logger.error("re-plan failed (%s: %s): the profiles in force stay", type(exc).__name__, exc)
            factor = getattr(self.clock, "factor", 1.0)
            boundary = time.monotonic() + max((due - self.clock()).total_seconds() / factor, 0.01)
            while not self._wake.is_set() and time.monotonic() < boundary:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=max(min(DR_POLL_S, boundary - time.monotonic()), 0.0)
                    )
                if self._wake.is_set() or await dr_changed():
                    break

    async def delivered(self) -> None:
        """Wait until every profile handed out so far has its station's answer (or its call timed out)."""
        while self._dispatching:
            await asyncio.gather(*list(self._dispatching), return_exceptions=True)

    async def _deliver(self, p: Present, profile: dict[str, Any]) -> None:
        try:
            status = await self.csms.set_profile(p.station_id, p.evse_id, profile)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the profile's record not committed: named, and sent again
            logger.error(
                "profile to %s EVSE %d failed: %s: %s", p.station_id, p.evse_id, type(exc).__name__, exc
            )
            self.sent.pop((p.station_id, p.transaction_id), None)
            return
        self.stats.profiles_sent += 1
        if status == "Rejected":
            self.stats.profiles_rejected += 1
            if p.vehicle.id not in self.uncontrolled:
                logger.warning(
                    "%s rejected the profile of %s: planning it as uncontrolled", p.station_id, p.vehicle.id
                )
                self.uncontrolled.add(p.vehicle.id)
                self._touch(p.station_id)
        elif status in ("Offline", "Failed"):
            self.sent.pop((p.station_id, p.transaction_id), None)  # try again at the next re-plan

    # --- one re-plan ---------------------------------------------------------------------------------

    def _dr_events(self, session: Session) -> dict[str | None, list[DREvent]]:
        """The DR events over the span, by the site they limit (``None``: the loop's own connection)."""
        rows = list(session.scalars(select(DrEventRow).where(DrEventRow.start < self.day.end)))
        events: dict[str | None, list[DREvent]] = {}
        for r in rows:
            if r.start + timedelta(seconds=r.duration_s) > self.day.start:
                events.setdefault(r.site_id, []).append(
                    DREvent(r.id, r.start, timedelta(seconds=r.duration_s), r.import_limit_kw)
                )
        return events

    def _dr_signature(self) -> tuple[Any, ...]:
        """What, stored by another door (the API, a file, ``v2g sites import``), changes the plan: DR
        events, the owners' vehicle settings, the sites' limits and which station is behind which."""
        with self.sessions() as session:
            events = tuple(
                (r.id, r.start, r.duration_s, r.import_limit_kw, r.site_id)
                for r in session.scalars(select(DrEventRow).order_by(DrEventRow.id))
            )
            settings = session.execute(
                select(func.count(), func.max(VehicleSettings.updated_at)).select_from(VehicleSettings)
            ).one()
            sites = tuple(
                session.execute(
                    select(SiteRow.id, SiteRow.import_limit_kw, SiteRow.export_limit_kw).order_by(SiteRow.id)
                )
            )
            places = hash(tuple(session.execute(select(Station.id, Station.site_id).order_by(Station.id))))
            return (*events, tuple(settings), sites, places)

    def _state(
        self, now: datetime, sites: set[str | None] | None = None
    ) -> tuple[list[Present], list[Booking], dict[str, Car], list[Anomaly]]:
        """The cars present (one open transaction each), the plug-ins expected, the vehicles, and what is
        impossible about a car (it is left out of this re-plan, never the reason the fleet's fails); of the
        stations behind ``sites`` (``None``: every station; the bookings belong to the loop's own site)."""
        anomalies: list[Anomaly] = []
        # what the cars left out may draw, by site: kept free under the site's import limit
        reserved_kw: dict[str | None, float] = {}

        def reserve(station_id: str, kw: float) -> None:
            site = stations[station_id].site_id
            reserved_kw[site] = reserved_kw.get(site, 0.0) + kw

        with self.sessions() as session:
            self._site_limits = {
                s.id: (s.import_limit_kw, s.export_limit_kw) for s in session.scalars(select(SiteRow))
            }
            self._dr = self._dr_events(session)
            self._site_of = {sid: site for sid, site in session.execute(select(Station.id, Station.site_id))}
            # every open transaction in brief (a car is plugged in at one place: of its open transactions
            # the last started is the one in progress; the others were never ended by their station, and
            # are closed below, by name), the ones of this re-plan's sites in full
            opened = [
                (sid, tid, vid, at)
                for sid, tid, vid, at in session.execute(
                    select(
                        OcppTransaction.station_id,
                        OcppTransaction.transaction_id,
                        OcppTransaction.vehicle_id,
                        OcppTransaction.started_at,
                    )
                    .where(OcppTransaction.ended_at.is_(None))
                    .order_by(OcppTransaction.started_at, OcppTransaction.station_id)
                )
            ]
            latest = {vid: (sid, tid, at) for sid, tid, vid, at in opened if vid is not None}
            order = {(sid, tid): k for k, (sid, tid, _, _) in enumerate(opened)}

            def rows(
                query: Any, column: Any, ids: set[str] | list[str] | None, *, entities: bool = True
            ) -> list[Any]:
                """What ``query`` selects: all of it when ``ids`` is ``None`` (every site), else where
                ``column`` is one of ``ids``, a bound chunk at a time; ORM objects (``entities``) or rows."""
                run = session.scalars if entities else session.execute
                if ids is None:
                    return list(run(query))
                return [r for chunk in bound_chunks(sorted(ids)) for r in run(query.where(column.in_(chunk)))]

            here = (
                None if sites is None else {sid for sid, _, _, _ in opened if self._site_of.get(sid) in sites}
            )
            # stations and transactions as plain rows of what is read of them here (10,000 of each as ORM
            # objects were a third of a 10,000-station re-plan's state)
            stations = {
                s.id: s
                for s in rows(
                    select(
                        Station.id,
                        Station.ocpp_version,
                        Station.can_discharge,
                        Station.periods_per_schedule,
                        Station.max_power_kw,
                        Station.site_id,
                    ),
                    Station.id,
                    here,
                    entities=False,
                )
            }
            scoped = sorted(
                (
                    t
                    for t in rows(
                        select(
                            OcppTransaction.station_id,
                            OcppTransaction.transaction_id,
                            OcppTransaction.evse_id,
                            OcppTransaction.vehicle_id,
                            OcppTransaction.plug_session_id,
                            OcppTransaction.last_measured_at,
                            OcppTransaction.last_import_wh,
                            OcppTransaction.last_export_wh,
                            OcppTransaction.credit_refused,
                        ).where(OcppTransaction.ended_at.is_(None)),
                        OcppTransaction.station_id,
                        here,
                        entities=False,
                    )
                    if (t.station_id, t.transaction_id) in order  # not opened since
                ),
                key=lambda t: order[(t.station_id, t.transaction_id)],
            )
            # with every site, what belongs to the open transactions is joined to them, not listed by id
            open_tx = OcppTransaction.ended_at.is_(None)
            wanted = {t.vehicle_id for t in scoped if t.vehicle_id is not None}
            # vehicles and bookings as plain rows too (the ORM's objects cost 20 µs each)
            car_columns = select(*Vehicle.__table__.columns)
            vehicles: dict[str, Car] = {
                v.id: v
                for v in rows(car_columns, Vehicle.id, None if sites is None else wanted, entities=False)
            }
            present: list[Present] = []
            # the cars plugged in (a booking of theirs is not expected); those out of this re-plan's sites too
            busy = {vid for _, _, vid, _ in opened if vid is not None} if sites is not None else set()
            said: dict[tuple[str, str | None], CarNeeds] = {}
            needs = (
                select(EvChargingNeedsRow)
                .where(EvChargingNeedsRow.kind == "needs")
                .order_by(EvChargingNeedsRow.received_at, EvChargingNeedsRow.id)
            )
            if here is None:
                needs = needs.join(
                    OcppTransaction,
                    (OcppTransaction.station_id == EvChargingNeedsRow.station_id)
                    & (OcppTransaction.transaction_id == EvChargingNeedsRow.transaction_id),
                ).where(open_tx)
            for row in rows(
                needs,
                EvChargingNeedsRow.transaction_id,
                None if here is None else {t.transaction_id for t in scoped},
            ):  # the latest of each transaction's cars' needs (a transaction's rows are in one chunk)
                said[(row.station_id, row.transaction_id)] = CarNeeds(
                    row.departure_at,
                    row.energy_wh,
                    row.import_wh_at,
                    row.soc,
                    row.capacity_wh,
                    row.max_charge_w,
                    row.max_discharge_w,
                )
            # the bookings and each open transaction's first sample, in one statement each (a query per
            # transaction was 0.65 s of a 1,000-station re-plan, a round trip each on PostgreSQL)
            booked = select(*PlugSession.__table__.columns)
            bookings: dict[str, Booking] = {
                b.id: b
                for b in (
                    session.execute(
                        booked.join(OcppTransaction, OcppTransaction.plug_session_id == PlugSession.id)
                        .where(open_tx)
                        .distinct()
                    )
                    if here is None
                    else rows(
                        booked,
                        PlugSession.id,
                        {t.plug_session_id for t in scoped if t.plug_session_id},
                        entities=False,
                    )
                )
            }
            # each open transaction's first sample by its time (ties: as stored), through the index on
            # (station, transaction, time), in one statement
            sample = aliased(MeterReading)

            def first_sample(*registers: Any) -> Any:
                """``registers`` of the first sample of the transaction the outer query is at."""
                return (
                    select(*registers)
                    .where(
                        sample.station_id == OcppTransaction.station_id,
                        sample.transaction_id == OcppTransaction.transaction_id,
                    )
                    .order_by(sample.measured_at, sample.id)
                    .limit(1)
                )

            measured = (OcppTransaction.ended_at.is_(None), OcppTransaction.last_measured_at.is_not(None))
            if session.get_bind().dialect.name == "postgresql":
                # both registers in one probe (LATERAL): half the time of a probe each (150 ms instead of
                # 310 at 10,000 open transactions); SQLite has no LATERAL
                earliest = first_sample(sample.import_wh, sample.export_wh).lateral()
                first_of = (
                    select(
                        OcppTransaction.station_id,
                        OcppTransaction.transaction_id,
                        earliest.c.import_wh,
                        earliest.c.export_wh,
                    )
                    .join(earliest, true())
                    .where(*measured)
                )
            else:  # a probe a register
                first_import, first_export = (
                    first_sample(register).correlate(OcppTransaction).scalar_subquery()
                    for register in (sample.import_wh, sample.export_wh)
                )
                first_of = select(
                    OcppTransaction.station_id, OcppTransaction.transaction_id, first_import, first_export
                ).where(*measured)
            wheres = (
                [first_of]
                if here is None
                else [
                    first_of.where(OcppTransaction.station_id.in_(chunk))
                    for chunk in bound_chunks(sorted(here))
                ]
            )
            firsts = {
                (sid, tid): (imported, exported)
                for query in wheres
                for sid, tid, imported, exported in session.execute(query)
                if imported is not None
            }
            words = {
                w.vehicle_id: OwnerWord(
                    w.usual_departure, w.time_zone, w.next_departure, w.target_soc, w.min_soc, w.v2g
                )
                for w in rows(
                    select(VehicleSettings), VehicleSettings.vehicle_id, None if sites is None else wanted
                )
            }
            for tx in scoped:
                key = (tx.station_id, tx.transaction_id)
                if tx.vehicle_id is None:
                    continue  # its idToken authorises no vehicle: named by the field rules when it started
                if tx.vehicle_id not in vehicles:
                    reserve(tx.station_id, stations[tx.station_id].max_power_kw)
                    anomalies.append(
                        Anomaly(
                            tx.station_id,
                            tx.transaction_id,
                            UnknownVehicleError(
                                f"transaction {tx.transaction_id} at {tx.station_id}: vehicle "
                                f"{tx.vehicle_id} is not registered (any more): not planned"
                            ),
                        )
                    )
                    continue
                current = latest[tx.vehicle_id]  # (station, transaction, started)
                if current[:2] != key:
                    anomalies.append(
                        Anomaly(
                            tx.station_id,
                            tx.transaction_id,
                            StaleTransactionError(
                                f"{tx.vehicle_id} started transaction {current[1]} at "
                                f"{current[0]} ({current[2].isoformat()}) while "
                                f"{tx.transaction_id} at {tx.station_id} was open: that one is closed"
                            ),
                            close_at=current[2],
                        )
                    )
                    continue
                if tx.credit_refused:
                    # answered NoCredit: planned no energy (a station that charges anyway is metered and
                    # settled, and its owner's debit becomes debt where the escrow does not cover it)
                    busy.add(tx.vehicle_id)
                    continue
                vehicle = vehicles[tx.vehicle_id]
                booking = bookings.get(tx.plug_session_id) if tx.plug_session_id else None
                # the first sample, and the transaction's tail (its latest registers, kept by every path)
                first = firsts.get(key)
                arrival_kwh = (
                    booking.arrival_kwh if booking else vehicle.battery_kwh * max(vehicle.soc_min, 0.2)
                )
                energy = arrival_kwh
                moved = 0.0  # the battery's change the meter says, whatever the car came with
                if first is not None and tx.last_measured_at is not None:
                    charged = (tx.last_import_wh - first[0]) / 1000.0
                    given = (tx.last_export_wh - first[1]) / 1000.0
                    moved = charged * vehicle.eta_charge - given / vehicle.eta_discharge
                    energy = arrival_kwh + moved
                busy.add(tx.vehicle_id)
                if abs(moved) > vehicle.battery_kwh + SOC_SLACK_KWH:
                    # more than the whole battery in or out: impossible whatever it arrived with (a guess of
                    # its arrival energy that turns out wrong is only clamped below)
                    reserve(tx.station_id, vehicle.charge_kw)
                    anomalies.append(
                        Anomaly(
                            tx.station_id,
                            tx.transaction_id,
                            ImpossibleStateOfChargeError(
                                f"{tx.vehicle_id} at {tx.station_id}: {moved:+.1f} kWh through its meter, "
                                f"more than its {vehicle.battery_kwh:g} kWh battery: not planned (its "
                                "charger's power is kept free under the site limit)"
                            ),
                        )
                    )
                    continue
                station = stations[tx.station_id]
                present.append(
                    Present(
                        tx.station_id,
                        tx.evse_id,
                        tx.transaction_id,
                        vehicle,
                        booking,
                        energy,
                        v2g=station.ocpp_version == "2.1"
                        and station.can_discharge
                        and vehicle.discharge_kw > 0,
                        periods_per_schedule=station.periods_per_schedule,
                        import_wh=tx.last_import_wh,
                        needs=said.get(key),
                        owner_word=words.get(tx.vehicle_id),
                        site_id=station.site_id,
                    )
                )
            expected: list[Booking] = []
            if sites is None or None in sites:  # a booking names no station: the loop's own site
                expected = [
                    b
                    for b in session.scalars(
                        select(PlugSession).where(
                            PlugSession.arrival > now - timedelta(hours=1),
                            PlugSession.arrival < self.day.end,
                            PlugSession.departure > now,
                        )
                    )
                    if b.vehicle_id not in busy
                ]
                # the bookings a transaction began already
                started = set(
                    rows(
                        select(OcppTransaction.plug_session_id),
                        OcppTransaction.plug_session_id,
                        {b.id for b in expected},
                    )
                )
                expected = [b for b in expected if b.id not in started]
                missing = {b.vehicle_id for b in expected} - vehicles.keys()
                vehicles.update((v.id, v) for v in rows(car_columns, Vehicle.id, missing, entities=False))
        if sites is None:
            self._left_out_kw = reserved_kw
        else:
            self._left_out_kw.update({site: reserved_kw.get(site, 0.0) for site in sites})
        return present, expected, vehicles, anomalies

    async def _record(self, anomalies: list[Anomaly]) -> None:
        """Each impossible state named once (a field rejection); a stale transaction closed at its last
        sample (or when the car started its next one)."""
        new = [a for a in anomalies if (a.station_id, a.transaction_id) not in self._named]
        if not new:
            return

        def store(session: Session) -> None:
            for a in new:
                if a.close_at is not None:
                    tx = session.get(OcppTransaction, (a.station_id, a.transaction_id))
                    if tx is not None and tx.ended_at is None:
                        tx.ended_at = max(
                            min(tx.last_measured_at or tx.started_at, a.close_at), tx.started_at
                        )
                        tx.stopped_reason = "Superseded"
                reject(session, a.station_id, a.error)

        await self.csms.writer.run(store)
        for a in new:
            if a.close_at is None:  # a closed transaction is not seen again; the others are named once
                self._named.add((a.station_id, a.transaction_id))
            else:  # and its station is told, as OCPP has a CSMS end a transaction left open
                task = asyncio.create_task(self._request_stop(a.station_id, a.transaction_id))
                self._dispatching.add(task)
                task.add_done_callback(self._dispatching.discard)

    async def _request_stop(self, station_id: str, transaction_id: str) -> None:
        status = await self.csms.request_stop(station_id, transaction_id)
        logger.info(
            "RequestStopTransaction %s at %s (closed as superseded): %s", transaction_id, station_id, status
        )

    def _problem(
        self,
        now: datetime,
        present: list[Present],
        expected: list[Booking],
        vehicles: dict[str, Car],
        extra_events: tuple[DREvent, ...] = (),
        site: str | None = None,
    ) -> Problem | None:
        """The problem of one site (``None``: the loop's own connection, with the bookings still to come):
        its cars present, its limits, its DR events; ``None`` when it has no car to plan."""
        width = timedelta(minutes=self.day.interval_minutes)
        k0 = max(int((now - self.day.start) / width), 0)
        n = self.day.intervals - k0
        if n <= 0:
            return None
        horizon = Horizon(self.day.start + k0 * width, n, self.day.interval_minutes)
        end = horizon.end
        midnight = self.day.start + timedelta(days=1)
        evs: dict[str, Ev] = {}
        plugs: list[PlugIn] = []
        reserved = np.full(n, self._left_out_kw.get(site, 0.0))
        for p in present:
            if p.site_id != site:
                continue
            v = p.vehicle
            needs = p.needs
            # a car nobody said anything of is planned to leave by midnight, as before the plan reached
            # past it: never left to charge in tomorrow's night it may not be there for
            departure = p.booking.departure if p.booking else min(end, midnight)
            if needs is not None and needs.departure_at is not None:  # the car's word over the booking's
                departure = needs.departure_at
            departure = min(max(departure, horizon.start + width), end)
            target = p.booking.target_kwh if p.booking else v.battery_kwh * v.soc_max
            energy = p.energy_kwh
            charge_kw, discharge_kw = v.charge_kw, v.discharge_kw
            if needs is not None:
                since_wh = max(
                    p.import_wh - (needs.import_wh_at if needs.import_wh_at is not None else p.import_wh), 0
                )
                if needs.soc is not None and needs.capacity_wh:  # the car's own reading, when it asked
                    energy = needs.soc / 100.0 * needs.capacity_wh / 1000.0 + since_wh / 1000.0 * v.eta_charge
                if needs.energy_wh is not None:  # what it asked for, less what it has had since
                    target = energy + max(needs.energy_wh - since_wh, 0) / 1000.0 * v.eta_charge
                if needs.max_charge_w:
                    charge_kw = min(charge_kw, needs.max_charge_w / 1000.0)
                if needs.max_discharge_w is not None:
                    discharge_kw = min(discharge_kw, needs.max_discharge_w / 1000.0)
            energy = min(max(energy, v.battery_kwh * v.soc_min), v.battery_kwh * v.soc_max)
            soc_min = v.soc_min
            word = p.owner_word
            if word is not None:  # the owner's word over the car's and the booking's
                leaves = word.departure_after(horizon.start)
                if leaves is not None:
                    departure = min(max(leaves, horizon.start + width), end)
                if word.target_soc is not None:
                    target = v.battery_kwh * word.target_soc
                if word.min_soc is not None:  # kept for driving, never given back below (nor above now)
                    soc_min = max(soc_min, min(word.min_soc, energy / v.battery_kwh))
                if not word.v2g:
                    discharge_kw = 0.0
            if v.id in self.uncontrolled:  # what the station will do: full power until the target
                need = max(target - energy, 0.0) / v.eta_charge
                for k in range(n):
                    take = min(v.charge_kw, need / horizon.dt_h)
                    reserved[k] += take
                    need -= take * horizon.dt_h
                continue
            try:  # what the car and its owner said, checked as the scheduler checks every input
                car = Ev(
                    v.id,
                    v.owner_id,
                    v.battery_kwh,
                    charge_kw,
                    discharge_kw if p.v2g else 0.0,
                    soc_min,
                    v.soc_max,
                    v.eta_charge,
                    v.eta_discharge,
                )
                plug = PlugIn(
                    p.transaction_id,
                    v.id,
                    horizon.start,
                    departure,
                    energy,
                    min(target, v.battery_kwh * v.soc_max),
                )
            except SchedulerError as exc:
                self._late.append(
                    Anomaly(
                        p.station_id,
                        p.transaction_id,
                        ImpossibleStateOfChargeError(f"{v.id} at {p.station_id}: {exc}: not planned"),
                    )
                )
                reserved += v.charge_kw
                continue
            evs[v.id] = car
            plugs.append(plug)
        for b in expected if site is None else ():  # a booking names no station: the loop's own site
            v = vehicles[b.vehicle_id]
            if v.id in evs:
                continue
            evs[v.id] = Ev(
                v.id,
                v.owner_id,
                v.battery_kwh,
                v.charge_kw,
                0.0,
                v.soc_min,
                v.soc_max,
                v.eta_charge,
                v.eta_discharge,
            )
            arrival = max(b.arrival, horizon.start)
            departure = min(b.departure, end)
            if departure <= arrival:
                continue
            plugs.append(
                PlugIn(
                    f"booking:{b.id}",
                    v.id,
                    arrival,
                    departure,
                    b.arrival_kwh,
                    min(b.target_kwh, v.battery_kwh * v.soc_max),
                )
            )
        if not plugs:
            return None
        events = tuple(
            e
            for e in (*self._dr.get(site, ()), *extra_events)
            if e.start + e.duration > horizon.start and e.start < horizon.end
        )
        import_kw, export_kw = (
            (self.import_limit_kw, self.export_limit_kw) if site is None else self._site_limits[site]
        )
        # a DR event limits the site's whole import, the cars left out of the plan included: what they
        # may draw comes off the event's limit as it comes off the site's
        limit = np.full(n, import_kw)
        for e in events:
            limit = np.where(e.mask(horizon), np.minimum(limit, e.import_limit_kw), limit)
        self._unplanned[site] = (horizon, reserved, limit)
        return Problem(
            horizon=horizon,
            vehicles=tuple(evs.values()),
            sessions=tuple(plugs),
            site=Site.build(horizon, np.maximum(limit - reserved, 0.0), export_kw),
            prices=Prices.build(horizon, self.prices.buy_eur_mwh[k0:], self.prices.sell_eur_mwh[k0:]),
            dr_events=events,
            degradation_eur_kwh=self.degradation_eur_kwh,
            shortfall_penalty_eur_kwh=REPLAN_SHORTFALL_EUR_KWH,
        )

    async def can_hold(self, events: tuple[DREvent, ...], site: str | None = None) -> str | None:
        """Can the fleet behind ``site`` (``None``: the loop's own connection) hold ``events`` (the grid
        asks) as it is now? None if yes; else why not, in one line. Yes when the cars the plan cannot steer
        draw no more than an event allows, and the plan with the events leaves no car shorter of the energy
        its owner asked for than the plan without them (the owners' promise comes first). Tried on the plan
        over the prices stored (tomorrow too once its prices are public): the part of an event past that
        is judged by the plan of its day."""
        async with self._planning:
            now = self.clock()
            present, expected, vehicles, anomalies = await asyncio.to_thread(self._state, now, {site})
            await self._record(anomalies)
            self._late = []
            if site is not None and site not in self._site_limits:
                return f"site {site} is not registered"
            base = self._problem(now, present, expected, vehicles, site=site)
            if base is None:
                return None  # no car to plan: nothing to give up
            horizon, reserved, _ = self._unplanned[site]
            trial = self._problem(now, present, expected, vehicles, extra_events=events, site=site)
            await self._record(self._late)
            assert trial is not None
            _, _, limit = self._unplanned[site]
            over = reserved - limit
            if np.any(over > 1e-9):
                k = int(np.argmax(over))
                return (
                    f"the cars the plan cannot steer draw {reserved[k]:.1f} kW at "
                    f"{horizon.timestamps[k]:%Y-%m-%d %H:%M} UTC, above the {limit[k]:.1f} kW asked"
                )
            short = []
            for problem in (base, trial):
                schedule = await asyncio.to_thread(
                    solve,
                    problem,
                    v2g=True,
                    mip_gap=1e-3,
                    time_limit=self.solve_time_limit_s,
                    context="DR trial",
                    start=self._plans.get(site),
                )
                short.append(float(schedule.shortfall_kwh.sum()))
            if short[1] > short[0] + 1e-3:
                return (
                    f"holding it would leave the cars {short[1] - short[0]:.2f} kWh short of what their "
                    "owners asked for"
                )
            return None

    def planned_import_kw(self, at: datetime, site: str | None = None) -> float | None:
        """The import the last plan of ``site`` (``None``: the loop's own connection) foresaw in the
        interval holding ``at`` (kW), None if unplanned."""
        width = timedelta(minutes=self.day.interval_minutes)
        start = self.day.start + int((at - self.day.start) / width) * width
        return self.plan_kw.get(site, {}).get(start)

    async def replan(self, sites: set[str | None] | None = None) -> int:
        """Re-plan ``sites`` now (``None``: every site; ``None`` in the set: the loop's own); returns the
        profiles sent."""
        async with self._planning:
            # what this re-plan covers is no longer owed; a trigger from now on asks again
            if sites is None:
                self._dirty = set()
            elif self._dirty is not None:
                self._dirty -= sites
            return await self._replan(sites)

    async def _replan(self, sites: set[str | None] | None = None) -> int:
        started = time.perf_counter()
        now = self.clock()
        present, expected, vehicles, anomalies = await asyncio.to_thread(self._state, now, sites)
        await self._record(anomalies)
        self._late = []
        problems: dict[str | None, Problem] = {}
        unbuilt: set[str | None] = set()
        for site in (None, *sorted({p.site_id for p in present if p.site_id is not None})):
            if sites is not None and site not in sites:
                continue
            try:
                problem = self._problem(now, present, expected, vehicles, site=site)
            except Exception:  # e.g. a station behind a site the database no longer has: this site's alone
                self.stats.failed_sites += 1
                unbuilt.add(site)
                logger.exception("site %s not planned: its profiles in force stay", site)
                continue
            if problem is not None:
                problems[site] = problem
        await self._record(self._late)
        for gone in [s for s in self._plans if s is not None and s not in self._site_limits]:
            del self._plans[gone]  # a site no longer registered
        width = timedelta(minutes=self.day.interval_minutes)
        k0 = max(int((now - self.day.start) / width), 0)
        for site in (None, *self._site_limits):
            if site not in problems and site not in unbuilt and (sites is None or site in sites):
                # no car to plan behind it: what its unsteered cars draw, not the last plan (what a DR
                # "delta" is taken from and an OpenADR event is answered against)
                drawn = self._left_out_kw.get(site, 0.0)
                steps = range(k0, self.day.intervals)
                self.plan_kw[site] = {self.day.start + k * width: drawn for k in steps}
                self._plans.pop(site, None)
        if not problems:
            return 0
        state_s = time.perf_counter() - started
        stamps = list(next(iter(problems.values())).horizon.timestamps.to_pydatetime())
        dt_h = next(iter(problems.values())).horizon.dt_h
        by_site: dict[str | None, list[Present]] = {}
        for p in present:
            by_site.setdefault(p.site_id, []).append(p)
        plans: dict[str | None, Schedule] = {}
        failed: dict[str | None, SchedulerError] = {}
        handed = 0
        profiles_s = 0.0
        # each site's profiles go out as soon as its plan is there: the stations of the sites solved first
        # are answering while the others are still being solved
        try:
            async with contextlib.aclosing(self._solve_sites(problems)) as solved:
                async for site, plan, error in solved:
                    if error is not None:
                        failed[site] = error
                        self._site_failed(site, error, planned=plan is not None)
                    elif plan is not None:
                        self._plans[site] = plan
                    if plan is None:
                        continue
                    _, reserved, _ = self._unplanned[site]
                    net = plan.charge_kw.sum(axis=0) - plan.discharge_kw.sum(axis=0) + reserved
                    self.plan_kw[site] = {t: max(float(x), 0.0) for t, x in zip(stamps, net, strict=True)}
                    begun = time.perf_counter()
                    dispatch = self._site_profiles(plan, by_site.get(site, []), stamps, dt_h)
                    profiles_s += time.perf_counter() - begun
                    self._dispatch(dispatch)
                    handed += len(dispatch)
                    plans[site] = plan
        finally:
            # a re-plan cut short (an error, cancelled): the sites whose profiles did not go out are owed
            if self._dirty is not None:
                self._dirty |= set(problems) - set(plans)
        solve_s = time.perf_counter() - started - state_s
        if not plans:  # nothing to send: the stations keep the profiles in force
            raise next(iter(failed.values()))
        if self._dirty is not None:  # tried again with the next re-plan
            self._dirty |= set(failed)
        self.stats.replans += 1
        self.stats.replan_seconds.append(time.perf_counter() - started)
        logger.info(
            "re-plan at %s: %d present, %d expected, %d site(s); state %.2f s, then %.2f s until the last "
            "site's plan was solved and its profiles handed to their stations (profiles %.2f s of it), %d "
            "profiles",
            now.isoformat(),
            len(present),
            len(expected),
            len(problems),
            state_s,
            solve_s,
            profiles_s,
            handed,
        )
        return handed

    def _site_failed(self, site: str | None, exc: SchedulerError, *, planned: bool) -> None:
        self.stats.failed_sites += 1
        logger.error(
            "re-plan of site %s failed (%s: %s): %s",
            "(the loop's own)" if site is None else site,
            type(exc).__name__,
            exc,
            "its cars get its load balancer's plan: full power from now until each has what its "
            "owner asked for, scaled down together to the site's limit"
            if planned
            else "its profiles in force stay",
        )

    def _site_profiles(
        self, schedule: Schedule, present: list[Present], stamps: list[datetime], dt_h: float
    ) -> list[tuple[Present, dict[str, Any]]]:
        """The profiles of one site's plan that differ from what its stations have (and the plan's
        energy per vehicle and interval, what the delivery report compares with)."""
        column = {sid: i for i, sid in enumerate(schedule.session_ids)}
        here = [(p, column[p.transaction_id]) for p in present if p.transaction_id in column]
        dispatch: list[tuple[Present, dict[str, Any]]] = []
        if not here:
            return dispatch
        rows = np.array([i for _, i in here])
        charge, discharge = schedule.charge_kw[rows], schedule.discharge_kw[rows]
        # whole Wh of each interval, and what tells a changed plan: rounded as a whole site at once
        net_wh = np.rint((charge - discharge) * dt_h * 1000).astype(np.int64)
        rounded = np.stack([np.round(charge, 2), np.round(discharge, 2)], axis=-1)
        self.planned_wh.plan([p.vehicle.id for p, _ in here], stamps[0], net_wh)
        timing = timing_of(stamps)
        for k, (p, _) in enumerate(here):
            key = (p.station_id, p.transaction_id)
            signature = (stamps[0], rounded[k].tobytes())
            if self.sent.get(key) == signature:
                continue
            self._profile_ids += 1
            profile = profile_of(
                profile_id=self._profile_ids,
                transaction_id=p.transaction_id,
                starts=stamps,
                charge_kw=charge[k],
                discharge_kw=discharge[k],
                v2g=p.v2g,
                max_charge_kw=p.vehicle.charge_kw,
                max_discharge_kw=p.vehicle.discharge_kw if p.v2g else 0.0,
                periods_per_schedule=p.periods_per_schedule,
                timing=timing,
            )
            dispatch.append((p, profile))
            self.sent[key] = signature
        return dispatch

    def _dispatch(self, dispatch: list[tuple[Present, dict[str, Any]]]) -> None:
        # each station's call on its own: a silent or slow station holds up only its own answer, never
        # another station's profile nor the next re-plan
        for p, prof in dispatch:
            # one delivery per EVSE: a newer profile replaces one still waiting for a silent station, so
            # a station that comes back gets the latest plan, not a queue of stale ones
            evse = (p.station_id, p.evse_id)
            waiting = self._evse_delivery.get(evse)
            if waiting is not None and not waiting.done():
                waiting.cancel()
            task = asyncio.create_task(self._deliver(p, prof))
            self._evse_delivery[evse] = task
            self._dispatching.add(task)
            task.add_done_callback(self._dispatching.discard)

    async def _solve_sites(
        self, problems: dict[str | None, Problem]
    ) -> AsyncGenerator[tuple[str | None, Schedule | None, SchedulerError | None], None]:
        """Each site's plan as soon as it is solved, with the error of a site the solver left without an
        optimal one (its own: the other sites are planned). A site without an optimal plan gets what a
        plain load balancer does (:func:`scheduler.baselines.uncontrolled`: full power from now, every
        car's request scaled down together to the site's limit and DR events), never no profile: a car
        that arrived meanwhile would charge at full power whatever its site can take."""
        # one budget for the whole re-plan, not one per site: the sites after it are out of time
        deadline = time.monotonic() + self.solve_time_limit_s

        def one(site: str | None, problem: Problem) -> tuple[Schedule | None, SchedulerError | None]:
            what = "live re-plan" if site is None else f"live re-plan of site {site}"
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise ReplanOutOfTimeError(
                        f"{what}: no time left of the re-plan's {self.solve_time_limit_s:g} s"
                    )
                plan = solve(
                    problem,
                    v2g=True,
                    mip_gap=1e-3,
                    time_limit=left,
                    threads=1,
                    context=what,
                    start=self._plans.get(site),
                )
                return plan, None
            except Exception as exc:  # this site's alone (a numerical failure too): the others are planned
                error = exc if isinstance(exc, SchedulerError) else SchedulerError(f"{what}: {exc!r}")
                try:
                    return uncontrolled(problem), error
                except Exception:
                    logger.exception("%s: no load balancer's plan either", what)
                    return None, error

        # HiGHS lets go of the GIL while it solves: the sites on every core (a site's solve on one)
        workers = max(1, min(len(problems), os.cpu_count() or 1, SOLVE_THREADS))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="site-solve")
        loop = asyncio.get_running_loop()
        try:
            pending = {
                loop.run_in_executor(pool, one, site, problem): site for site, problem in problems.items()
            }
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    site = pending.pop(future)
                    plan, error = future.result()
                    yield site, plan, error
        finally:  # a re-plan given up (cancelled): the solves not started are not, the one running ends
            pool.shutdown(wait=False, cancel_futures=True)
