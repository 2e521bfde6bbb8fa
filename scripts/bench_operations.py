"""Live operations at scale: N stations on real websockets, re-plans dispatched to all, meter ingestion.

    python scripts/bench_operations.py [--stations 1000] [--processes 2] [--replans 8] [--ingest-s 10]
    python scripts/bench_operations.py --stations 10000 --csms-workers 2 --db postgresql+psycopg://...
    python scripts/bench_operations.py --stations 10000 --site-stations 100 ...  (100 sites of 100)

The CSMS and the operations loop run in this process on a SQLite database (with ``--csms-workers N``:
N CSMS processes on an empty PostgreSQL database, ``v2g operate --csms-workers``'s pool, and the loop
here); the stations are OCPP 2.1
clients (the same ``ocpp`` package) in ``--processes`` other processes, each with one vehicle plugged
in and its own password (HTTP Basic, security profile 1: an scrypt verification of about 40 ms of CPU
per connection, which the connection time includes). Measured:

- ``replan_dispatch_p95_s``: a re-plan of the whole fleet (state from the database, the MILP over the
  rest of the day, profiles built) until every changed profile is delivered and acknowledged, 95th
  percentile over ``--replans`` re-plans (each re-plan's profiles all count as changed; each one an
  interval after the last, as at the boundaries in service: every station first reports its meter there
  as its profile had it charge, untimed, so each site's plan starts from its last plan's basis carried
  over; ``--same-interval``: all at the same time, each from its last basis);
- ``first_replan_dispatch_s``: the same for the re-plan before them, the start-up's, where no site has a
  plan to start from (in service the only such fleet re-plan: the later ones start from each site's
  plan of the boundary before, or of when a car arrived and its site was re-planned); so ``--replans N``
  makes N + 1 fleet re-plans (until session 18 the start-up's was one of the N, and in the p95);
- ``site_replan_dispatch_p95_s`` (with ``--site-stations``): the same for one site's re-plan, as a
  station's arrival or departure triggers it (the other sites keep their plans);
- ``meter_msgs_per_s``: TransactionEvent messages with meter values stored (group commit) and answered
  per second, every station sending as fast as its answers come back;
- ``heartbeat_p99_ms_under_flood``: a station's Heartbeat round trips while another floods MeterValues
  of 2,500 samples;
- ``silent_station_delay_s``: how much later the other stations' profiles are acknowledged when a
  station that never answers SetChargingProfile is among them;
- ``rss_mb``: resident memory with every station connected (this process, plus the CSMS processes),
  and ``rss_per_station_kb``.

The last line is one JSON object with these keys and ``stations``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

DAY = datetime(2023, 9, 12, tzinfo=UTC)  # an ordinary day (see --help for the negative-price one)
#: A station that floods (MeterValues of 2,500 samples back to back) and one that never answers.
EXTRA = ("BFLOOD", "BSILENT")
EXTRA_PASSWORD = "bench-password-0123456789abcdef"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def p95_of(times: list[float]) -> float:
    """The 95th percentile, within the values measured (a few re-plans: no extrapolation past the worst)."""
    return statistics.quantiles(times, n=20, method="inclusive")[18] if len(times) >= 2 else times[0]


def rss_mb(pid: int | str = "self") -> float:
    with Path(f"/proc/{pid}/status").open() as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s(pids: list[int]) -> dict[int, float]:
    """The CPU seconds (user and system, every thread) each of the processes ``pids`` has used so far."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone (a database backend that ended)
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return used


def postgres_pids() -> list[int]:
    """This machine's PostgreSQL processes (a local server: its share of the CPU a re-plan costs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"postgres"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def csms_rss_mb(csms: Any) -> float:
    """This process's resident memory, and the CSMS processes' of a pool."""
    return rss_mb() + sum(rss_mb(pid) for pid in getattr(csms, "pids", list)())


# --- the station processes -----------------------------------------------------------------------------


def station_worker(
    url: str,
    ids: list[str],
    passwords: list[str],
    ready: Any,
    go: Any,
    ingest_s: float,
    counts: Any,
    index: int,
    day: str,
    tick: Any,
    ticked: Any,
) -> None:
    global DAY
    DAY = datetime.fromisoformat(day)
    # the load generator keeps CPython's own garbage collector thresholds: the platform's (tune_gc) are for
    # the platform's processes, and the figures should not gain from a faster load generator
    asyncio.run(_stations(url, ids, passwords, ready, go, ingest_s, counts, index, tick, ticked))


async def _stations(
    url: str,
    ids: list[str],
    passwords: list[str],
    ready: Any,
    go: Any,
    ingest_s: float,
    counts: Any,
    index: int,
    tick: Any,
    ticked: Any,
) -> None:
    from ocpp.routing import on
    from ocpp.v21 import ChargePoint, call, call_result
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    from backend.operations import ocpp_keys
    from backend.operations.auth import basic_header
    from backend.operations.profiles import power_at

    # the stations' own key conversion memoised as the CSMS's is: their CPU shares this machine with the
    # CSMS, and a station's firmware is not what is measured
    ocpp_keys.install()

    class Client(ChargePoint):  # type: ignore[misc]
        #: the profile in force, the meter's registers (Wh), when it last sent them, its last seqNo
        profile: dict[str, Any] | None = None
        imported, exported, at, seq = 0.0, 0.0, DAY, 0

        @on("SetChargingProfile", skip_schema_validation=True)  # type: ignore[untyped-decorator]
        async def on_profile(self, charging_profile: dict[str, Any], **_: Any) -> Any:
            self.profile = charging_profile
            return call_result.SetChargingProfile(status="Accepted")

        async def send_meter(self, at: datetime) -> None:
            self.seq += 1
            self.at = at
            await self.call(
                call.TransactionEvent(
                    event_type="Updated",
                    timestamp=at.isoformat().replace("+00:00", "Z"),
                    trigger_reason="MeterValuePeriodic",
                    seq_no=self.seq,
                    transaction_info={"transaction_id": f"{self.id}-tx"},
                    meter_value=meter(at, self.imported, self.exported),
                ),
                skip_schema_validation=True,
            )

        async def follow(self, until: datetime) -> None:
            """The car drew (gave) what its profile asked from its last reading until ``until``."""
            if self.profile is not None:
                schedule = self.profile["charging_schedule"][0]
                begins = datetime.fromisoformat(str(schedule["start_schedule"]).replace("Z", "+00:00"))
                periods = schedule["charging_schedule_period"]
                changes = sorted({begins + timedelta(seconds=p["start_period"]) for p in periods})
                at = max(self.at, begins)  # nothing asked before the profile begins
                while at < until:
                    step = min([c for c in changes if c > at] + [until])
                    w = power_at(self.profile, at)[0] or 0.0
                    hours = (step - at).total_seconds() / 3600
                    self.imported += max(w, 0.0) * hours
                    self.exported += max(-w, 0.0) * hours
                    at = step
            await self.send_meter(until)

    def meter(at: datetime, wh: float, exported: float = 0.0) -> list[dict[str, Any]]:
        return [
            {
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "sampled_value": [
                    {"value": round(wh, 1), "measurand": "Energy.Active.Import.Register"},
                    {"value": round(exported, 1), "measurand": "Energy.Active.Export.Register"},
                ],
            }
        ]

    clients: list[Any] = []
    readers: list[asyncio.Task[Any]] = []
    for sid, password in zip(ids, passwords, strict=True):
        ws = await connect(
            f"{url}/{sid}",
            subprotocols=[Subprotocol("ocpp2.1")],
            additional_headers={"Authorization": basic_header(sid, password)},
            ping_interval=None,
            open_timeout=60,
            compression=None,
        )
        client = Client(sid, ws, response_timeout=120)
        readers.append(asyncio.create_task(client.start()))
        clients.append(client)
        await client.call(
            call.BootNotification(charging_station={"model": "Bench", "vendor_name": "v2g"}, reason="PowerUp")
        )
        at = DAY + timedelta(hours=8)
        await client.call(
            call.TransactionEvent(
                event_type="Started",
                timestamp=at.isoformat().replace("+00:00", "Z"),
                trigger_reason="Authorized",
                seq_no=0,
                transaction_info={"transaction_id": f"{sid}-tx"},
                evse={"id": 1, "connector_id": 1},
                id_token={"id_token": f"tok-{sid}", "type": "ISO14443"},
                meter_value=meter(at, 0),
            ),
            skip_schema_validation=True,
        )
        client.at = at
    ready.release()
    # each time the parent moves its clock to the next interval boundary: every car's meter as its
    # profile had it charge until then (what a fleet re-plan at a boundary in service starts from)
    done = 0
    while not go.is_set():
        if tick.value > done:  # the boundary, in seconds from DAY
            done = tick.value
            await asyncio.gather(*(c.follow(DAY + timedelta(seconds=done)) for c in clients))
            ticked[index] = done
        await asyncio.sleep(0.02)

    async def chatter(client: Any) -> int:
        sent = 0
        end = time.monotonic() + ingest_s
        while time.monotonic() < end:
            client.imported += 30
            await client.send_meter(client.at + timedelta(seconds=10))
            sent += 1
        return sent

    totals = await asyncio.gather(*(chatter(c) for c in clients))
    counts[index] = sum(totals)
    await asyncio.sleep(3600)  # stay connected until the parent ends this process


# --- the flooding, the probing and the silent station -----------------------------------------------------


def _frame(unique: str, action: str, payload: dict[str, Any]) -> str:
    return json.dumps([2, unique, action, payload])


def _started(sid: str, at: datetime) -> str:
    return _frame(
        "s1",
        "TransactionEvent",
        {
            "eventType": "Started",
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "triggerReason": "Authorized",
            "seqNo": 0,
            "transactionInfo": {"transactionId": f"{sid}-tx"},
            "evse": {"id": 1, "connectorId": 1},
            "idToken": {"idToken": f"tok-{sid}", "type": "ISO14443"},
            "meterValue": [_sample(at, 0)],
        },
    )


def _sample(at: datetime, wh: int) -> dict[str, Any]:
    return {
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "sampledValue": [
            {"value": float(wh), "measurand": "Energy.Active.Import.Register"},
            {"value": 0.0, "measurand": "Energy.Active.Export.Register"},
        ],
    }


async def _connect(url: str, sid: str) -> Any:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    from backend.operations.auth import basic_header

    return await connect(
        f"{url}/{sid}",
        subprotocols=[Subprotocol("ocpp2.1")],
        additional_headers={"Authorization": basic_header(sid, EXTRA_PASSWORD)},
        ping_interval=None,
        max_size=2**22,
        open_timeout=60,
    )


def flood(url: str, frames: int, samples: int, done: list[float]) -> None:
    """BFLOOD, in its own thread and event loop: its transaction, then MeterValues of ``samples`` samples
    back to back."""

    async def go() -> None:
        at = DAY + timedelta(hours=8)
        async with await _connect(url, "BFLOOD") as ws:
            await ws.send(_started("BFLOOD", at))
            await ws.recv()
            for n in range(frames):
                values = [
                    _sample(at + timedelta(seconds=n * samples + i + 1), n * samples + i + 1)
                    for i in range(samples)
                ]
                begun = time.monotonic()
                await ws.send(_frame(f"f{n}", "MeterValues", {"evseId": 1, "meterValue": values}))
                await ws.recv()
                done.append(time.monotonic() - begun)

    asyncio.run(go())


async def heartbeats_under_flood(url: str, probe: str, frames: int) -> tuple[float, int]:
    """Heartbeat round trips of one station (every 20 ms) while BFLOOD floods: (p99 ms, heartbeats)."""
    import threading

    answered: list[float] = []
    thread = threading.Thread(target=flood, args=(url, frames, 2_500, answered))
    latencies = []
    async with await _connect(url, probe) as ws:
        thread.start()
        k = 0
        while thread.is_alive():
            k += 1
            begun = time.monotonic()
            await ws.send(_frame(f"h{k}", "Heartbeat", {}))
            await ws.recv()
            latencies.append(time.monotonic() - begun)
            await asyncio.sleep(0.02)
    thread.join()
    latencies.sort()
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] if latencies else float("nan")
    print(
        f"flood: {len(answered)} frames of 2,500 samples; {len(latencies)} heartbeats meanwhile, "
        f"p99 {p99 * 1000:.0f} ms"
    )
    return p99 * 1000, len(latencies)


async def silent_station(url: str) -> tuple[Any, asyncio.Task[None]]:
    """BSILENT: its transaction, then it reads the CSMS's calls and never answers them."""
    ws = await _connect(url, "BSILENT")
    await ws.send(_started("BSILENT", DAY + timedelta(hours=8)))
    await ws.recv()

    async def swallow() -> None:
        async for _ in ws:
            pass

    return ws, asyncio.create_task(swallow())


# --- the CSMS side -------------------------------------------------------------------------------------


def register(sessions: Any, n: int, site_stations: int = 0) -> list[str]:
    """The fleet in the database; returns the stations' passwords (HTTP Basic; stored hashed). With
    ``site_stations``, the stations are behind sites of that many (``S00000``, ...), 3 kW a station each."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from backend.db.models import IdTokenRow, Owner, PlugSession, PricePoint, SiteRow, Station, Vehicle
    from backend.operations.auth import hash_password, new_password
    from scheduler.datasets import load_prices

    passwords = [new_password() for _ in range(n)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # scrypt releases the GIL
        hashes = list(pool.map(hash_password, passwords))
    with sessions.begin() as db:
        if site_stations:
            for j in range(0, n, site_stations):
                kw = 3.0 * min(site_stations, n - j)
                db.add(SiteRow(id=f"S{j // site_stations:05d}", import_limit_kw=kw, export_limit_kw=kw))
            db.flush()
        for k in range(n):
            sid = f"B{k:05d}"
            db.add(Owner(id=f"owner-{k:05d}", address="0x" + f"{k + 1:040x}"))
            db.add(
                Vehicle(
                    id=f"ev-{k:05d}",
                    owner_id=f"owner-{k:05d}",
                    battery_kwh=60,
                    charge_kw=11,
                    discharge_kw=11 if k % 3 == 0 else 0,
                    soc_min=0.1,
                )
            )
            db.flush()
            db.add(IdTokenRow(token=f"tok-{sid}", vehicle_id=f"ev-{k:05d}"))
            db.add(
                Station(
                    id=sid,
                    ocpp_version="2.1",
                    can_discharge=k % 3 == 0,
                    evses=1,
                    periods_per_schedule=24,
                    password_hash=hashes[k],
                    site_id=f"S{k // site_stations:05d}" if site_stations else None,
                )
            )
            db.add(
                PlugSession(
                    id=f"s-{k:05d}",
                    vehicle_id=f"ev-{k:05d}",
                    arrival=DAY + timedelta(hours=8),
                    departure=DAY + timedelta(hours=17 + (k % 6)),
                    arrival_kwh=15.0 + k % 20,
                    target_kwh=45.0,
                )
            )
        for j, sid in enumerate(EXTRA):  # the flooding and the silent station, each with a car of its own
            db.add(Owner(id=f"owner-{sid}", address="0x" + f"{n + 1 + j:040x}"))
            db.add(
                Vehicle(id=f"ev-{sid}", owner_id=f"owner-{sid}", battery_kwh=60, charge_kw=11, soc_min=0.1)
            )
            db.flush()
            db.add(IdTokenRow(token=f"tok-{sid}", vehicle_id=f"ev-{sid}"))
            db.add(
                Station(
                    id=sid,
                    ocpp_version="2.1",
                    can_discharge=False,
                    evses=1,
                    periods_per_schedule=24,
                    password_hash=hash_password(EXTRA_PASSWORD),
                )
            )
        for utc, eur in load_prices().window(DAY, DAY + timedelta(days=1)).items():
            db.add(PricePoint(utc=pd.Timestamp(str(utc)).to_pydatetime(), eur_mwh=float(eur)))
    return passwords


async def bench(args: argparse.Namespace, database: str) -> dict[str, Any]:
    from sqlalchemy import func, select

    from backend.db.models import MeterReading
    from backend.db.session import session_factory
    from backend.operations.csms import Csms
    from backend.operations.loop import OperationsLoop
    from scheduler.datasets import load_prices
    from scheduler.errors import SchedulerError

    sessions = session_factory(database)
    passwords = register(sessions, args.stations, args.site_stations)
    now = DAY + timedelta(hours=9)
    csms: Any
    if args.csms_workers > 1:
        from backend.operations.pool import CsmsPool

        csms = CsmsPool(sessions, database, args.csms_workers, worker_args=["--no-credit-gate"])
    else:
        csms = Csms(sessions, lambda: now)
    port = await csms.start()
    base_rss = csms_rss_mb(csms)
    ctx = mp.get_context("spawn")
    ready, go = ctx.Semaphore(0), ctx.Event()
    counts = ctx.Array("l", args.processes)
    tick, ticked = ctx.Value("l", 0), ctx.Array("l", args.processes)
    ids = [f"B{k:05d}" for k in range(args.stations)]
    procs = [
        ctx.Process(
            target=station_worker,
            args=(
                f"ws://127.0.0.1:{port}",
                ids[i :: args.processes],
                passwords[i :: args.processes],
                ready,
                go,
                args.ingest_s,
                counts,
                i,
                DAY.isoformat(),
                tick,
                ticked,
            ),
            daemon=True,
        )
        for i in range(args.processes)
    ]
    for p in procs:
        p.start()
    started = time.perf_counter()
    for _ in procs:
        while not ready.acquire(block=False):
            await asyncio.sleep(0.1)
    print(
        f"{len(csms.stations)} stations connected with a transaction each "
        f"in {time.perf_counter() - started:.1f} s"
    )
    connected_rss = csms_rss_mb(csms)

    loop = OperationsLoop(
        csms,
        sessions,
        lambda: now,
        day_start=DAY,
        hourly_prices=load_prices().window(DAY, DAY + timedelta(days=1)),
        import_limit_kw=3.0 * args.stations,
        export_limit_kw=3.0 * args.stations,
    )
    acked: dict[str, float] = {}
    deliver = csms.set_profile

    async def timed(station_id: str, evse_id: int, profile: dict[str, Any]) -> str:
        status = str(await deliver(station_id, evse_id, profile))
        acked[station_id] = time.perf_counter()
        return status

    csms.set_profile = timed

    async def boundary() -> None:
        """The clock to the next interval boundary, and every car's meter there as its profile had it charge
        (each station sends a TransactionEvent; not timed): the state a re-plan at a boundary starts from."""
        nonlocal now
        now += width
        tick.value = int((now - DAY).total_seconds())
        deadline = time.monotonic() + 300
        while any(ticked[i] != tick.value for i in range(args.processes)):
            if time.monotonic() > deadline:
                raise RuntimeError("the stations did not report their meters at the boundary in 300 s")
            await asyncio.sleep(0.02)

    gc_s = [0.0, 0.0, 0.0]  # this process's time in each generation's garbage collection
    gc_began = [0.0]

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
        else:
            gc_s[info["generation"]] += time.perf_counter() - gc_began[0]

    gc.callbacks.append(gc_timer)

    def cpu() -> dict[str, dict[int, float]]:
        """CPU seconds so far of each process: the planner (this process; with one CSMS process, the CSMS
        too), the CSMS processes, the stations, this machine's PostgreSQL."""
        return {
            "planner" if args.csms_workers > 1 else "planner+csms": cpu_s([os.getpid()]),
            "csms": cpu_s(list(getattr(csms, "pids", list)())),
            "stations": cpu_s([p.pid for p in procs if p.pid is not None]),
            "postgres": cpu_s(postgres_pids()) if database.startswith("postgresql") else {},
        }

    def cpu_since(before: dict[str, dict[int, float]]) -> dict[str, float]:
        """Each group's CPU seconds since ``before``, of the processes alive at both ends (a database
        backend that ended meanwhile is left out, not counted negative)."""
        return {
            name: sum(seconds - before[name][pid] for pid, seconds in now_used.items() if pid in before[name])
            for name, now_used in cpu().items()
        }

    times: list[float] = []
    first_s: float | None = None
    failed: str | None = None  # the planner's error, when it has no plan for the fleet in its time limit
    width = timedelta(minutes=15)
    # re-plan 0 is the start-up's: no site has a plan yet. In service it is the only fleet re-plan made from
    # nothing: every later one starts from each site's last plan, made at the boundary before or when a car
    # arrived (the loop re-plans a car's site when its transaction starts)
    for k in range(args.replans + 1):
        loop.sent.clear()  # every profile counts as changed
        if k and not args.same_interval:  # each fleet re-plan at the next interval boundary, as in service
            await boundary()
        cpu_before, gc_before = cpu(), list(gc_s)
        t = time.perf_counter()
        try:
            sent = await loop.replan()
        except SchedulerError as exc:
            failed = f"{type(exc).__name__}: {exc}"
            print(f"re-plan {k} failed after {time.perf_counter() - t:.1f} s: {failed}")
            break
        await loop.delivered()
        took = time.perf_counter() - t
        if k:
            times.append(took)
        else:
            first_s = took
        used = cpu_since(cpu_before)
        print(
            f"re-plan {k}{' (start-up, every site from nothing)' if k == 0 else ''}: {sent} profiles "
            f"delivered and acknowledged in {took:.2f} s (CPU s: "
            + ", ".join(f"{name} {seconds:.2f}" for name, seconds in used.items())
            + "; the planner's garbage collection by generation "
            + "/".join(f"{now_s - then_s:.2f}" for now_s, then_s in zip(gc_s, gc_before, strict=True))
            + ")"
        )
    p95 = None
    if times:
        p95 = p95_of(times)
    # a station's event (an arrival, a departure) re-plans its site alone: what a car waits for
    site_times: list[float] = []
    if args.site_stations and failed is None:
        sites = (args.stations + args.site_stations - 1) // args.site_stations
        for k in range(args.replans):
            loop.sent.clear()
            t = time.perf_counter()
            sent = await loop.replan({f"S{k % sites:05d}"})
            await loop.delivered()
            site_times.append(time.perf_counter() - t)
            print(
                f"site re-plan {k + 1}: {sent} profiles delivered and acknowledged in {site_times[-1]:.3f} s"
            )
    site_p95 = None
    if site_times:
        site_p95 = p95_of(site_times)

    # a station that never answers joins: how much later do the others' profiles arrive?
    url = f"ws://127.0.0.1:{port}"
    silent_delay = None
    if failed is None:
        silent, swallowing = await silent_station(url)
        await asyncio.sleep(0.5)
        others = [f"B{k:05d}" for k in range(args.stations)]
        with_silent = []
        for k in range(2):
            loop.sent.clear()
            acked.clear()
            if not args.same_interval:
                await boundary()
            t = time.perf_counter()
            await loop.replan()
            deadline = time.monotonic() + 120
            while any(sid not in acked for sid in others) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            with_silent.append(max(acked.get(sid, time.perf_counter()) for sid in others) - t)
            print(
                f"re-plan with a silent station {k + 1}: the other {len(others)} acknowledged in "
                f"{with_silent[-1]:.2f} s"
            )
        silent_delay = max(statistics.median(with_silent) - statistics.median(times), 0.0)
        await loop.cancel_deliveries()
        swallowing.cancel()
        await silent.close()

    with sessions() as db:
        before = db.scalar(select(func.count()).select_from(MeterReading)) or 0
    t = time.perf_counter()
    go.set()
    while (
        any(counts[i] == 0 for i in range(args.processes)) and time.perf_counter() - t < args.ingest_s + 120
    ):
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - t
    with sessions() as db:
        stored = (db.scalar(select(func.count()).select_from(MeterReading)) or 0) - before
    sent = sum(counts[i] for i in range(args.processes))
    heartbeat_p99_ms, heartbeats = await heartbeats_under_flood(url, "BSILENT", args.flood_frames)
    for p in procs:
        p.terminate()
        p.join(timeout=10)
    await csms.stop()
    print(f"{sent} meter messages answered, {stored} samples stored in {elapsed:.1f} s")
    return {
        "stations": args.stations,
        "csms_workers": args.csms_workers,
        "site_stations": args.site_stations or args.stations,
        "replan_dispatch_p95_s": None if p95 is None else round(p95, 2),
        "replan_dispatch_median_s": round(statistics.median(times), 2) if times else None,
        "first_replan_dispatch_s": None if first_s is None else round(first_s, 2),
        "replan_failed": failed,
        "replan_failed_sites": loop.stats.failed_sites,
        "site_replan_dispatch_p95_s": None if site_p95 is None else round(site_p95, 3),
        "meter_msgs_per_s": round(stored / elapsed, 0),
        "heartbeat_p99_ms_under_flood": round(heartbeat_p99_ms, 1),
        "heartbeats_under_flood": heartbeats,
        "silent_station_delay_s": None if silent_delay is None else round(silent_delay, 3),
        "rss_mb": round(connected_rss, 1),
        "rss_per_station_kb": round((connected_rss - base_rss) * 1024 / args.stations, 1),
        "processes": args.processes,
        "replans_at_boundaries": not args.same_interval,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--replans", type=int, default=8)
    parser.add_argument("--ingest-s", type=float, default=10.0)
    parser.add_argument("--flood-frames", type=int, default=8, help="MeterValues frames of 2,500 samples")
    parser.add_argument(
        "--csms-workers", type=int, default=1, help="CSMS processes (more than one: on PostgreSQL, --db)"
    )
    parser.add_argument(
        "--site-stations",
        type=int,
        default=0,
        help="stations per site (each its own grid connection of 3 kW a station, planned apart); "
        "default: all behind one connection",
    )
    parser.add_argument("--db", default=None, help="an empty PostgreSQL database (postgresql+psycopg://...)")
    parser.add_argument(
        "--same-interval",
        action="store_true",
        help="every fleet re-plan at the same time (each site's plan then starts from its last basis); "
        "default: each one an interval later, as at the boundaries in service (from the shifted plan)",
    )
    parser.add_argument(
        "--date", default=None, help="the day (default 2023-09-12; 2023-07-02 fell to -500 EUR/MWh)"
    )
    args = parser.parse_args()
    import logging

    # each re-plan's own account: state, solve, profiles, hand-over (the loop's INFO line)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("backend.operations.loop").setLevel(logging.INFO)
    from backend.runtime import tune_gc

    tune_gc()  # as every process of `v2g operate`
    if args.date:
        global DAY
        DAY = datetime.fromisoformat(args.date).replace(tzinfo=UTC)
    if args.csms_workers > 1 and not (args.db or "").startswith("postgresql"):
        parser.error("--csms-workers above 1 needs --db postgresql+psycopg://... (an empty database)")
    if args.db:
        figures = asyncio.run(bench(args, args.db))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(bench(args, f"sqlite:///{Path(tmp) / 'ops.sqlite'}"))
    print(json.dumps(figures))
    sys.exit(0)


if __name__ == "__main__":
    main()
