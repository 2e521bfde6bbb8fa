"""Soak the money path: N simulated stations over D accelerated days, with faults injected at random, each
day settled metered; then every Wh accounted for.

    .venv/bin/python scripts/soak_operations.py --days 7 --stations 200 [--minutes-per-day 1.5] [--seed 0]

What runs, each its own process where a kill -9 can hit it:
- the CSMS (this script again, ``--csms-child``), on one port, on a simulated clock every process computes
  from the wall clock (so a restarted CSMS carries on at the right time);
- the metering service (``python -m backend.metering.service``), reached at ``V2G_METER_URL``;
- the API server (``v2g serve``), which holds the chain and settles each day once it has ended
  (``POST /metered-periods``, a background job that a restarted server resumes), while the next day runs;
  the day is asked for again until its job succeeds;
- the stations, in this process: the simulated fleet (signing meters, seeded drops with queued
  ``offline`` messages, clocks off by seconds, answers "lost" and messages resent), and a few hostile
  stations (meters that do not sign) that send, besides their real energy, a forged register jump, a
  message from a clock 26 h behind and a duplicate.

- the chain: a managed anvil (``--chain anvil``, the default: ``AnvilNode``, its own process, restarted
  on the same port after a kill) or the embedded chain (``--chain eth-tester``, inside the API server).

Faults: kill -9 of the CSMS, of the metering service, of the API server (whether or not it is settling)
and of the managed anvil, at random, each restarted a moment later; a row of the derived
``meter_readings`` table edited each day (nothing may change); a raw frame edited before a day's
settlement (the settlement must be refused, ``FrameChainError``) and restored.

The figures: ``wh_metered`` (what the raw frames say, all days), ``wh_settled`` / ``wh_adjusted`` /
``wh_refused`` / ``wh_pending`` (its four places), ``wh_lost`` (what the stations' own registers advanced
minus what reached the raw frames: acknowledged energy that disappeared), ``paid_twice`` (Wh paid beyond
what was metered, any session and interval), ``forged_wh_settled`` (of the hostile stations' forged Wh,
what was paid). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.chain.client import _die_with_parent  # noqa: E402
from backend.operations.simulator import SimClock  # noqa: E402

FIRST_DAY = datetime(2023, 7, 3, tzinfo=UTC)
HOSTILE = 4  # hostile stations (meters that do not sign)


class WallClock(SimClock):
    """Simulated time from the wall clock, the same in every process: ``sim0 + (now − wall0) · factor``."""

    def __init__(self, sim0: datetime, wall0: float, factor: float) -> None:
        super().__init__(sim0, factor)
        self.wall0 = wall0

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.wall0) * self.factor)


# --- the CSMS child ------------------------------------------------------------------------------------


async def csms_child(database: str, port: int, sim0: str, wall0: float, factor: float) -> None:
    from backend.db.session import session_factory
    from backend.operations.csms import Csms

    csms = Csms(session_factory(database), WallClock(datetime.fromisoformat(sim0), wall0, factor))
    await csms.start(port=port)
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- the parent ----------------------------------------------------------------------------------------


@dataclass
class Children:
    """The processes a kill can hit, and how to start each again."""

    env: dict[str, str]
    database: str
    csms_port: int
    meter_port: int
    clock: WallClock
    tolerance_s: float
    api_port: int = 0
    api_key: str = ""
    #: the managed anvil's data directory and port (``None``: the embedded chain)
    anvil_dir: Path | None = None
    anvil_port: int = 0
    anvil: Any = None  # the node's Chain (its process is this one's child)
    csms: subprocess.Popen[str] | None = None
    meter: subprocess.Popen[str] | None = None
    api: subprocess.Popen[str] | None = None
    kills: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def _start(self, command: list[str], ready: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
            preexec_fn=_die_with_parent,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(ready):
            raise RuntimeError(f"{command[2:4]} did not start: {line!r}")
        return process

    def start_csms(self) -> None:
        self.csms = self._start(
            [
                sys.executable,
                __file__,
                "--csms-child",
                "--db",
                self.database,
                "--port",
                str(self.csms_port),
                "--sim0",
                self.clock.start.isoformat(),
                "--wall0",
                repr(self.clock.wall0),
                "--factor",
                repr(self.clock.factor),
            ],
            "ready",
        )

    def start_meter(self) -> None:
        self.meter = self._start(
            [
                sys.executable,
                "-m",
                "backend.metering.service",
                "--db",
                self.database,
                "--port",
                str(self.meter_port),
                "--clock-tolerance-s",
                str(self.tolerance_s),
            ],
            "metering service on",
        )

    def start_api(self) -> None:
        """``v2g serve`` on its port (it holds the chain; its jobs resume when it restarts)."""
        import httpx

        self.api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backend.cli",
                "serve",
                "--db",
                self.database,
                "--port",
                str(self.api_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.api.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("the API server did not answer /health within 120 s")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_anvil(self) -> None:
        """The managed anvil on its port, bound to this process, from the newest state it saved."""
        from backend.chain.node import AnvilNode

        assert self.anvil_dir is not None
        self.anvil = AnvilNode(self.anvil_dir).start_bound(port=self.anvil_port)

    def kill_anvil(self) -> bool:
        process = self.anvil._process if self.anvil is not None else None
        if process is None or process.poll() is not None:
            return False
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills["anvil"] += 1
        return True

    def kill(self, name: str) -> bool:
        if name == "anvil":
            return self.kill_anvil()
        process = getattr(self, name)
        if process is None or process.poll() is not None:
            return False
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills[name] += 1
        return True

    def stop(self) -> None:
        for process in (self.csms, self.meter, self.api):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        if self.anvil is not None:
            self.anvil.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def killer(children: Children, rng: random.Random, every_s: float, stop: asyncio.Event) -> None:
    """kill -9 at random: the CSMS, the metering service or the API server (settling or not), each started
    again a moment later."""
    starts = {
        "csms": children.start_csms,
        "meter": children.start_meter,
        "api": children.start_api,
        "anvil": children.start_anvil,
    }
    targets, weights = ["csms", "meter", "api"], [5, 2, 3]
    if children.anvil_dir is not None:
        targets, weights = [*targets, "anvil"], [*weights, 2]
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.5, 1.5) * every_s)
        if stop.is_set():
            return
        target = rng.choices(targets, weights=weights)[0]
        if children.kill(target):
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await asyncio.to_thread(starts[target])


def settle_day(children: Children, day: datetime, tamper: bool) -> dict[str, Any]:
    """The day settled through the API (``POST /metered-periods``) until its job succeeds (a kill -9 or an
    unreachable meter: again); with ``tamper``, first a raw frame edited: the settlement must be refused,
    then the frame restored."""
    import httpx
    from sqlalchemy import select, update

    from backend.db.models import RawFrame
    from backend.db.session import session_factory

    sessions = session_factory(children.database)
    outcome: dict[str, Any] = {"tries": 0, "tamper_refused": False, "log": []}
    headers = {"X-API-Key": children.api_key}

    def run() -> dict[str, Any]:
        """Ask the API to settle the day and wait for its job: (status, error, result). A server killed
        meanwhile resumes the job when it restarts; a server that is down is asked again."""
        while True:
            try:
                answer = httpx.post(
                    f"{children.api_url}/metered-periods",
                    json={"date": f"{day:%Y-%m-%d}", "fee_bps": 100},
                    headers=headers,
                    timeout=30,
                )
                if answer.status_code != 202:
                    raise RuntimeError(f"POST /metered-periods: {answer.status_code} {answer.text}")
                job_id = answer.json()["id"]
                while True:
                    time.sleep(0.3)
                    job = httpx.get(f"{children.api_url}/jobs/{job_id}", headers=headers, timeout=30).json()
                    if job["status"] in ("succeeded", "failed"):
                        outcome["log"].append(f"{job['status']}: {(job.get('error') or '')[-300:]}")
                        return dict(job)
            except httpx.HTTPError:  # the server was killed: ask again once it is back
                time.sleep(0.5)

    if tamper:
        # a schema owner lifts the append-only guard and edits a raw frame; the settlement must be
        # refused; then the frame and the guard are put back
        from sqlalchemy import text

        from backend.db.guards import append_only_statements

        with sessions.begin() as db:
            row = db.scalars(
                select(RawFrame).where(RawFrame.frame.like("%TransactionEvent%")).order_by(RawFrame.id.desc())
            ).first()
            assert row is not None and db.bind is not None
            original, row_id, dialect = row.frame, row.id, db.bind.dialect.name
            for ddl in append_only_statements(dialect, install=False):
                db.execute(text(ddl))
            db.execute(update(RawFrame).where(RawFrame.id == row_id).values(frame=original.replace("1", "9")))
        while True:
            done = run()
            outcome["tries"] += 1
            if done["status"] == "failed" and str(done["error"]).startswith("FrameChainError"):
                outcome["tamper_refused"] = True
                break
            if done["status"] == "succeeded" or outcome["tries"] > 60:
                break  # must not happen: reported as tamper_refused False
        with sessions.begin() as db:
            db.execute(update(RawFrame).where(RawFrame.id == row_id).values(frame=original))
            for ddl in append_only_statements(dialect, install=True):
                db.execute(text(ddl))
    while True:
        done = run()
        outcome["tries"] += 1
        if done["status"] == "succeeded":
            outcome["last"] = done["result"]["energy"]
            outcome["period_id"] = done["result"]["period_id"]
            return outcome
        if outcome["tries"] > 60:
            raise RuntimeError(f"settling {day:%Y-%m-%d} keeps failing: " + " | ".join(outcome["log"][-5:]))
        time.sleep(0.5)


async def hostile_station(
    station_id: str,
    password: str,
    url: str,
    clock: WallClock,
    day: datetime,
    token: str,
    truth: dict[str, int],
    hold_last: bool = False,
) -> tuple[int, dict[str, Any] | None]:
    """A station whose meter does not sign: 7 kW for two hours in 15-minute messages, plus a forged jump of
    300 kWh, a message from a clock 26 h behind (500 Wh more than its register) and a duplicate. Returns
    the forged Wh it sent and, with ``hold_last``, its last message, held back to be sent late; its real
    energy goes to ``truth``."""
    from backend.operations.csms import iso

    tx = f"{station_id}-{day:%Y%m%d}"
    start = day + timedelta(hours=10)
    forged = 300_000
    messages: list[tuple[datetime, dict[str, Any]]] = []
    register = 0

    def value(at: datetime, wh: int) -> list[dict[str, Any]]:
        return [
            {
                "timestamp": iso(at),
                "sampledValue": [{"value": wh, "measurand": "Energy.Active.Import.Register"}],
            }
        ]

    for k in range(9):
        at = start + timedelta(minutes=15 * k)
        kind = "Started" if k == 0 else "Ended" if k == 8 else "Updated"
        if k == 4:
            register += forged  # the forged jump (a register that leaps 300 kWh in 15 minutes)
        elif k:
            register += 1750  # 7 kW for 15 minutes
        payload: dict[str, Any] = {
            "eventType": kind,
            "timestamp": iso(at),
            "triggerReason": "MeterValuePeriodic",
            "seqNo": k,
            "transactionInfo": {"transactionId": tx},
            "evse": {"id": 1, "connectorId": 1},
            "meterValue": value(at, register),
        }
        if k == 0:
            payload["idToken"] = {"idToken": token, "type": "ISO14443"}
        messages.append((at, payload))
    truth[station_id] = truth.get(station_id, 0) + 1750 * 7
    # a message from a clock 26 h behind (energy it claims: 500 Wh, refused as ClockSkewError)
    skewed = dict(messages[6][1])
    skewed["seqNo"] = 100
    skewed_at = messages[6][0] - timedelta(hours=26)
    skewed["timestamp"] = iso(skewed_at)

    held: dict[str, Any] | None = None
    for k, (at, payload) in enumerate(messages):
        if k == len(messages) - 1 and hold_last:
            held = {**payload, "offline": True}  # sent late, after the day's settlement
            break
        await clock.sleep_until(at)
        frames = [payload]
        if k == 6:
            extra = dict(skewed)
            extra["meterValue"] = value(
                skewed_at, int(payload["meterValue"][0]["sampledValue"][0]["value"]) + 500
            )
            frames.append(extra)
            forged += 500
        if k == 3:
            frames.append(payload)  # a duplicate
        for body in frames:
            await send_event(url, station_id, password, body)
    return forged, held


async def send_event(url: str, station_id: str, password: str, body: dict[str, Any]) -> None:
    """One TransactionEvent on a connection of its own, sent until the CSMS acknowledges it."""
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    from backend.operations.auth import basic_header

    while True:
        try:
            async with connect(
                f"{url}/{station_id}",
                subprotocols=[Subprotocol("ocpp2.0.1")],
                additional_headers={"Authorization": basic_header(station_id, password)},
                ping_interval=None,
                open_timeout=10,
            ) as ws:
                await ws.send(json.dumps([2, "h1", "TransactionEvent", body]))
                answer = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if answer[0] == 3:
                    return
        except Exception:  # the CSMS was killed mid-message: send it again
            await asyncio.sleep(0.3)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    from eth_utils.address import to_checksum_address

    from backend.db.models import IdTokenRow, Owner, Station, Vehicle
    from backend.db.session import migrate, session_factory
    from backend.operations.auth import hash_password, new_password
    from backend.operations.run import register_simulated_fleet, simulated_stations
    from backend.operations.simulator import run_stations
    from scheduler.datasets import load_prices

    work = Path(args.workdir or tempfile.mkdtemp(prefix="v2g-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    database = args.db or f"sqlite:///{work / 'soak.sqlite'}"
    rng = random.Random(args.seed)
    factor = 86400.0 / (args.minutes_per_day * 60.0)
    # a real second of latency is `factor` simulated seconds (a message can wait for another process's
    # write lock, a day's first cars arrive while the fleet is being registered): the clock tolerance is
    # a minute of real time, still hours short of a clock a day off
    tolerance = max(900.0, 60.0 * factor)
    env = {k: v for k, v in os.environ.items() if not k.startswith("V2G_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "V2G_DATA_DIR": str(work / "data"),
        "V2G_DEPLOYMENTS_DIR": str(work / "deployments"),
        "V2G_CHAIN": args.chain,
    }
    anvil_dir = work / "data" if args.chain == "anvil" else None
    anvil_port = free_port()
    anvil = None
    if anvil_dir is not None:  # bound to this process: it dies with it however the soak ends
        from backend.chain.node import AnvilNode

        anvil = AnvilNode(anvil_dir).start_bound(port=anvil_port)
    migrate(database)
    subprocess.run(
        [sys.executable, "-m", "backend.cli", "deploy", "--db", database],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    sessions = session_factory(database)
    market = load_prices()
    # the hostile stations and their cars (meters that do not sign)
    hostile_passwords = {f"HX{k:02d}": new_password() for k in range(HOSTILE)}
    with sessions.begin() as db:
        for k, (station_id, password) in enumerate(hostile_passwords.items()):
            db.add(Owner(id=f"hostile-{k}", address=to_checksum_address(f"0x{0xBAD00 + k:040x}")))
            db.flush()
            db.add(Vehicle(id=f"hx-car-{k}", owner_id=f"hostile-{k}", battery_kwh=60.0, charge_kw=11.0))
            db.flush()
            db.add(IdTokenRow(token=f"tok-hx-{k}", vehicle_id=f"hx-car-{k}"))
            db.add(
                Station(
                    id=station_id,
                    ocpp_version="2.0.1",
                    can_discharge=False,
                    evses=1,
                    periods_per_schedule=24,
                    max_power_kw=11.0,
                    password_hash=hash_password(password),
                    boots=0,
                )
            )

    first = FIRST_DAY
    clock = WallClock(first, time.time() + 5.0, factor)  # the first day starts in 5 s
    children = Children(
        env,
        database,
        free_port(),
        free_port(),
        clock,
        tolerance,
        api_port=free_port(),
        anvil_dir=anvil_dir,
        anvil_port=anvil_port,
        anvil=anvil,
    )
    children.env["V2G_METER_URL"] = f"http://127.0.0.1:{children.meter_port}"
    children.api_key = subprocess.run(
        [sys.executable, "-m", "backend.cli", "keys", "create", "--role", "operator", "--db", database],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    children.start_meter()
    children.start_csms()
    children.start_api()
    url = f"ws://127.0.0.1:{children.csms_port}"
    stop = asyncio.Event()
    kill_task = asyncio.create_task(killer(children, rng, args.kill_every_s, stop))
    truth: dict[str, int] = defaultdict(int)  # station-day → Wh its registers advanced
    hostile_truth: dict[str, int] = {}
    forged_sent = 0
    # the days' settlements, one after the other (the embedded chain has one writer), while the next days
    # run: a station never waits for a settlement
    days_ended: asyncio.Queue[datetime | None] = asyncio.Queue()
    outcomes: list[dict[str, Any]] = []

    settled: dict[datetime, asyncio.Event] = defaultdict(asyncio.Event)

    async def settler() -> None:
        while (ended := await days_ended.get()) is not None:
            tamper = (ended - first).days % 2 == 0
            outcomes.append(await asyncio.to_thread(settle_day, children, ended, tamper))
            settled[ended].set()

    async def late(day: datetime, station_id: str, body: dict[str, Any]) -> None:
        await settled[day].wait()
        await send_event(url, station_id, hostile_passwords[station_id], body)

    late_tasks: list[asyncio.Task[None]] = []

    settling = asyncio.create_task(settler())
    t0 = time.monotonic()
    try:
        for d in range(args.days):
            day = first + timedelta(days=d)
            specs = await asyncio.to_thread(
                register_simulated_fleet,
                sessions,
                f"{day:%Y-%m-%d}",
                args.stations,
                args.seed,
                market.window(day, day + timedelta(days=1)),
            )
            # a car is the vehicle the registry knows (the generator draws each day's fleet afresh)
            with sessions() as db:
                for spec in specs:
                    stored = db.get(Vehicle, spec["vehicle"].id)
                    assert stored is not None
                    spec["vehicle"] = dataclasses.replace(
                        spec["vehicle"],
                        battery_kwh=stored.battery_kwh,
                        charge_kw=stored.charge_kw,
                        discharge_kw=stored.discharge_kw,
                        soc_min=stored.soc_min,
                        soc_max=stored.soc_max,
                    )
            sims = simulated_stations(specs, url, clock, day, args.seed + d, trouble=True)
            for sim in sims:
                sim.trouble.resend_probability = 0.05
            end = day + timedelta(days=1)
            last_day = d == args.days - 1
            hostile = [
                hostile_station(
                    sid, pw, url, clock, day, f"tok-hx-{k}", hostile_truth, hold_last=k == 0 and not last_day
                )
                for k, (sid, pw) in enumerate(hostile_passwords.items())
            ]
            operated = asyncio.create_task(run_stations(sims, end))
            for (sid, _), (forged, held) in zip(
                hostile_passwords.items(), await asyncio.gather(*hostile), strict=True
            ):
                forged_sent += forged
                if held is not None:  # its day's last energy arrives after the day is settled
                    late_tasks.append(asyncio.create_task(late(day, sid, held)))
            await operated
            for sim in sims:
                truth[f"{sim.station_id}/{sim.transaction_id}"] += sim.stats.acknowledged_wh
            # a derived row edited: nothing the meter signs reads it
            with sessions.begin() as db:
                from sqlalchemy import text

                db.execute(text("UPDATE meter_readings SET import_wh = import_wh + 100000 WHERE id % 97 = 0"))
            await clock.sleep_until(end)
            days_ended.put_nowait(day)
            print(
                f"day {day:%Y-%m-%d} operated ({time.monotonic() - t0:.0f} s); kills so far "
                f"{dict(children.kills)}",
                flush=True,
            )
        await asyncio.gather(*late_tasks)  # the late energy reaches the CSMS before the last day settles
        days_ended.put_nowait(None)
        await settling
    finally:
        stop.set()
        await asyncio.gather(kill_task, return_exceptions=True)
        children.stop()
    wall = time.monotonic() - t0
    return figures(database, args, children, truth, hostile_truth, forged_sent, outcomes, wall)


def figures(
    database: str,
    args: argparse.Namespace,
    children: Children,
    truth: dict[str, int],
    hostile_truth: dict[str, int],
    forged_sent: int,
    outcomes: list[dict[str, Any]],
    wall: float,
) -> dict[str, Any]:
    from sqlalchemy import select

    from backend.audit.energy import current_ledger, energy_balance
    from backend.db.models import SettledTradeRow
    from backend.db.session import session_factory
    from backend.metering.replay import MeterPolicy

    sessions = session_factory(database)
    policy = MeterPolicy(clock_tolerance_s=children.tolerance_s)
    totals: dict[str, int] = defaultdict(int)
    overpaid = 0
    balanced = 0
    by_reason: dict[str, int] = defaultdict(int)
    #: metered but in no period yet: a day not settled (the day after the last one, into which the last
    #: night's cars charge), named by day so that nothing pending goes unexplained
    pending_by_day: dict[str, int] = {}
    with sessions() as db:
        ledger = current_ledger(db, policy)
        days = sorted(
            {int((FIRST_DAY + timedelta(days=d)).strftime("%Y%m%d")) for d in range(-1, args.days + 2)}
        )
        for day in days:
            b = energy_balance(db, day, policy, ledger)
            for key in ("metered_wh", "settled_wh", "adjusted_wh", "refused_wh", "pending_wh"):
                totals[key] += getattr(b, key)
            overpaid += sum(o.paid_wh - o.metered_wh for o in b.overpaid)
            for reason, wh in b.refused_by_reason.items():
                by_reason[reason] += wh
            balanced += int(b.ok)
            if b.pending_wh:
                pending_by_day[str(day)] = b.pending_wh
        # what reached the raw frames per honest transaction, against what its registers advanced
        reached: dict[str, int] = defaultdict(int)
        for seg in ledger.segments:
            reached[f"{seg.station_id}/{seg.transaction_id}"] += seg.import_wh + seg.export_wh
        for r in ledger.refusals:
            reached[f"{r.station_id}/{r.transaction_id}"] += r.wh
        lost = sum(max(wh - reached.get(key, 0), 0) for key, wh in truth.items())
        paid_hostile = sum(
            row.energy_wh
            for row in db.scalars(select(SettledTradeRow).where(SettledTradeRow.session_id.like("HX%")))
        )
    real_hostile = sum(hostile_truth.values())
    return {
        "days": args.days,
        "stations": args.stations + HOSTILE,
        "kills": sum(children.kills.values()),
        "kills_by_process": dict(children.kills),
        "wh_metered": totals["metered_wh"],
        "wh_settled": totals["settled_wh"],
        "wh_adjusted": totals["adjusted_wh"],
        "wh_refused": totals["refused_wh"],
        "wh_refused_by_reason": dict(sorted(by_reason.items())),
        "wh_pending": totals["pending_wh"],
        "wh_pending_by_day": pending_by_day,
        "days_settled": sorted(str(o["period_id"]) for o in outcomes),
        "wh_lost": lost,
        "paid_twice": overpaid,
        "forged_wh_sent": forged_sent,
        "forged_wh_settled": max(paid_hostile - real_hostile, 0),
        "days_balanced": balanced,
        "tampered_settlements_refused": sum(int(o["tamper_refused"]) for o in outcomes),
        "tampered_settlements": (args.days + 1) // 2,
        "settle_tries": sum(o["tries"] for o in outcomes),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--minutes-per-day", type=float, default=1.5)
    parser.add_argument("--kill-every-s", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--chain",
        choices=["anvil", "eth-tester"],
        default="anvil",
        help="a managed anvil (killed at random too) or the embedded chain (inside the API server)",
    )
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in the work folder)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--csms-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sim0", default="", help=argparse.SUPPRESS)
    parser.add_argument("--wall0", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--factor", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    if args.csms_child:
        asyncio.run(csms_child(args.db, args.port, args.sim0, args.wall0, args.factor))
        return
    result = asyncio.run(soak(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
