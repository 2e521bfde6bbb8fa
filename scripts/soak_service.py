"""Days of service in minutes: `v2g run` left alone through market days on a drill's clock.

    python scripts/soak_service.py [--days 3] [--stations 8] [--minutes-per-day 1.5] [--seed 0]

What runs: `v2g run --config <work>/v2g.toml` (the metering service and the platform, supervised) on a
drill clock (``V2G_DRILL_CLOCK``: every process reads the same simulated time, ``--minutes-per-day`` real
minutes to a day, from the first day's midnight); simulated OCPP stations over real websockets in this
process (one car a day each, signed meter values, about half the cars stating their needs); the real NL
day-ahead prices of each day dropped as a CSV in the price inbox the day before at 13:00 (the first day's
before the start). Nobody runs a command after the start: the service imports the prices, plans, operates,
settles each day after it ends and claims it. On the way, one ``kill -9`` of each child: the platform at
14:00 of the first day, the metering service at 14:00 of the second.

Measured at the end (the service stopped with SIGTERM): ``days_settled`` (claimed), ``jobs_failed``,
``restarts`` (children started again by the supervisor), ``reconcile_ok`` (the ledger against the chain,
and every day's energy equation balanced), ``wh_lost`` (what the stations' registers moved, less what
the metered periods account for: settled, adjusted, refused by name or pending). The last line is one
JSON object with these keys and ``days``, ``stations``, ``minutes``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """`v2g run` as its own process; its output kept, the children's pids followed."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "run", "--config", str(work / "v2g.toml")],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.pids: dict[str, int] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            found = re.match(r"^(metering service|platform) started \(pid (\d+)\)", line)
            if found:
                self.pids[found.group(1)] = int(found.group(2))

    def kill(self, child: str) -> None:
        pid = self.pids[child]
        os.kill(pid, signal.SIGKILL)
        print(f"kill -9 {child} (pid {pid})", flush=True)

    @property
    def restarts(self) -> int:
        return sum(1 for line in self.lines if " exited with code " in line)


def drop_prices(inbox: Path, day: datetime) -> None:
    from scheduler.datasets import load_prices

    prices = load_prices().window(day, day + timedelta(days=1))
    rows = "".join(f"{t:%Y-%m-%d %H:%M:%S},{p}\n" for t, p in prices.items())
    staged = inbox / f".prices-{day:%Y-%m-%d}.csv.part"
    staged.write_text("utc,eur_mwh\n" + rows)
    staged.rename(inbox / f"prices-{day:%Y-%m-%d}.csv")  # whole, never half-read


def register(database: str, first: datetime, days: int, n: int, seed: int) -> list[list[dict[str, Any]]]:
    """The fleet (owners, vehicles, stations with passwords, tokens) and each day's bookings; per day,
    the stations' specifications with that day's visit."""
    import pandas as pd

    from backend.db.models import PlugSession
    from backend.db.session import session_factory
    from backend.operations.run import register_simulated_fleet
    from scheduler.fleet import FleetConfig, generate_fleet

    sessions = session_factory(database)
    specs = register_simulated_fleet(sessions, f"{first:%Y-%m-%d}", n, seed, pd.Series(dtype=float))
    per_day = [specs]
    for d in range(1, days):
        day = first + timedelta(days=d)
        _, plugs = generate_fleet(f"{day:%Y-%m-%d}", FleetConfig(n_evs=n), seed=seed)
        with sessions.begin() as db:
            for plug in plugs:
                db.merge(
                    PlugSession(
                        id=plug.id,
                        vehicle_id=plug.vehicle_id,
                        arrival=plug.arrival,
                        departure=plug.departure,
                        arrival_kwh=plug.arrival_kwh,
                        target_kwh=plug.target_kwh,
                    )
                )
        by_vehicle = {p.vehicle_id: p for p in plugs}
        per_day.append([{**s, "session": by_vehicle[s["vehicle"].id]} for s in specs])
    return per_day


async def operate(
    service: Service,
    url: str,
    per_day: list[list[dict[str, Any]]],
    first: datetime,
    factor: float,
    inbox: Path,
    trouble: bool,
) -> list[Any]:
    from backend.clock import platform_clock
    from backend.operations.run import simulated_stations
    from backend.operations.simulator import SimClock, run_stations

    drill = platform_clock()
    clock = SimClock(drill(), factor)
    everyone = []
    for d, specs in enumerate(per_day):
        day = first + timedelta(days=d)
        stations = simulated_stations(specs, url, clock, day, seed=d, trouble=trouble)
        everyone += stations

        async def events(d: int = d, day: datetime = day) -> None:
            await clock.sleep_until(day + timedelta(hours=13))
            if d + 1 < len(per_day):
                drop_prices(inbox, day + timedelta(days=1))
            await clock.sleep_until(day + timedelta(hours=14))
            if d == 0:
                service.kill("platform")
            elif d == 1:
                service.kill("metering service")

        await asyncio.gather(run_stations(stations, day + timedelta(days=1)), events())
        print(
            f"{day:%Y-%m-%d} operated: {len(stations)} stations, {service.restarts} restart(s) so far",
            flush=True,
        )
    return everyone


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--stations", type=int, default=8)
    parser.add_argument("--minutes-per-day", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-day", default="2023-07-02")
    parser.add_argument(
        "--trouble", action="store_true", help="Stations with seeded trouble: drops, clock skew, late cars."
    )
    args = parser.parse_args()

    from sqlalchemy import select

    from backend.api.security import Role, create_api_key
    from backend.audit.energy import energy_balance
    from backend.db.models import Job, Period, PeriodStatus
    from backend.db.session import session_factory

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="v2g-soak-"))
    inbox = work / "prices-inbox"
    inbox.mkdir()
    database = f"sqlite:///{work / 'soak.sqlite'}"
    csms, api, meter = free_port(), free_port(), free_port()
    (work / "v2g.toml").write_text(
        f'database_url = "{database}"\ndata_dir = "{work / ".v2g"}"\n'
        f"csms_port = {csms}\napi_port = {api}\nmeter_port = {meter}\n"
        f"import_limit_kw = {11.0 * args.stations}\nexport_limit_kw = {11.0 * args.stations}\n"
        f'prices_drop_dir = "{inbox}"\nprices_every_s = 1\nsettle_every_s = 1\nfinalise_every_s = 1\n'
        "settle_grace_s = 900\nliveness_s = 60\n"
    )
    first = datetime.fromisoformat(args.first_day).replace(tzinfo=UTC)
    factor = 86_400 / (args.minutes_per_day * 60)
    per_day = register(database, first, args.days, args.stations, args.seed)
    with session_factory(database).begin() as db:
        key = create_api_key(db, Role.OPERATOR)
    drop_prices(inbox, first)
    real_start = time.time() + 15  # the service up, the first prices imported, before the first midnight
    env = {k: v for k, v in os.environ.items() if not k.startswith("V2G_")}
    env["V2G_DRILL_CLOCK"] = f"{first.isoformat()}@{real_start}x{factor}"
    env["PYTHONPATH"] = str(REPO)
    os.environ["V2G_DRILL_CLOCK"] = env["V2G_DRILL_CLOCK"]
    service = Service(work, env)
    last_end = first + timedelta(days=args.days)
    try:
        stations = asyncio.run(
            operate(service, f"ws://127.0.0.1:{csms}", per_day, first, factor, inbox, args.trouble)
        )
        # the last day settles on its own after its grace (15 simulated minutes) and is claimed
        import httpx

        from backend.clock import platform_clock

        deadline = time.monotonic() + 600
        claimed = 0
        while time.monotonic() < deadline:
            with session_factory(database)() as db:
                claimed = sum(
                    1
                    for d in range(args.days)
                    if (p := db.get(Period, int(f"{first + timedelta(days=d):%Y%m%d}"))) is not None
                    and p.status == PeriodStatus.CLAIMED
                )
            if claimed == args.days and platform_clock()() > last_end + timedelta(minutes=20):
                break
            time.sleep(1.0)
        scraped = httpx.get(f"http://127.0.0.1:{api}/metrics", headers={"X-API-Key": key}, timeout=30).text
    finally:
        service.process.send_signal(signal.SIGTERM)
        code = service.process.wait(timeout=120)
    with session_factory(database)() as db:
        jobs = list(db.scalars(select(Job)))
        balances = [energy_balance(db, int(f"{first + timedelta(days=d):%Y%m%d}")) for d in range(args.days)]
        # a clock running ahead stamps a car's last minutes after the last midnight: that day's, pending
        after = energy_balance(db, int(f"{last_end:%Y%m%d}"))
        periods = {p.id: p.status for p in db.scalars(select(Period))}
    registers = sum(s.register(s.import_wh) + s.register(s.export_wh) for s in stations)
    accounted = sum(b.metered_wh for b in balances) + after.metered_wh
    reconcile = subprocess.run(
        [sys.executable, "-m", "backend.cli", "audit", "reconcile", "--db", database],
        cwd=work,
        env={k: v for k, v in env.items() if k != "V2G_DRILL_CLOCK"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    for b in balances:
        print(b.equation(), "OK" if b.ok else "UNBALANCED", flush=True)
    print(
        f"periods: {periods}; jobs: {len(jobs)} ({sum(j.status == 'failed' for j in jobs)} failed)",
        flush=True,
    )
    for j in jobs:
        if j.status == "failed":
            print(f"  failed job {j.id} {j.kind} {j.params}: {j.error}", flush=True)
    from backend.db.models import FieldRejection

    with session_factory(database)() as db:
        stored = db.query(FieldRejection).count()
    logged = 0
    for log in (work / ".v2g" / "logs").glob("platform.jsonl*"):
        for line in log.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            logged += event.get("refusal") not in (None, "NoPricesError")
    print(f"field refusals: {stored} stored, {logged} JSON log lines naming one", flush=True)
    series = sorted(
        {line.split("{")[0].split(" ")[0] for line in scraped.splitlines() if line.startswith("v2g_")}
    )
    print(f"/metrics series: {', '.join(series)}", flush=True)
    print(f"audit exit {reconcile.returncode}: {reconcile.stdout.strip().splitlines()[-1:]}", flush=True)
    print(f"work directory: {work}; supervisor exit {code}", flush=True)
    figures = {
        "days": args.days,
        "stations": args.stations,
        "minutes": round((time.monotonic() - started) / 60, 2),
        "days_settled": claimed,
        "jobs_failed": sum(j.status == "failed" for j in jobs),
        "restarts": service.restarts,
        "reconcile_ok": reconcile.returncode == 0 and all(b.ok for b in balances),
        "wh_lost": registers - accounted,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
