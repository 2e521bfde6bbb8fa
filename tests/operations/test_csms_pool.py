"""`v2g operate --csms-workers 2` on PostgreSQL, as its own process: stations spread over two CSMS
processes sharing the port, the planner's profiles handed to the process that holds each station; a
CSMS process killed mid-visit is started again, its stations reconnect and get their profiles again,
and every metered sample is stored once. A second process never starts on SQLite."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from backend.api.security import Role, create_api_key
from backend.db.models import (
    CsmsCommand,
    CsmsLink,
    IdTokenRow,
    MeterReading,
    OcppTransaction,
    Owner,
    PricePoint,
    Station,
    Vehicle,
)
from backend.db.session import migrate, session_factory
from backend.operations.auth import hash_password, new_password
from backend.operations.simulator import SimCar, SimClock, SimStation
from backend.settlement.pipeline import local_owner_accounts
from tests.operations.test_operate_cli import OPERATE, env, free_port
from tests.postgres import fresh_database, throwaway_postgres

STATIONS = 6


def _children(parent: int) -> dict[int, int]:
    """The CSMS processes of ``parent``: their number → pid."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"backend.operations.pool" in argv:
            found[int(argv[argv.index(b"--worker") + 1])] = int(entry.name)
    return found


def _seed(database: str, home: Path) -> list[str]:
    """Stations, cars and prices; the owner's escrow funded on the embedded chain `v2g operate` opens."""
    from backend.app.settle import top_up_escrow
    from backend.platform import Platform

    migrate(database)
    sessions = session_factory(database)
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    passwords = []
    with sessions.begin() as db:
        db.add(Owner(id="alice", address=local_owner_accounts(["alice"])["alice"].address))
        db.flush()
        for k in range(STATIONS):
            db.add(Vehicle(id=f"ev{k}", owner_id="alice", battery_kwh=60, charge_kw=11, discharge_kw=0))
            db.flush()
            db.add(IdTokenRow(token=f"tok-{k}", vehicle_id=f"ev{k}"))
            passwords.append(new_password())
            db.add(
                Station(
                    id=f"CS{k}", ocpp_version="2.1", evses=1, periods_per_schedule=24,
                    password_hash=hash_password(passwords[-1]),
                )
            )  # fmt: skip
        # the hour the test runs in is the cheapest: every plan charges now
        for h in range(48):
            at = today + timedelta(hours=h)
            db.add(PricePoint(utc=at, eur_mwh=10.0 if at.hour == now.hour and h < 24 else 150.0 + h))
    platform = Platform.connect(
        database, None, data_dir=home / ".v2g", deployments_dir=home / "deployments", write=True
    )
    try:
        platform.ensure_deployment()
        alice = local_owner_accounts(["alice"])["alice"].address
        top_up_escrow(platform, platform.actors(("admin",)), {alice: 10**12}, 0)
    finally:
        platform.close()
    return passwords


def test_two_csms_processes_share_the_stations_and_one_killed_loses_nothing(tmp_path: Path) -> None:
    with throwaway_postgres() as cluster:
        database = fresh_database(cluster, "pool")
        passwords = _seed(database, tmp_path)
        sessions = session_factory(database)
        with sessions.begin() as db:
            auditor = create_api_key(db, Role.AUDITOR)
        port, api_port = free_port(), free_port()
        command = ["--db", database, "--port", str(port), "--api-port", str(api_port), "--csms-workers", "2"]
        operate = subprocess.Popen(
            [*OPERATE, *command],
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and len(_children(operate.pid)) < 2:
                assert operate.poll() is None, operate.communicate()[1]
                time.sleep(0.2)
            first = _children(operate.pid)
            assert sorted(first) == [0, 1]
            while time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.2)
            killed: dict[str, object] = {}

            async def visits() -> list[SimStation]:
                clock = SimClock(datetime.now(UTC), 1.0)
                start = clock()
                stations = [
                    SimStation(
                        f"CS{k}", f"ws://127.0.0.1:{port}", "2.1", clock,
                        SimCar(f"ev{k}", f"tok-{k}", 60.0, 11.0, 0.0, 0.0, 1.0, 0.95, 0.95,
                               start + timedelta(seconds=1), start + timedelta(seconds=7), 20.0),
                        meter_every=timedelta(seconds=1), password=passwords[k],
                    )
                    for k in range(STATIONS)
                ]  # fmt: skip
                runs = [asyncio.create_task(s.run(start + timedelta(seconds=8))) for s in stations]
                # every station has its profile, then the process holding CS0 is killed outright
                while not all(s.profile is not None for s in stations):
                    await asyncio.sleep(0.1)
                with sessions() as db:
                    links = {r.station_id: r.worker for r in db.scalars(select(CsmsLink))}
                killed["links"] = links
                killed["worker"] = links["CS0"]
                killed["profiles"] = stations[0].stats.profiles
                killed["at"] = datetime.now(UTC)
                os.kill(first[links["CS0"]], signal.SIGKILL)
                await asyncio.gather(*runs)
                return stations

            stations = asyncio.run(visits())
            with sessions() as db:
                dump = [
                    (c.id, c.station_id, c.kind, c.status, f"{c.created_at:%H:%M:%S.%f}",
                     f"{c.answered_at:%H:%M:%S.%f}" if c.answered_at else None)
                    for c in db.scalars(select(CsmsCommand).order_by(CsmsCommand.id))
                ]  # fmt: skip
            story = "\n".join(map(str, [*dump, killed]))
            victims = [s for s, w in killed["links"].items() if w == killed["worker"]]  # type: ignore[attr-defined]
            # its stations reconnected and got their profiles again; the others never noticed
            for s in stations:
                if s.station_id in victims:
                    assert s.stats.reconnects >= 1, s.station_id
                else:
                    assert s.stats.reconnects == 0, s.station_id
            if stations[0].stats.profiles <= killed["profiles"]:  # type: ignore[operator]
                operate.send_signal(signal.SIGTERM)
                raise AssertionError(story + "\n" + operate.communicate(timeout=60)[1])
            # the killed process was started again
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(_children(operate.pid)) < 2:
                time.sleep(0.2)
            again = _children(operate.pid)
            assert sorted(again) == [0, 1] and again[killed["worker"]] != first[killed["worker"]]  # type: ignore[index]
            with sessions() as db:
                # every visit's samples stored once, each transaction ended
                txs = list(db.scalars(select(OcppTransaction)))
                assert len(txs) == STATIONS and all(t.ended_at is not None for t in txs)
                for tx in txs:  # one sample per event, seq_no 0, 1, ...: each stored once, none missing
                    stored = db.scalar(
                        select(func.count(func.distinct(MeterReading.seq_no))).where(
                            MeterReading.station_id == tx.station_id
                        )
                    )
                    rows = db.scalar(
                        select(func.count())
                        .select_from(MeterReading)
                        .where(MeterReading.station_id == tx.station_id)
                    )
                    assert stored == rows == tx.last_seq_no + 1 > 4, tx.station_id
                # the calls the planner handed over were answered by the processes (a call the killed
                # one had in hand has none); each victim's profile came again from its new process
                accepted = [
                    c for c in db.scalars(select(CsmsCommand).where(CsmsCommand.kind == "set_profile"))
                    if c.status == "Accepted"
                ]  # fmt: skip
                assert {c.station_id for c in accepted} == {s.station_id for s in stations}, story
                again_to = {c.station_id for c in accepted if c.created_at > killed["at"]}  # type: ignore[operator]
                assert set(victims) <= again_to, story
            # /metrics sums the processes' OCPP messages (the killed one's as it last told them): at least
            # each station's TransactionEvents that the survivor stored (the kernel may have handed every
            # station to the killed process: then what the processes counted after the kill)
            survivors = sum(t.last_seq_no + 1 for t in txs if t.station_id not in victims)
            deadline, counted = time.monotonic() + 15, 0.0
            while time.monotonic() < deadline and counted < max(survivors, 1):
                page = httpx.get(f"http://127.0.0.1:{api_port}/metrics", headers={"X-API-Key": auditor}).text
                counted = float(re.search(r"^v2g_ocpp_messages_total (\S+)$", page, re.M)[1])  # type: ignore[index]
                time.sleep(0.5)
            assert counted >= max(survivors, 1), (counted, survivors)
        finally:
            if operate.poll() is None:
                operate.send_signal(signal.SIGTERM)
            out, err = operate.communicate(timeout=90)
        assert operate.returncode == 0, err
        assert "Traceback" not in err, err
        assert "CSMS process" in err and "exited with code -9" in err  # the death, named
        # no CSMS process is left behind (re-parented orphans included): every pid seen is gone
        for pid in [*first.values(), *again.values()]:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        assert "2 processes" in out


def test_csms_workers_need_postgresql(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'v2g.sqlite'}"
    done = subprocess.run(
        [*OPERATE, "--db", database, "--csms-workers", "2"], cwd=tmp_path, env=env(), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("CsmsWorkersError: --csms-workers needs PostgreSQL"), done.stderr
