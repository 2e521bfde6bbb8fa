"""`v2g operate` for real (wall-clock time) as its own process: a station connects over the network, gets a
profile from the loop's re-plan, and the day's metered energy is then settled with `v2g settle --metered`,
signed by the metering service; `v2g operate --simulate` end to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from backend.api.security import Role, create_api_key
from backend.db.models import IdTokenRow, Owner, PlugSession, PricePoint, Station, Vehicle
from backend.db.session import session_factory
from backend.operations.auth import hash_password, new_password
from backend.operations.simulator import SimCar, SimClock, SimStation
from backend.settlement.pipeline import local_owner_accounts
from tests.operations.vtn import Vtn, vtn_in_thread

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


OPERATE = [sys.executable, "-m", "backend.cli", "operate"]


def env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("V2G_")}, "PYTHONPATH": str(REPO)}


@pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey")  # openleadr's VTN (aiohttp)
def test_live_operate_sends_profiles_and_the_day_settles_metered(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    database = f"sqlite:///{tmp_path / 'v2g.sqlite'}"
    sessions = session_factory(database)
    password = new_password()
    with sessions.begin() as db:
        db.add(Owner(id="alice", address=local_owner_accounts(["alice"])["alice"].address))
        db.add(
            Vehicle(id="ev1", owner_id="alice", battery_kwh=60, charge_kw=11, discharge_kw=11, soc_min=0.1)
        )
        db.flush()
        db.add(IdTokenRow(token="tok-ev1", vehicle_id="ev1"))
        db.add(
            Station(
                id="CS1",
                ocpp_version="2.1",
                can_discharge=True,
                evses=1,
                periods_per_schedule=24,
                password_hash=hash_password(password),
            )
        )
        db.add(
            PlugSession(
                id="s1",
                vehicle_id="ev1",
                arrival=now,
                departure=now + timedelta(hours=6),
                arrival_kwh=20,
                target_kwh=40,
            )
        )
        # the hour the test runs in is the day's cheapest by far, so the plan charges now whatever the
        # time of day (with the cheapest hour later, it would wait, and the day would have nothing to settle)
        for h in range(24):
            db.add(PricePoint(utc=today + timedelta(hours=h), eur_mwh=10.0 if h == now.hour else 150.0 + h))
    port, api_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        vtn = stack.enter_context(vtn_in_thread(free_port()))
        operate = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backend.cli",
                "operate",
                "--db",
                database,
                "--port",
                str(port),
                "--api-port",
                str(api_port),
                "--openadr-vtn",
                vtn.url,
            ],
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stack.callback(_stop, operate)
        _live_day(operate, port, api_port, database, password, vtn)
    out, err = operate.communicate(timeout=60)
    assert operate.returncode == 0, err
    assert "Traceback" not in err and "INFO" not in err and "Warning" not in err, err
    assert f"CSMS on ws://127.0.0.1:{port}" in out
    assert f"OpenADR VEN v2g-settle for node site: {vtn.url}" in out
    assert vtn.registered == ["v2g-settle"]  # the VEN registered with the grid operator's VTN
    _settle_the_day(tmp_path, database, today)


def _stop(operate: subprocess.Popen[str]) -> None:
    if operate.poll() is None:
        operate.send_signal(signal.SIGTERM)
        try:
            operate.wait(timeout=60)
        except subprocess.TimeoutExpired:
            operate.kill()


def _live_day(
    operate: subprocess.Popen[str], port: int, api_port: int, database: str, password: str, vtn: Vtn
) -> None:
    """A car's visit to the running `v2g operate`, its metrics scraped, the VEN seen by the VTN."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert operate.poll() is None, operate.stderr.read() if operate.stderr else ""
        time.sleep(0.2)
    clock = SimClock(datetime.now(UTC), 1.0)
    arrival = clock()
    car = SimCar(
        "ev1",
        "tok-ev1",
        60.0,
        11.0,
        11.0,
        0.1,
        1.0,
        0.95,
        0.95,
        arrival,
        arrival + timedelta(seconds=8),
        20.0,
    )
    station = SimStation(
        "CS1",
        f"ws://127.0.0.1:{port}",
        "2.1",
        clock,
        car,
        can_discharge=True,
        meter_every=timedelta(seconds=2),
        password=password,
    )
    asyncio.run(station.run(arrival + timedelta(seconds=10)))
    assert station.stats.profiles >= 1 and station.profile is not None  # the re-plan reached it
    # what an operator's Prometheus scrapes from the API of the running operations
    with session_factory(database).begin() as db:
        key = create_api_key(db, Role.AUDITOR)
    scraped = httpx.get(f"http://127.0.0.1:{api_port}/metrics", headers={"X-API-Key": key}, timeout=30)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in scraped.text.splitlines()
        if line and not line.startswith("#")
    }
    assert figures["v2g_replans_total"] >= 1 and figures["v2g_profiles_sent_total"] >= 1
    assert figures["v2g_ocpp_messages_total"] > 5 and figures["v2g_meter_readings_total"] >= 3
    assert "v2g_stations_connected" in figures and figures["v2g_stations_heard"] == 1
    assert figures["v2g_metered_wh"] > 0  # the visit charged, as its meter said
    assert (
        station.profile["charging_schedule"][0]["charging_schedule_period"][0]["operation_mode"]
        == "CentralSetpoint"
    )
    # the operator's portal page shows the live plan, not "no schedule yet"
    with session_factory(database).begin() as db:
        operator = create_api_key(db, Role.OPERATOR)
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as portal:
        token = re.search(r'name="csrf" value="([^"]+)"', portal.get("/").text)
        assert token is not None
        assert portal.post("/sign-in", data={"api_key": operator, "csrf": token.group(1)}).status_code == 303
        page = portal.get("/portal/operator").text
    assert "Live plan for " in page and "No schedule yet" not in page, page[:2000]
    deadline = time.monotonic() + 30
    while not vtn.registered and time.monotonic() < deadline:
        time.sleep(0.1)


def _settle_the_day(tmp_path: Path, database: str, today: datetime) -> None:
    def settle(**extra_env: str) -> subprocess.CompletedProcess[str]:
        command = ["settle", "--metered", "--date", f"{today:%Y-%m-%d}", "--db", database]
        return subprocess.run(
            [sys.executable, "-m", "backend.cli", *command],
            cwd=tmp_path,
            env={**env(), **extra_env},
            capture_output=True,
            text=True,
            timeout=240,
        )

    # a day is settled once it has ended: today's is refused by name, and nothing is sent
    settled = settle()
    assert settled.returncode == 2, settled.stdout + settled.stderr
    assert settled.stderr.startswith("DayNotEndedError: period ")
    # the service settles it on its own once the day has ended (here: a drill's clock, 20 minutes after
    # midnight), while it goes on serving stations; nobody stops it, nobody runs a command
    after_midnight = (today + timedelta(days=1, minutes=20)).isoformat()
    port, api_port = free_port(), free_port()
    operate = subprocess.Popen(
        [*OPERATE, "--db", database, "--port", str(port), "--api-port", str(api_port)],
        cwd=tmp_path,
        env={**env(), "V2G_SETTLE_NOW": after_midnight},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with session_factory(database).begin() as db:
            key = create_api_key(db, Role.OPERATOR)
        deadline = time.monotonic() + 240
        jobs: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            assert operate.poll() is None, operate.stderr.read() if operate.stderr else ""
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(
                    f"http://127.0.0.1:{api_port}/jobs",
                    params={"kind": "settle_metered"},
                    headers={"X-API-Key": key},
                    timeout=10,
                )
                jobs = answer.json()
                if jobs and jobs[0]["status"] in ("succeeded", "failed"):
                    break
            time.sleep(0.5)
        with socket.socket() as probe:  # and the stations' server is up all along
            assert probe.connect_ex(("127.0.0.1", port)) == 0
    finally:
        _stop(operate)
    _, err = operate.communicate(timeout=60)
    assert operate.returncode == 0 and "Traceback" not in err, err
    (job,) = jobs
    assert job["status"] == "succeeded", job
    assert job["params"] == {"date": f"{today:%Y-%m-%d}", "source": "market-clock"}
    result = job["result"]
    assert isinstance(result, dict) and result["status"] == "claimed" and result["entries"] == 1
    assert result["balances"] is True
    # and settling it by hand afterwards sends nothing: it is already settled
    settled = settle(V2G_SETTLE_NOW=after_midnight)
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert "is already settled (claimed)" in settled.stdout and "reconciliation: OK" in settled.stdout


@pytest.mark.slow  # 40 s; the live test above runs `v2g operate` and `v2g settle --metered` as processes
def test_operate_simulate_runs_an_accelerated_day_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "backend.cli",
            "operate",
            "--simulate",
            "6",
            "--minutes",
            "0.3",
            "--seed",
            "1",
        ],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reconciliation: OK" in result.stdout and "plan vs metered" in result.stdout
    assert "Traceback" not in result.stderr
    again = subprocess.run(
        [sys.executable, "-m", "backend.cli", "operate", "--simulate", "6", "--minutes", "0.3"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert again.returncode == 2 and again.stderr.startswith(
        "DayAlreadyOperatedError: 2023-07-02 already has 6"
    )
