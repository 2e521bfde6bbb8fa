"""Sites: each grid connection planned on its own against its own limits and DR events, registered from
the command line and named by the API's DR events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from backend.cli import app
from backend.db.models import (
    ChargingProfileRow,
    DrEventRow,
    MeterReading,
    OcppTransaction,
    Owner,
    PlugSession,
    SiteRow,
    Station,
    Vehicle,
)
from backend.db.session import session_factory
from backend.operations.csms import Csms
from backend.operations.loop import OperationsLoop
from backend.operations.simulator import SimClock
from backend.portal.queries import live_plan
from tests.operations.test_live import day_loop

T0 = datetime(2023, 9, 12, 10, tzinfo=UTC)  # prices above zero all day: no car takes more than asked
DAY = T0.replace(hour=0)
#: station → (site, vehicle): two cars behind site A (4 kW), one behind B (22 kW), one on the loop's own
#: connection (no site, 50 kW)
PLACES = {"CA1": ("A", "a1"), "CA2": ("A", "a2"), "CB1": ("B", "b1"), "CO1": (None, "o1")}


def _seed(sessions: sessionmaker[Session]) -> None:
    """Every car plugged in at 10:00 with 30 kWh, asking for 40 kWh by 12:00 (10 kWh, 8 intervals; b1
    has had 5 of them); charge-only stations, efficiencies 1."""
    with sessions.begin() as db:
        db.add(Owner(id="alice", address="0x" + "11" * 20))
        db.add_all(
            [
                SiteRow(id="A", import_limit_kw=4.0, export_limit_kw=4.0),
                SiteRow(id="B", import_limit_kw=22.0, export_limit_kw=22.0),
            ]
        )
        db.flush()
        for station_id, (site, vehicle_id) in PLACES.items():
            db.add(
                Vehicle(
                    id=vehicle_id,
                    owner_id="alice",
                    battery_kwh=60,
                    charge_kw=11,
                    discharge_kw=0,
                    soc_min=0.1,
                    eta_charge=1.0,
                    eta_discharge=1.0,
                )
            )
            db.add(
                Station(
                    id=station_id,
                    ocpp_version="2.0.1",
                    can_discharge=False,
                    evses=1,
                    periods_per_schedule=24,
                    site_id=site,
                )
            )
            db.flush()
            db.add(
                PlugSession(
                    id=f"s-{vehicle_id}",
                    vehicle_id=vehicle_id,
                    arrival=T0,
                    departure=T0 + timedelta(hours=2),
                    arrival_kwh=30,
                    target_kwh=40,
                )
            )
            db.flush()
            db.add(
                OcppTransaction(
                    station_id=station_id,
                    transaction_id=f"tx-{vehicle_id}",
                    evse_id=1,
                    vehicle_id=vehicle_id,
                    plug_session_id=f"s-{vehicle_id}",
                    started_at=T0,
                )
            )
        # b1's meter moved 5 kWh already (two samples at the same instant: the first stored is the first)
        db.flush()
        for seq, wh in ((0, 1000), (1, 6000)):
            db.add(
                MeterReading(
                    station_id="CB1",
                    transaction_id="tx-b1",
                    seq_no=seq,
                    measured_at=T0,
                    received_at=T0,
                    import_wh=wh,
                    export_wh=0,
                )
            )
        tx = db.get(OcppTransaction, ("CB1", "tx-b1"))
        assert tx is not None
        tx.last_seq_no, tx.last_measured_at, tx.last_import_wh = 1, T0, 6000
        # site B may draw nothing in its second hour; the loop's own connection nothing for two hours
        db.add(
            DrEventRow(
                id="dr-b", start=T0 + timedelta(hours=1), duration_s=3600, import_limit_kw=0.0, site_id="B"
            )
        )
        db.add(DrEventRow(id="dr-own", start=T0, duration_s=7200, import_limit_kw=0.0))


def owed(loop: OperationsLoop) -> set[str | None] | None:
    """The sites the loop's next re-plan covers (``None``: every site)."""
    return loop._dirty


def test_each_site_is_planned_against_its_own_limits_and_dr_events(tmp_path: Path) -> None:
    sessions = session_factory(f"sqlite:///{tmp_path / 'sites.sqlite'}")
    _seed(sessions)

    async def replan() -> OperationsLoop:
        clock = SimClock(T0, 1.0)
        csms = Csms(sessions, clock)
        await csms.start()
        try:
            loop = day_loop(OperationsLoop, csms, sessions, clock, DAY)
            assert await loop.replan() == 4  # a profile per car (no station is connected: Offline)
            await loop.delivered()
            # a station's event re-plans its site alone; a station not seen yet, every site
            loop.trigger("arrival", "CB1")
            loop.trigger("departure", "CA2")
            assert owed(loop) == {"B", "A"}
            loop.trigger("arrival", "CX9")
            assert owed(loop) is None
            loop.sent.clear()  # every profile counts as changed
            with sessions() as db:
                before = {p.id for p in db.scalars(select(ChargingProfileRow))}
            assert await loop.replan({"B"}) == 1
            await loop.delivered()
            with sessions() as db:
                again = [p.station_id for p in db.scalars(select(ChargingProfileRow)) if p.id not in before]
            assert again == ["CB1"]
            assert sum(loop.planned_wh[("b1", T0 + timedelta(minutes=15 * k))] for k in range(8)) == 5_000
            return loop
        finally:
            await csms.stop()

    loop = asyncio.run(replan())
    steps = [T0 + timedelta(minutes=15 * k) for k in range(8)]

    def wh(vehicle: str) -> list[int]:
        return [loop.planned_wh[(vehicle, t)] for t in steps]

    # A: 4 kW for two cars that want 20 kWh: 1,000 Wh an interval between them, 8 kWh in all (short 12)
    a = [x + y for x, y in zip(wh("a1"), wh("a2"), strict=True)]
    assert all(0 <= x <= 1000 for x in a) and sum(a) == 8000, a
    # B: the 5 kWh b1 still needs in its first hour, nothing while its DR event holds it at 0 kW
    assert sum(wh("b1")[:4]) == 5_000 and wh("b1")[4:] == [0, 0, 0, 0], wh("b1")
    # the loop's own connection: held at 0 kW for two hours, its car gets nothing (and what the VEN reports
    # against is that connection's plan alone)
    assert wh("o1") == [0] * 8
    assert all(loop.site_plan_kw[t] == 0.0 for t in steps)
    assert loop.stats.failed_sites == 0
    with sessions() as db:
        sent = {p.station_id for p in db.scalars(select(ChargingProfileRow))}
    assert sent == set(PLACES)
    # the portal's live plan: the fleet against every connection's limit, each lowered by its own events
    with sessions() as db:
        plan = live_plan(db, loop)
    assert plan is not None
    limits = {p.start: (p.import_limit_kw, p.export_limit_kw) for p in plan.points}
    assert limits[T0] == (0.0 + 4.0 + 22.0, 76.0)  # the own connection's event holds it at 0
    assert limits[T0 + timedelta(hours=1)] == (0.0 + 4.0 + 0.0, 76.0)  # and site B's
    assert limits[T0 + timedelta(hours=2)] == (50.0 + 4.0 + 22.0, 76.0)


runner = CliRunner()


def test_sites_and_their_stations_are_registered_and_bad_files_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    sessions = session_factory(db)
    sites = tmp_path / "sites.csv"
    sites.write_text("site_id,import_limit_kw,export_limit_kw\ndepot,250,100\nhome-7,11,0\n")
    result = runner.invoke(app, ["sites", "import", str(sites), "--db", db])
    assert result.exit_code == 0 and "2 site(s) registered" in result.output, result.output
    stations = tmp_path / "stations.csv"
    stations.write_text(
        "station_id,ocpp_version,can_discharge,evses,periods_per_schedule,site_id\n"
        "CS1,2.1,true,1,24,depot\nCS2,2.0.1,false,1,24,\n"
    )
    result = runner.invoke(app, ["stations", "import", str(stations), "--db", db])
    assert result.exit_code == 0, result.output
    with sessions() as s:
        assert {x.id: x.site_id for x in s.scalars(select(Station))} == {"CS1": "depot", "CS2": None}
        depot = s.get(SiteRow, "depot")
        assert depot is not None and (depot.import_limit_kw, depot.export_limit_kw) == (250.0, 100.0)

    again = tmp_path / "again.csv"  # no site_id column: every station's site stays
    again.write_text("station_id,ocpp_version,can_discharge,evses,periods_per_schedule\nCS1,2.1,true,1,12\n")
    assert runner.invoke(app, ["stations", "import", str(again), "--db", db]).exit_code == 0
    with sessions() as s:
        cs1 = s.get(Station, "CS1")
        assert cs1 is not None and (cs1.site_id, cs1.periods_per_schedule) == ("depot", 12)

    for text, line in (
        (
            "site_id,import_limit_kw,export_limit_kw\ndepot,300,100\nx,nan,0\n",
            "line 3: import_limit_kw 'nan'",
        ),
        ("site_id,import_limit_kw,export_limit_kw\ndepot,300,-1\n", "line 2: export_limit_kw '-1'"),
        ("site_id,import_limit_kw,export_limit_kw\nbad id,3,3\n", "line 2: site id 'bad id' is not an id"),
        ("site_id,import_limit_kw,export_limit_kw\nd,1,1\nd,2,2\n", "a site id appears twice"),
        ("site_id,import_limit_kw\nd,1\n", "needs the columns site_id,import_limit_kw,export_limit_kw"),
    ):
        bad = tmp_path / "bad-sites.csv"
        bad.write_text(text)
        refused = runner.invoke(app, ["sites", "import", str(bad), "--db", db])
        assert refused.exit_code == 2, refused.output
        assert refused.output.startswith("InvalidRegistryFileError: ") and line in refused.output, (
            refused.output
        )
    with sessions() as s:  # nothing of a refused file stored
        depot = s.get(SiteRow, "depot")
        assert depot is not None and depot.import_limit_kw == 250.0 and s.get(SiteRow, "x") is None

    unknown = tmp_path / "unknown.csv"
    unknown.write_text(
        "station_id,ocpp_version,can_discharge,evses,periods_per_schedule,site_id\nCS3,2.1,false,1,24,nowhere\n"
    )
    refused = runner.invoke(app, ["stations", "import", str(unknown), "--db", db])
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        f"InvalidRegistryFileError: {unknown}: site nowhere is not registered (v2g sites import registers it)"
    )
    with sessions() as s:
        assert s.get(Station, "CS3") is None


def test_a_site_the_solver_leaves_without_a_plan_gets_its_load_balancers_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer within the time limit (here: none at all) leaves no car without a profile: each site's
    cars get full power from now, scaled down together to the site's limit and its DR events, named in
    the log and counted, and each site is owed a re-plan."""
    monkeypatch.setenv("V2G_REPRO_DIR", str(tmp_path / "failed-solves"))
    sessions = session_factory(f"sqlite:///{tmp_path / 'sites.sqlite'}")
    _seed(sessions)

    async def replan() -> OperationsLoop:
        clock = SimClock(T0, 1.0)
        csms = Csms(sessions, clock)
        await csms.start()
        try:
            loop = day_loop(OperationsLoop, csms, sessions, clock, DAY, solve_time_limit_s=1e-9)
            assert await loop.replan() == 4
            await loop.delivered()
            return loop
        finally:
            await csms.stop()

    loop = asyncio.run(replan())
    steps = [T0 + timedelta(minutes=15 * k) for k in range(8)]
    planned = {v: [loop.planned_wh[(v, t)] for t in steps] for v in ("a1", "a2", "b1", "o1")}
    assert planned == {
        "a1": [500] * 8,  # 4 kW shared equally
        "a2": [500] * 8,
        "b1": [2750, 2250, 0, 0, 0, 0, 0, 0],  # 11 kW until its last 5 kWh are in
        "o1": [0] * 8,  # the DR event on the loop's own connection holds it at 0 kW
    }
    assert loop.stats.failed_sites == 3 and owed(loop) == {None, "A", "B"}
    # one time limit for the whole re-plan: once it is spent the sites left are not solved at all (no
    # instance written for them)
    assert len(list((tmp_path / "failed-solves").glob("*.mps"))) <= 1


def test_a_boundary_replans_every_site_however_busy_the_stations_keep_the_loop(tmp_path: Path) -> None:
    """A station's event re-plans its site alone; with an event during every re-plan the loop never
    waits, and the interval boundary (and a DR event stored) must still re-plan every site."""
    sessions = session_factory(f"sqlite:///{tmp_path / 'sites.sqlite'}")
    _seed(sessions)
    scopes: list[tuple[datetime, set[str | None] | None]] = []

    class Busy(OperationsLoop):
        async def replan(self, sites: set[str | None] | None = None) -> int:
            scopes.append((self.clock(), None if sites is None else set(sites)))
            self._site_of = {"CB1": "B"}
            await asyncio.sleep(0.02)
            self.trigger("arrival", "CB1")  # another arrival at site B, every time
            if sum(s is None for _, s in scopes) == 3 or len(scopes) > 2000:
                self.stop()
            return 0

    async def scenario() -> None:
        clock = SimClock(T0 + timedelta(minutes=14), 60.0)  # a minute a second: 10:15 is a second away
        csms = Csms(sessions, clock)
        loop = day_loop(Busy, csms, sessions, clock, DAY)
        task = asyncio.create_task(loop.run())
        while sum(s is None for _, s in scopes) < 2 and not task.done():
            await asyncio.sleep(0.05)
        with sessions.begin() as db:  # as POST /dr-events stores it
            db.add(
                DrEventRow(
                    id="dr-a", start=T0 + timedelta(hours=3), duration_s=900, import_limit_kw=1.0, site_id="A"
                )
            )
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(scenario())
    full = [at for at, s in scopes if s is None]
    assert len(full) == 3, scopes[:5]
    assert full[0] == scopes[0][0] < T0 + timedelta(minutes=15)  # the first re-plan is every site's
    boundary = T0 + timedelta(minutes=15)
    assert boundary <= full[1] < boundary + timedelta(minutes=1)  # the boundary's, within a second
    assert all(s == {"B"} for at, s in scopes if s is not None)  # between them: site B alone
    assert sum(1 for at, s in scopes if at > full[1] and s is not None) >= 1  # busy to the DR event's
