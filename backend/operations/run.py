"""``v2g operate``: the CSMS, the operations loop, the metering service and the API on the platform's
persistent chain and database; with ``simulate``, N simulated stations and an accelerated day that ends
in a metered settlement on chain and a reconciliation.

The metering service runs as its own process (``python -m backend.metering.service``) with the meter
key; this process (the settler) asks it to sign and never holds that key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from ssl import SSLContext
from typing import Any

from eth_keys.datatypes import PrivateKey
from eth_utils.crypto import keccak
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.app.settle import UNIT, SettlePolicy, settle_metered, top_up_escrow
from backend.clock import platform_clock
from backend.db.models import (
    FieldRejection,
    IdTokenRow,
    MeterReading,
    OcppTransaction,
    Owner,
    PeriodStatus,
    PlugSession,
    PricePoint,
    Station,
    Vehicle,
)
from backend.operations.auth import hash_password, new_password
from backend.operations.credit import credit_gate
from backend.operations.csms import Csms
from backend.operations.loop import SPAN_HOURS, OperationsLoop, span_of
from backend.operations.metered import plan_vs_metered
from backend.operations.pool import CsmsPool
from backend.operations.simulator import SimCar, SimClock, SimStation, run_stations, seeded_trouble
from backend.platform import Platform, PlatformError
from backend.settlement.pipeline import local_owner_accounts
from scheduler.errors import MisalignedIntervalError
from scheduler.fleet import FleetConfig, generate_fleet

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def meter_key_of(station_id: str) -> bytes:
    """A simulated station's meter key (its public half is registered with the station)."""
    return keccak(text=f"v2g-settle simulated meter {station_id}")


#: Escrow the simulated fleet's owners hold on the local chain before charging (50 EUR each).
ESCROW_PER_OWNER = 50 * UNIT


class DayAlreadyOperatedError(PlatformError):
    """A simulated day over a day that already has field data (it would mix two days' meters)."""


@dataclass
class OperateResult:
    period_id: int
    status: str
    stations: int
    transactions: int
    meter_readings: int
    rejections: dict[str, int]
    replans: int
    profiles_sent: int
    profiles_rejected: int
    metered_wh: int
    planned_wh: int
    abs_deviation_wh: int
    unattributed_wh: int
    reconciliation_ok: bool
    mismatches: list[str] = field(default_factory=list)
    entries: int = 0
    #: ``metered = settled + adjusted + refused + pending`` for the day, and whether it balances.
    energy_equation: str = ""
    energy_balances: bool = True
    #: sessions refused because the owner's free escrow did not cover them (NoCredit answers)
    no_credit: int = 0


def register_simulated_fleet(
    sessions: sessionmaker[Session], day: str, n: int, seed: int, prices: Any
) -> list[dict[str, Any]]:
    """Owners, vehicles, bookings, idTokens, stations and the day's prices for ``n`` simulated stations
    (one vehicle each); idempotent. Returns the stations' specifications, each with a new random password
    (``password``: its scrypt hash is stored, the plaintext lives only in this process for its SimStation;
    a station registered before gets a new one)."""
    vehicles, plugs = generate_fleet(day, FleetConfig(n_evs=n), seed=seed)
    accounts = local_owner_accounts(sorted({v.owner for v in vehicles}))
    passwords = [new_password() for _ in vehicles]
    # scrypt releases the GIL: the hashes (~40 ms each) are made on every core
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        hashes = list(pool.map(hash_password, passwords))
    specs = []
    with sessions.begin() as db:
        for owner, account in accounts.items():
            if db.get(Owner, owner) is None:
                db.add(Owner(id=owner, address=account.address))
        db.flush()
        for k, (v, s) in enumerate(zip(vehicles, plugs, strict=True)):
            if db.get(Vehicle, v.id) is None:
                db.add(
                    Vehicle(
                        id=v.id,
                        owner_id=v.owner,
                        battery_kwh=v.battery_kwh,
                        charge_kw=v.charge_kw,
                        discharge_kw=v.discharge_kw,
                        soc_min=v.soc_min,
                        soc_max=v.soc_max,
                        eta_charge=v.eta_charge,
                        eta_discharge=v.eta_discharge,
                    )
                )
                db.flush()
            if db.get(PlugSession, s.id) is None:
                db.add(
                    PlugSession(
                        id=s.id,
                        vehicle_id=v.id,
                        arrival=s.arrival,
                        departure=s.departure,
                        arrival_kwh=s.arrival_kwh,
                        target_kwh=s.target_kwh,
                    )
                )
            token = f"tok-{v.id}"
            if db.get(IdTokenRow, token) is None:
                db.add(IdTokenRow(token=token, vehicle_id=v.id))
            station_id = f"CS{k:05d}"
            v2g = v.discharge_kw > 0
            version = "2.1" if v2g or k % 3 == 0 else "2.0.1"
            station = db.get(Station, station_id)
            if station is None:
                meter = meter_key_of(station_id)
                station = Station(
                    id=station_id,
                    ocpp_version=version,
                    can_discharge=v2g and version == "2.1",
                    evses=1,
                    periods_per_schedule=24,
                    meter_public_key=PrivateKey(meter).public_key.to_bytes().hex(),
                )
                db.add(station)
            station.password_hash = hashes[k]
            specs.append(
                {
                    "station_id": station_id,
                    "version": version,
                    "can_discharge": v2g and version == "2.1",
                    "vehicle": v,
                    "session": s,
                    "token": token,
                    "password": passwords[k],
                }
            )
        for utc, eur in prices.items():
            if db.get(PricePoint, utc.to_pydatetime()) is None:
                db.add(PricePoint(utc=utc.to_pydatetime(), eur_mwh=float(eur)))
    return specs


def simulated_stations(
    specs: list[dict[str, Any]], url: str, clock: SimClock, day_start: datetime, seed: int, *, trouble: bool
) -> list[SimStation]:
    rng = random.Random(seed)
    says = random.Random(seed + 1)  # which cars state their needs over ISO 15118: about half, as in the field
    stations = []
    for spec in specs:
        v, s = spec["vehicle"], spec["session"]
        wants = max(s.target_kwh - s.arrival_kwh, 0.0) / v.eta_charge if says.random() < 0.5 else None
        late = timedelta(minutes=rng.gauss(0, 20)) if trouble else timedelta(0)
        departure = max(s.departure + late, s.arrival + timedelta(minutes=15))
        acceptance = 0.7 if trouble and rng.random() < 0.2 else 1.0
        car = SimCar(
            v.id,
            spec["token"],
            v.battery_kwh,
            v.charge_kw,
            v.discharge_kw,
            v.soc_min,
            v.soc_max,
            v.eta_charge,
            v.eta_discharge,
            s.arrival,
            departure,
            s.arrival_kwh,
            acceptance,
            wants,
        )
        stations.append(
            SimStation(
                spec["station_id"],
                url,
                spec["version"],
                clock,
                car,
                can_discharge=spec["can_discharge"],
                trouble=seeded_trouble(rng, day_start)
                if trouble
                else seeded_trouble(rng, day_start, drops=0.0, skew_s=0.0),
                seed=rng.randrange(2**31),
                meter_key=meter_key_of(spec["station_id"]),
                password=spec.get("password"),
                transaction_id=f"{spec['station_id']}-{day_start:%Y%m%d}",
            )
        )
    return stations


async def operate_simulated_day(
    platform: Platform,
    *,
    day: str,
    stations: int,
    seed: int = 0,
    minutes: float = 3.0,
    policy: SettlePolicy | None = None,
    trouble: bool = True,
    progress: Callable[[str], None] | None = None,
) -> OperateResult:
    """An accelerated day: ``stations`` simulated stations over the real protocol, the loop re-planning,
    then a metered settlement signed by the metering service, and a reconciliation."""
    from scheduler.datasets import load_prices

    say = progress or (lambda _: None)
    policy = policy or SettlePolicy()
    start = datetime.fromisoformat(day + "T00:00:00+00:00")
    end = start + timedelta(days=1)
    hourly = load_prices().window(start, end)
    with platform.sessions() as db:
        operated = db.scalar(
            select(func.count())
            .select_from(OcppTransaction)
            .where(OcppTransaction.started_at >= start, OcppTransaction.started_at < end)
        )
    if operated:
        raise DayAlreadyOperatedError(
            f"{day} already has {operated} charging transaction(s) in {platform.database_url}: "
            "simulate another --date, or use another database"
        )
    specs = register_simulated_fleet(platform.sessions, day, stations, seed, hourly)
    platform.ensure_deployment(liveness_s=policy.liveness_s)
    # the fleet's owners hold escrow on the local chain, as real owners would before charging: sessions
    # are authorised against it (NoCredit below the session's exposure)
    with platform.sessions() as db:
        addresses = [o.address for o in db.scalars(select(Owner)) if o.address]
    with platform.chain.lock:
        top_up_escrow(platform, platform.actors(("admin",)), dict.fromkeys(addresses, ESCROW_PER_OWNER), 0)
    credit = credit_gate(platform, policy.fee_bps)
    factor = 24 * 3600 / (minutes * 60)
    # the simulated day starts at the first arrival's hour, so that the run is not spent waiting
    first = min(s["session"].arrival for s in specs)
    clock = SimClock(max(start, first - timedelta(minutes=30)), factor)
    loop_box: dict[str, OperationsLoop] = {}
    csms = Csms(
        platform.sessions,
        clock,
        on_event=lambda kind, sid: loop_box["loop"].trigger(kind, sid) if "loop" in loop_box else None,
        credit=credit,
    )
    port = await csms.start()
    loop = OperationsLoop(
        csms,
        platform.sessions,
        clock,
        day_start=start,
        hourly_prices=hourly,
        import_limit_kw=3.0 * max(stations, 1) + 11.0,
        export_limit_kw=3.0 * max(stations, 1) + 11.0,
    )
    loop_box["loop"] = loop
    say(f"CSMS on ws://127.0.0.1:{port}; {stations} stations; a day in {minutes:g} min (×{factor:.0f})")
    sims = simulated_stations(specs, f"ws://127.0.0.1:{port}", clock, start, seed, trouble=trouble)
    loop_task = asyncio.create_task(loop.run())
    done = [0]

    def finished(_: SimStation) -> None:
        done[0] += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(5)
            say(
                f"{clock():%H:%M} UTC: {len(csms.stations)} online, {done[0]}/{len(sims)} done, "
                f"{loop.stats.replans} re-plans, {loop.stats.profiles_sent} profiles, "
                f"{csms.stats.messages} messages"
            )

    reporter = asyncio.create_task(report())
    try:
        await run_stations(sims, end, finished)
    finally:
        loop.stop()
        reporter.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
        await csms.stop()
    say("day over: metered settlement")
    period_id = int(day.replace("-", ""))
    metered, period, status = settle_metered(
        platform, period_id, policy, clock_tolerance_s=max(900.0, 5.0 * factor)
    )
    report_ = platform.reconcile()
    from backend.audit.energy import energy_balance

    with platform.sessions() as db:
        balance = energy_balance(db, period_id, ledger=metered.ledger)
    deviations = plan_vs_metered(loop.planned_wh, metered.intervals)
    with platform.sessions() as db:
        rejections = dict(
            db.execute(select(FieldRejection.kind, func.count()).group_by(FieldRejection.kind)).all()
        )
        transactions = db.scalar(select(func.count()).select_from(OcppTransaction)) or 0
        readings = db.scalar(select(func.count()).select_from(MeterReading)) or 0
    return OperateResult(
        period_id=period_id,
        status=str(PeriodStatus(status)),
        stations=stations,
        transactions=transactions,
        meter_readings=readings,
        rejections={str(k): int(v) for k, v in rejections.items()},
        replans=loop.stats.replans,
        profiles_sent=loop.stats.profiles_sent,
        profiles_rejected=loop.stats.profiles_rejected,
        metered_wh=sum(m.import_wh - m.export_wh for m in metered.intervals),
        planned_wh=sum(d.planned_wh for d in deviations),
        abs_deviation_wh=sum(abs(d.metered_wh - d.planned_wh) for d in deviations),
        unattributed_wh=metered.unattributed_wh,
        reconciliation_ok=report_.ok,
        mismatches=[f"{m.kind} {m.period_id}: {m.detail}" for m in report_.mismatches],
        entries=period.entry_count,
        energy_equation=balance.equation(),
        energy_balances=balance.ok,
        no_credit=csms.stats.rejected.get("NoCredit", 0),
    )


class NoPricesError(PlatformError):
    """No day-ahead prices stored for the day being operated (import them: POST /prices)."""


#: How often (seconds) a running platform without today's prices looks for them again.
PRICES_RETRY_S = 30.0


def stored_prices(sessions: sessionmaker[Session], start: datetime, now: datetime | None = None) -> Any:
    """The hourly prices stored from ``start`` (a UTC midnight) without a gap, up to the loop's 48 hours:
    a UTC day ends in the next market day (Europe/Amsterdam), public only at noon, so until then the
    last hour or two of the day are not known and the loop plans up to them. Raises
    :class:`NoPricesError` when they do not reach past ``now`` (default: ``start``)."""
    from backend.app.prices import hourly_prices

    with sessions() as db:
        series = hourly_prices(db, start, start + timedelta(hours=SPAN_HOURS))
    at = start if now is None else now
    try:
        span = span_of(start, series)
    except MisalignedIntervalError:
        span = None
    if span is None or span.end <= at:
        held = 0 if span is None else span.intervals * span.interval_minutes // 60
        raise NoPricesError(
            f"the stored prices from {start:%Y-%m-%d %H:%M} UTC run {held} hour(s), none for the hour "
            f"from {at:%Y-%m-%d %H}:00 UTC: import the day-ahead prices (POST /prices)"
        )
    return series


async def operate_live(
    platform: Platform,
    settings: Any,
    *,
    host: str,
    port: int,
    api_port: int,
    import_limit_kw: float,
    export_limit_kw: float,
    progress: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    ssl: SSLContext | None = None,
    csms_workers: int = 0,
    worker_args: list[str] | None = None,
) -> None:
    """Operate for real until stopped (SIGINT/SIGTERM or ``stop``): the CSMS on ``ws://host:port`` (with
    ``ssl``, a server context holding the certificate chain, ``wss://``: OCPP security profile 2), the
    loop re-planning today's day (UTC, prices from the database; a new loop at each midnight), and the
    API on ``http://host:api_port`` over the same platform. Settle a past day's metered energy with
    ``v2g settle --metered --date D`` (the metering service signs it). ``csms_workers``: that many CSMS
    processes on the port, sharing the PostgreSQL database (:mod:`backend.operations.pool`; ``worker_args``
    their chain, fee and TLS options), and this process plans for all of them."""
    import signal

    import uvicorn

    from backend.api.app import create_app
    from backend.metrics import Live

    say = progress or (lambda _: None)
    stop = stop or asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            running.add_signal_handler(sig, stop.set)

    clock = platform_clock()  # the wall clock, or a drill's (V2G_DRILL_CLOCK)

    box: dict[str, OperationsLoop] = {}
    platform.ensure_deployment()
    if settings.service_jobs is None:  # the service settles, finalises and imports prices on its own
        settings = settings.model_copy(update={"service_jobs": True})

    def on_event(kind: str, station_id: str) -> None:
        if "loop" in box:
            box["loop"].trigger(kind, station_id)

    csms: Csms | CsmsPool
    if csms_workers:
        csms = CsmsPool(platform.sessions, settings.database_url, csms_workers, on_event=on_event,
                        worker_args=worker_args)  # fmt: skip
        await csms.start(host, port)
    else:
        csms = Csms(
            platform.sessions, clock, on_event=on_event, credit=credit_gate(platform, settings.fee_bps)
        )
        await csms.start(host, port, ssl=ssl)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, chain=platform.chain, live=lambda: Live(csms, lambda: box.get("loop"))),
            host=host,
            port=api_port,
            log_level="warning",
        )
    )
    api = asyncio.create_task(server.serve())
    scheme = "ws" if ssl is None else "wss"
    processes = f", {csms_workers} processes" if csms_workers else ""
    say(
        f"CSMS on {scheme}://{host}:{csms.port}/<station id> (OCPP 2.1 and 2.0.1, HTTP Basic{processes}); "
        f"API on http://{host}:{api_port}"
    )
    ven = None
    if settings.openadr_vtn_url:
        from backend.operations.openadr import Ven, VenConfig

        ven = Ven(
            VenConfig(
                vtn_url=settings.openadr_vtn_url,
                ven_name=settings.openadr_ven_name,
                ven_id=settings.openadr_ven_id,
                node=settings.openadr_node,
                simple_levels=settings.openadr_simple_levels,
                cert=settings.openadr_cert,
                key=settings.openadr_key,
                passphrase=os.environ.get("V2G_OPENADR_KEY_PASSPHRASE"),
                vtn_fingerprint=settings.openadr_vtn_fingerprint,
                ca_file=settings.openadr_ca_file,
            ),
            platform.sessions,
            clock,
            site_limit_kw=import_limit_kw,
            planner=lambda: box.get("loop"),
        )
        await ven.start()
        say(
            f"OpenADR VEN {settings.openadr_ven_name} for node {settings.openadr_node}: "
            f"{settings.openadr_vtn_url}"
        )
    try:
        missing_for = None
        while not stop.is_set():
            today = clock().replace(hour=0, minute=0, second=0, microsecond=0)
            try:
                prices = stored_prices(platform.sessions, today, clock())
            except NoPricesError as exc:
                # the service stays up: stations are served (a session nothing bounds is NoCredit), the API
                # takes prices, the market clock imports them; the day is planned once they are in
                if missing_for != today:
                    say(
                        f"{type(exc).__name__}: {exc}; until they are stored no session can be bounded "
                        "(NoCredit) and nothing is planned"
                    )
                    logger.info(
                        "no prices for %s: not planning yet",
                        f"{today:%Y-%m-%d}",
                        extra={"refusal": "NoPricesError"},
                    )
                    missing_for = today
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=PRICES_RETRY_S / max(clock.factor, 1.0))
                continue
            if missing_for == today:
                say(f"prices for {today:%Y-%m-%d} stored: planning")
            loop = OperationsLoop(
                csms,
                platform.sessions,
                clock,
                day_start=today,
                hourly_prices=prices,
                import_limit_kw=import_limit_kw,
                export_limit_kw=export_limit_kw,
            )
            box["loop"] = loop
            task = asyncio.create_task(loop.run())
            midnight = today + timedelta(days=1)
            # until midnight; meanwhile the next market day's prices (public at noon, imported by the
            # market clock or the API) extend the plan past midnight for the cars staying overnight
            while not stop.is_set() and clock() < midnight:
                left = (midnight - clock()).total_seconds() / clock.factor
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), timeout=max(min(left, PRICES_RETRY_S / max(clock.factor, 1.0)), 0.01)
                    )
                if loop.day.end < today + timedelta(hours=SPAN_HOURS):
                    with contextlib.suppress(NoPricesError):
                        loop.extend(stored_prices(platform.sessions, today, clock()))
            loop.stop()
            await asyncio.gather(task, return_exceptions=True)
            say(
                f"{clock():%H:%M} UTC: {len(csms.stations)} stations online, {loop.stats.replans} re-plans, "
                f"{loop.stats.profiles_sent} profiles today"
            )
    finally:
        if ven is not None:
            await ven.stop()
        server.should_exit = True
        await asyncio.gather(api, return_exceptions=True)
        await csms.stop()
