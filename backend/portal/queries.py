"""What the pages show, read from the database (and, for balances, the chain): no logic of their own
beyond grouping rows for a table or a chart. Statements, reconciliation and proofs come from the same
:class:`~backend.platform.Platform` calls as the API and the command line."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.audit.indexer import restore_args
from backend.db.models import (
    ChargingProfileRow,
    DrEventRow,
    FieldRejection,
    IndexedEvent,
    Job,
    MeterReading,
    OcppTransaction,
    Owner,
    Period,
    PeriodEntry,
    PlugSession,
    PricePoint,
    ScheduleRun,
    ScheduleTrade,
    SettledTradeRow,
    SiteRow,
    Station,
    Submission,
    Vehicle,
    VehicleSettings,
)
from backend.operations.credit import Credit, credit_gate
from backend.operations.metered import metered_intervals
from backend.platform import Platform
from backend.portal.format import UNIT

# --- owners ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VehicleRow:
    id: str
    battery_kwh: float | None
    charge_kw: float | None
    discharge_kw: float | None

    @property
    def v2g(self) -> bool | None:
        return None if self.discharge_kw is None else self.discharge_kw > 0


@dataclass
class SessionRow:
    id: str
    vehicle_id: str
    arrival: datetime | None = None
    departure: datetime | None = None
    arrival_kwh: float | None = None
    target_kwh: float | None = None
    charge_wh: int = 0
    discharge_wh: int = 0
    amount: int | None = None  # settled: what the session earned (> 0) or cost (< 0), base units
    period_id: int | None = None


def owner_vehicles(db: Session, owner_id: str) -> list[VehicleRow]:
    """The owner's vehicles: registered ones, and ones known only from settled trades (a settled day
    imported without its fleet, as ``v2g demo`` stores it)."""
    rows = {
        v.id: VehicleRow(v.id, v.battery_kwh, v.charge_kw, v.discharge_kw)
        for v in db.scalars(select(Vehicle).where(Vehicle.owner_id == owner_id))
    }
    for (vehicle_id,) in db.execute(
        select(SettledTradeRow.vehicle_id).where(SettledTradeRow.owner_id == owner_id).distinct()
    ):
        rows.setdefault(vehicle_id, VehicleRow(vehicle_id, None, None, None))
    return sorted(rows.values(), key=lambda v: v.id)


def latest_schedule_id(db: Session) -> int | None:
    return db.scalar(select(func.max(ScheduleRun.id)))


def owner_sessions(db: Session, owner_id: str) -> list[SessionRow]:
    """Each plug-in of the owner's: its window, the energy planned or settled, and what it earned."""
    rows: dict[str, SessionRow] = {}
    for plug, _vehicle in db.execute(
        select(PlugSession, Vehicle)
        .join(Vehicle, Vehicle.id == PlugSession.vehicle_id)
        .where(Vehicle.owner_id == owner_id)
    ):
        rows[plug.id] = SessionRow(
            plug.id, plug.vehicle_id, plug.arrival, plug.departure, plug.arrival_kwh, plug.target_kwh
        )
    # live operations: each transaction of the owner's vehicles, named as its settlement names it (its
    # booking's id, else station/transaction), with what its registers moved so far
    metered: dict[str, tuple[int, int]] = {}
    transactions = list(
        db.scalars(
            select(OcppTransaction)
            .join(Vehicle, Vehicle.id == OcppTransaction.vehicle_id)
            .where(Vehicle.owner_id == owner_id)
        )
    )
    if transactions:
        moved = {
            (station, tx): (int(imp or 0), int(exp or 0))
            for station, tx, imp, exp in db.execute(
                select(
                    MeterReading.station_id,
                    MeterReading.transaction_id,
                    func.max(MeterReading.import_wh) - func.min(MeterReading.import_wh),
                    func.max(MeterReading.export_wh) - func.min(MeterReading.export_wh),
                )
                .where(MeterReading.transaction_id.in_([tx.transaction_id for tx in transactions]))
                .group_by(MeterReading.station_id, MeterReading.transaction_id)
            )
        }
        for tx in transactions:
            sid = tx.plug_session_id or f"{tx.station_id}/{tx.transaction_id}"
            rows.setdefault(sid, SessionRow(sid, str(tx.vehicle_id), tx.started_at, tx.ended_at))
            imp, exp = moved.get((tx.station_id, tx.transaction_id), (0, 0))
            before = metered.get(sid, (0, 0))
            metered[sid] = (before[0] + imp, before[1] + exp)
    settled: set[str] = set()
    for t in db.scalars(select(SettledTradeRow).where(SettledTradeRow.owner_id == owner_id)):
        row = rows.setdefault(t.session_id, SessionRow(t.session_id, t.vehicle_id))
        settled.add(t.session_id)
        row.period_id = t.period_id
        row.amount = (row.amount or 0) + t.amount
        if t.direction == "charge":
            row.charge_wh += t.energy_wh
        else:
            row.discharge_wh += t.energy_wh
    schedule_id = latest_schedule_id(db)
    if schedule_id is not None:
        for p in db.scalars(
            select(ScheduleTrade).where(
                ScheduleTrade.schedule_id == schedule_id, ScheduleTrade.owner_id == owner_id
            )
        ):
            if p.session_id in settled:
                continue
            row = rows.setdefault(p.session_id, SessionRow(p.session_id, p.vehicle_id))
            if p.direction == "charge":
                row.charge_wh += p.energy_wh
            else:
                row.discharge_wh += p.energy_wh
    for sid, (imp, exp) in metered.items():  # not settled yet, and no plan: what the meter says so far
        row = rows[sid]
        if sid not in settled and not row.charge_wh and not row.discharge_wh:
            row.charge_wh, row.discharge_wh = imp, exp
    return sorted(rows.values(), key=lambda r: (r.arrival or datetime.max.replace(tzinfo=UTC), r.id))


@dataclass(frozen=True)
class IntervalRow:
    start: datetime
    charge_wh: int
    discharge_wh: int
    price: int | None  # base units per kWh
    value: int | None
    fee: int | None
    amount: int | None
    metered_import_wh: int | None = None
    metered_export_wh: int | None = None


@dataclass
class SessionDetail:
    session: SessionRow
    source: str  # "settled in period N" | "planned by schedule N"
    interval_minutes: int
    rows: list[IntervalRow] = field(default_factory=list)

    @property
    def energy_label(self) -> str:
        return "settled" if self.source.startswith("settled") else "plan"

    @property
    def has_metered(self) -> bool:
        return any(r.metered_import_wh is not None for r in self.rows)

    def with_metered(self, metered: dict[datetime, tuple[int, int]]) -> SessionDetail:
        """The rows with what the meter recorded (0 Wh in an interval of the plan the meter saw no energy
        in, once the meter has reported the session at all)."""
        if metered:
            starts = sorted({r.start for r in self.rows} | set(metered))
            planned = {r.start: r for r in self.rows}
            self.rows = [
                replace(
                    planned.get(s) or IntervalRow(s, 0, 0, None, None, None, None),
                    metered_import_wh=metered.get(s, (0, 0))[0],
                    metered_export_wh=metered.get(s, (0, 0))[1],
                )
                for s in starts
            ]
        return self


def metered_energy(
    db: Session, session_id: str, starts: list[datetime], interval_minutes: int
) -> dict[datetime, tuple[int, int]]:
    """What the station's meter registers say the session took and gave per interval (Wh imported,
    Wh exported), from live operations' readings; empty when no station reported this session."""
    if not starts or _transaction_of(db, session_id) is None:
        return {}
    width = timedelta(minutes=interval_minutes)
    return {
        m.interval_start: (m.import_wh, m.export_wh)
        for m in metered_intervals(db, min(starts), max(starts) + width, interval_minutes)
        if m.session_id == session_id
    }


def _transaction_of(db: Session, session_id: str) -> OcppTransaction | None:
    """The live transaction a session id names: its booking's, or ``station/transaction``."""
    found = db.scalars(select(OcppTransaction).where(OcppTransaction.plug_session_id == session_id)).first()
    if found is None and "/" in session_id:
        station, transaction = session_id.split("/", 1)
        found = db.get(OcppTransaction, (station, transaction))
    return found


def session_detail(db: Session, owner_id: str, session_id: str) -> SessionDetail | None:
    """The session's intervals: settled (energy, price, value, fee, amount) or else planned (energy)."""
    sessions = {s.id: s for s in owner_sessions(db, owner_id)}
    row = sessions.get(session_id)
    if row is None:
        return None
    by_start: dict[datetime, dict[str, Any]] = defaultdict(
        lambda: {"ch": 0, "dis": 0, "price": None, "value": 0, "fee": 0, "amount": 0}
    )
    settled = list(
        db.scalars(
            select(SettledTradeRow).where(
                SettledTradeRow.owner_id == owner_id, SettledTradeRow.session_id == session_id
            )
        )
    )
    if settled:
        for t in settled:
            cell = by_start[t.interval_start]
            cell["ch" if t.direction == "charge" else "dis"] += t.energy_wh
            cell["price"] = t.grid_price
            cell["value"] += t.value
            cell["fee"] += t.fee
            cell["amount"] += t.amount
        period = db.get(Period, settled[0].period_id)
        minutes = _interval_minutes(sorted(by_start), period)
        detail = SessionDetail(row, f"settled in period {settled[0].period_id}", minutes)
        detail.rows = [
            IntervalRow(s, c["ch"], c["dis"], c["price"], c["value"], c["fee"], c["amount"])
            for s, c in sorted(by_start.items())
        ]
        return detail.with_metered(metered_energy(db, session_id, sorted(by_start), minutes))
    schedule_id = latest_schedule_id(db)
    run = db.get(ScheduleRun, schedule_id) if schedule_id is not None else None
    detail = SessionDetail(row, "not planned yet", 15)
    planned = run is not None and (
        db.scalar(
            select(func.count())
            .select_from(ScheduleTrade)
            .where(ScheduleTrade.schedule_id == run.id, ScheduleTrade.session_id == session_id)
        )
        or 0
    )
    tx = _transaction_of(db, session_id)
    if not planned and tx is not None:  # a live charge not settled yet: what the meter says so far
        last = db.scalar(
            select(func.max(MeterReading.measured_at)).where(
                MeterReading.station_id == tx.station_id, MeterReading.transaction_id == tx.transaction_id
            )
        )
        end = tx.ended_at or last or tx.started_at
        width = timedelta(minutes=15)
        first = tx.started_at.replace(minute=tx.started_at.minute // 15 * 15, second=0, microsecond=0)
        starts = [first + k * width for k in range(max(int((end - first) / width) + 1, 1))][: 96 * 7]
        detail.source = "metered so far, not settled yet"
        detail.rows = [IntervalRow(t, 0, 0, None, None, None, None) for t in starts]
        return detail.with_metered(metered_energy(db, session_id, starts, 15))
    if run is None:
        return detail
    for p in db.scalars(
        select(ScheduleTrade).where(
            ScheduleTrade.schedule_id == run.id,
            ScheduleTrade.owner_id == owner_id,
            ScheduleTrade.session_id == session_id,
        )
    ):
        by_start[p.interval_start]["ch" if p.direction == "charge" else "dis"] += p.energy_wh
    detail.source = f"planned by schedule {run.id}"
    detail.interval_minutes = run.interval_minutes
    detail.rows = [
        IntervalRow(s, c["ch"], c["dis"], None, None, None, None) for s, c in sorted(by_start.items())
    ]
    return detail.with_metered(metered_energy(db, session_id, sorted(by_start), run.interval_minutes))


def _interval_minutes(starts: list[datetime], period: Period | None) -> int:
    steps = [int((b - a).total_seconds() // 60) for a, b in itertools.pairwise(starts)]
    positive = [s for s in steps if s > 0]
    return min(positive) if positive else 15


@dataclass(frozen=True)
class StatementRow:
    period_id: int
    entry_id: int
    status: str
    starts_at: datetime | None
    charged_wh: int
    discharged_wh: int
    fees: int
    amount: int
    paid: int | None
    debt_added: int | None
    claim_tx: str | None
    propose_tx: str | None
    root: str | None


def statement_rows(db: Session, platform: Platform, owner_id: str) -> tuple[str, list[StatementRow]]:
    """The owner's statement (the service layer's), with each period's on-chain state and transactions."""
    statement = platform.statement(owner_id)
    txs = period_transactions(db)
    rows = []
    for line in statement.lines:
        period = db.get(Period, line.period_id)
        rows.append(
            StatementRow(
                line.period_id,
                line.entry_id,
                period.status if period else "unknown",
                period.starts_at if period else None,
                line.charged_wh,
                line.discharged_wh,
                line.fees,
                line.amount,
                line.paid,
                line.debt_added,
                line.claim_tx,
                txs.get(line.period_id, {}).get("propose"),
                line.root,
            )
        )
    return statement.address, rows


def credit_of(platform: Platform, owner_id: str, fee_bps: int) -> Credit:
    """The owner's escrow and standing for new sessions as the CSMS decides it
    (:mod:`backend.operations.credit`): one read of the contract."""
    return credit_gate(platform, fee_bps).check(owner_id=owner_id, at=datetime.now(UTC))


# --- periods and the chain ------------------------------------------------------------------------------


def period_transactions(db: Session) -> dict[int, dict[str, str]]:
    """Per period, the mined transaction of each kind (``propose``, ``finalise``; the last claim batch)."""
    txs: dict[int, dict[str, str]] = defaultdict(dict)
    for sub in db.scalars(select(Submission).where(Submission.status == "mined").order_by(Submission.id)):
        txs[sub.period_id][sub.kind] = sub.tx_hash
    return txs


@dataclass(frozen=True)
class PeriodRow:
    id: int
    status: str
    starts_at: datetime
    ends_at: datetime
    root: str
    total_credit: int
    total_debit: int
    entry_count: int
    claimed: int
    challenge_ends: int | None
    propose_tx: str | None
    finalise_tx: str | None


def periods(db: Session) -> list[PeriodRow]:
    txs = period_transactions(db)
    claimed = dict(
        db.execute(
            select(PeriodEntry.period_id, func.count())
            .where(PeriodEntry.claimed.is_(True))
            .group_by(PeriodEntry.period_id)
        ).all()
    )
    return [
        PeriodRow(
            p.id,
            p.status,
            p.starts_at,
            p.ends_at,
            p.root,
            p.total_credit,
            p.total_debit,
            p.entry_count,
            int(claimed.get(p.id, 0)),
            p.challenge_ends,
            txs.get(p.id, {}).get("propose"),
            txs.get(p.id, {}).get("finalise"),
        )
        for p in db.scalars(select(Period).order_by(Period.id.desc()))
    ]


@dataclass(frozen=True)
class Dispute:
    period_id: int
    auditor: str
    reason: str
    tx_hash: str
    block_number: int


def disputes(db: Session, contract: str) -> list[Dispute]:
    return [
        Dispute(
            int(e.period_id or 0),
            str(e.args.get("auditor")),
            str(e.args.get("reason")),
            e.tx_hash,
            e.block_number,
        )
        for e in db.scalars(
            select(IndexedEvent)
            .where(IndexedEvent.contract == contract, IndexedEvent.name == "PeriodDisputed")
            .order_by(IndexedEvent.block_number)
        )
    ]


def proposal_block(db: Session, contract: str, period_id: int) -> int | None:
    """Where the period's proposal was mined (a hint for the browser's log query: a wrong hint can only
    make the check fail, never pass)."""
    block = db.scalar(
        select(IndexedEvent.block_number).where(
            IndexedEvent.contract == contract,
            IndexedEvent.name == "PeriodProposed",
            IndexedEvent.period_id == period_id,
        )
    )
    if block is None:
        block = db.scalar(
            select(Submission.block_number).where(
                Submission.period_id == period_id, Submission.kind == "propose", Submission.status == "mined"
            )
        )
    return None if block is None else int(block)


def entries(db: Session, period_id: int, owner_id: str | None = None) -> list[PeriodEntry]:
    query = select(PeriodEntry).where(PeriodEntry.period_id == period_id)
    if owner_id is not None:
        query = query.where(PeriodEntry.owner_id == owner_id)
    return list(db.scalars(query.order_by(PeriodEntry.entry_id)))


def entries_of_owner(db: Session, owner_id: str) -> list[PeriodEntry]:
    return list(
        db.scalars(
            select(PeriodEntry)
            .where(PeriodEntry.owner_id == owner_id)
            .order_by(PeriodEntry.period_id.desc(), PeriodEntry.entry_id)
        )
    )


def claim_args(db: Session, contract: str, period_id: int) -> dict[int, dict[str, Any]]:
    return {
        int(restore_args(e.args)["entryId"]): {**restore_args(e.args), "tx": e.tx_hash}
        for e in db.scalars(
            select(IndexedEvent).where(
                IndexedEvent.contract == contract,
                IndexedEvent.name == "EntryClaimed",
                IndexedEvent.period_id == period_id,
            )
        )
    }


@dataclass(frozen=True)
class OwnerRow:
    id: str
    address: str
    vehicles: int


def owners(db: Session, limit: int = 500) -> list[OwnerRow]:
    """The owners (first ``limit`` by id) with how many vehicles each has: an operator's way to each
    owner's pages."""
    counts = dict(db.execute(select(Vehicle.owner_id, func.count()).group_by(Vehicle.owner_id)).all())
    return [
        OwnerRow(o.id, o.address, int(counts.get(o.id, 0)))
        for o in db.scalars(select(Owner).order_by(Owner.id).limit(limit))
    ]


def jobs(db: Session, limit: int = 20) -> list[Job]:
    return list(db.scalars(select(Job).order_by(Job.id.desc()).limit(limit)))


# --- the fleet plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanPoint:
    start: datetime
    charge_kw: float
    discharge_kw: float
    import_limit_kw: float | None
    export_limit_kw: float | None
    price_eur_mwh: float | None

    @property
    def net_kw(self) -> float:
        return self.charge_kw - self.discharge_kw


@dataclass
class FleetPlan:
    title: str
    interval_minutes: int
    points: list[PlanPoint]
    limits_known: bool
    schedule_id: int | None = None
    period_id: int | None = None
    kpis: dict[str, float] = field(default_factory=dict)

    def chart_data(self) -> dict[str, Any]:
        return {
            "labels": [p.start.strftime("%Y-%m-%dT%H:%M:%SZ") for p in self.points],
            "charge_kw": [round(p.charge_kw, 3) for p in self.points],
            "discharge_kw": [round(-p.discharge_kw, 3) for p in self.points],
            "import_limit_kw": [p.import_limit_kw for p in self.points],
            "export_limit_kw": [
                None if p.export_limit_kw is None else -p.export_limit_kw for p in self.points
            ],
            "price_eur_mwh": [p.price_eur_mwh for p in self.points],
        }


def live_plan(db: Session, loop: Any) -> FleetPlan | None:
    """The running operations loop's plan for its day (``v2g operate``): each vehicle's last planned
    energy per interval, against the site's limits lowered by the day's DR events, and the day's prices."""
    if loop is None or not loop.planned_wh:
        return None
    day = loop.day
    width = timedelta(minutes=day.interval_minutes)
    hours = width.total_seconds() / 3600
    charge: dict[datetime, float] = defaultdict(float)
    discharge: dict[datetime, float] = defaultdict(float)
    for start, (up, down) in loop.planned_wh.totals(day.start, day.end).items():
        charge[start] += up / 1000 / hours
        discharge[start] += down / 1000 / hours
    events = list(db.scalars(select(DrEventRow).where(DrEventRow.start < day.end)))
    # the fleet's import limit: the loop's own connection's and every site's, each lowered by its events
    connections: dict[str | None, tuple[float, float]] = {None: (loop.import_limit_kw, loop.export_limit_kw)}
    for site in db.scalars(select(SiteRow)):
        connections[site.id] = (site.import_limit_kw, site.export_limit_kw)
    points = []
    for k in range(day.intervals):
        start = day.start + k * width
        limit = 0.0
        for connection, (import_kw, _) in connections.items():
            for e in events:
                if (
                    e.site_id == connection
                    and e.start < start + width
                    and e.start + timedelta(seconds=e.duration_s) > start
                ):
                    import_kw = min(import_kw, e.import_limit_kw)
            limit += import_kw
        price = float(loop.prices.buy_eur_mwh[k]) if k < len(loop.prices.buy_eur_mwh) else None
        points.append(
            PlanPoint(
                start,
                charge.get(start, 0.0),
                discharge.get(start, 0.0),
                limit,
                sum(export_kw for _, export_kw in connections.values()),
                price,
            )
        )
    return FleetPlan(
        f"Live plan for {day.start:%Y-%m-%d} (re-planned {loop.stats.replans} times)",
        day.interval_minutes,
        points,
        limits_known=True,
    )


def schedule_ids(db: Session) -> list[int]:
    return list(db.scalars(select(ScheduleRun.id).order_by(ScheduleRun.id.desc()).limit(50)))


def fleet_plan(db: Session, schedule_id: int | None = None) -> FleetPlan | None:
    """A schedule's fleet power by interval against its site limits (lowered by demand-response events)
    and prices; without schedules, the latest settled period's trades (limits not recorded there)."""
    run = db.get(ScheduleRun, schedule_id) if schedule_id is not None else None
    if run is None and schedule_id is None:
        latest = latest_schedule_id(db)
        run = db.get(ScheduleRun, latest) if latest is not None else None
    if run is not None:
        return _schedule_plan(db, run)
    if schedule_id is not None:
        return None
    period = db.scalar(select(Period).order_by(Period.id.desc()))
    return _settled_plan(db, period) if period is not None else None


def _schedule_plan(db: Session, run: ScheduleRun) -> FleetPlan:
    hours = run.interval_minutes / 60
    energy = {
        (s, d): int(e)
        for s, d, e in db.execute(
            select(ScheduleTrade.interval_start, ScheduleTrade.direction, func.sum(ScheduleTrade.energy_wh))
            .where(ScheduleTrade.schedule_id == run.id)
            .group_by(ScheduleTrade.interval_start, ScheduleTrade.direction)
        )
    }
    job = db.get(Job, run.job_id)
    params = job.params if job is not None else {}
    import_kw = params.get("import_limit_kw")
    export_kw = params.get("export_limit_kw")
    end = run.start + timedelta(minutes=run.intervals * run.interval_minutes)
    # a day-ahead schedule plans the loop's own connection: a site's events are not its
    events = list(db.scalars(select(DrEventRow).where(DrEventRow.start < end, DrEventRow.site_id.is_(None))))
    prices = {
        p.utc: p.eur_mwh
        for p in db.scalars(
            select(PricePoint).where(
                PricePoint.utc >= run.start.replace(minute=0, second=0, microsecond=0), PricePoint.utc < end
            )
        )
    }
    points = []
    for i in range(run.intervals):
        start = run.start + timedelta(minutes=i * run.interval_minutes)
        limit = None if import_kw is None else float(import_kw)
        for e in events:
            if e.start <= start < e.start + timedelta(seconds=e.duration_s) and limit is not None:
                limit = min(limit, e.import_limit_kw)
        points.append(
            PlanPoint(
                start,
                energy.get((start, "charge"), 0) / 1000 / hours,
                energy.get((start, "discharge"), 0) / 1000 / hours,
                limit,
                None if export_kw is None else float(export_kw),
                prices.get(start.replace(minute=0, second=0, microsecond=0)),
            )
        )
    return FleetPlan(
        f"schedule {run.id} ({run.status}, V2G {'on' if run.v2g else 'off'})",
        run.interval_minutes,
        points,
        import_kw is not None,
        schedule_id=run.id,
        kpis=dict(run.kpis),
    )


def _settled_plan(db: Session, period: Period) -> FleetPlan:
    cells: dict[datetime, dict[str, Any]] = defaultdict(lambda: {"charge": 0, "discharge": 0, "price": None})
    for start, direction, total, price in db.execute(
        select(
            SettledTradeRow.interval_start,
            SettledTradeRow.direction,
            func.sum(SettledTradeRow.energy_wh),
            func.max(SettledTradeRow.grid_price),
        )
        .where(SettledTradeRow.period_id == period.id)
        .group_by(SettledTradeRow.interval_start, SettledTradeRow.direction)
    ):
        cells[start][direction] = int(total)
        if direction == "charge" or cells[start]["price"] is None:
            cells[start]["price"] = int(price)
    starts = sorted(cells)
    minutes = _interval_minutes(starts, period)
    hours = minutes / 60
    points = [
        PlanPoint(
            s,
            cells[s]["charge"] / 1000 / hours,
            cells[s]["discharge"] / 1000 / hours,
            None,
            None,
            None if cells[s]["price"] is None else cells[s]["price"] * 1000 / UNIT,
        )
        for s in starts
    ]
    return FleetPlan(
        f"settled period {period.id} ({period.status})", minutes, points, False, period_id=period.id
    )


# --- live operations ------------------------------------------------------------------------------------

#: A station whose last message is younger than this counts as online (stations send heartbeats).
ONLINE_WITHIN = timedelta(minutes=5)


@dataclass(frozen=True)
class StationRow:
    id: str
    ocpp_version: str
    can_discharge: bool
    last_seen: datetime | None
    boots: int
    open_transactions: int

    def online(self, now: datetime) -> bool:
        return self.last_seen is not None and now - self.last_seen <= ONLINE_WITHIN


@dataclass
class LiveOperations:
    stations: list[StationRow]
    profiles: list[ChargingProfileRow]
    profile_counts: dict[str, int]
    rejections: dict[str, int]
    now: datetime

    @property
    def online(self) -> int:
        return sum(1 for s in self.stations if s.online(self.now))


def live_operations(db: Session, now: datetime | None = None) -> LiveOperations | None:
    """Stations (online: a message within :data:`ONLINE_WITHIN`), the charging profiles the re-plans
    dispatched, and field data refused by kind; ``None`` where no station was ever registered."""
    stations = list(db.scalars(select(Station).order_by(Station.id)))
    if not stations:
        return None
    open_txs: dict[str, int] = {
        str(station): int(n)
        for station, n in db.execute(
            select(OcppTransaction.station_id, func.count())
            .where(OcppTransaction.ended_at.is_(None))
            .group_by(OcppTransaction.station_id)
        )
    }
    return LiveOperations(
        stations=[
            StationRow(s.id, s.ocpp_version, s.can_discharge, s.last_seen, s.boots, open_txs.get(s.id, 0))
            for s in stations
        ],
        profiles=list(
            db.scalars(select(ChargingProfileRow).order_by(ChargingProfileRow.id.desc()).limit(20))
        ),
        profile_counts={
            str(status): int(n)
            for status, n in db.execute(
                select(ChargingProfileRow.status, func.count()).group_by(ChargingProfileRow.status)
            )
        },
        rejections={
            str(kind): int(n)
            for kind, n in db.execute(
                select(FieldRejection.kind, func.count())
                .group_by(FieldRejection.kind)
                .order_by(FieldRejection.kind)
            )
        },
        now=now or datetime.now(UTC),
    )


def v2g_earned(db: Session, vehicle_id: str) -> tuple[int, int, int]:
    """What giving energy back has earned this vehicle in settled periods: the amount (base units, fees
    taken), the energy (Wh) and the number of sessions it came from."""
    amount, energy, sessions = db.execute(
        select(
            func.coalesce(func.sum(SettledTradeRow.amount), 0),
            func.coalesce(func.sum(SettledTradeRow.energy_wh), 0),
            func.count(func.distinct(SettledTradeRow.session_id)),
        ).where(SettledTradeRow.vehicle_id == vehicle_id, SettledTradeRow.direction == "discharge")
    ).one()
    return int(amount), int(energy), int(sessions)


@dataclass(frozen=True)
class Promise:
    """One thing the owner asked for, and what this session's plan (or settlement) gives."""

    asked: str
    given: str
    kept: bool | None  # None: nothing to compare


def against_settings(db: Session, detail: SessionDetail) -> list[Promise]:
    """The session's energy against its owner's word for the car (target and minimum state of charge,
    V2G opt-in, departure), interval by interval from the energy it arrived with."""
    row = detail.session
    vehicle = db.get(Vehicle, row.vehicle_id)
    if vehicle is None or row.arrival_kwh is None or not detail.rows:
        return []
    word = db.get(VehicleSettings, vehicle.id)
    capacity = vehicle.battery_kwh
    energy = lowest = row.arrival_kwh
    for r in detail.rows:
        energy += r.charge_wh / 1000 * vehicle.eta_charge - r.discharge_wh / 1000 / vehicle.eta_discharge
        lowest = min(lowest, energy)
    end_pct, low_pct = 100 * energy / capacity, 100 * lowest / capacity
    out = []
    target = word.target_soc if word is not None and word.target_soc is not None else None
    if target is None and row.target_kwh is not None:
        target = row.target_kwh / capacity
    if target is not None:
        out.append(
            Promise(
                f"full to {100 * target:.0f} %",
                f"{end_pct:.0f} % when it leaves",
                end_pct >= 100 * target - 1.0,
            )
        )
    if word is not None and word.min_soc is not None:
        floor = 100 * word.min_soc
        out.append(Promise(f"keep at least {floor:.0f} %", f"lowest {low_pct:.0f} %", low_pct >= floor - 1.0))
    discharged = sum(r.discharge_wh for r in detail.rows) / 1000
    if word is not None:
        out.append(
            Promise(
                "V2G allowed" if word.v2g else "no V2G",
                f"{discharged:.1f} kWh given back",
                True if word.v2g else discharged <= 0.001,
            )
        )
    if word is not None and (word.next_departure is not None or word.usual_departure):
        said = (
            word.next_departure.strftime("%Y-%m-%d %H:%M UTC")
            if word.next_departure is not None
            else f"usually {word.usual_departure} ({word.time_zone})"
        )
        leaves = row.departure.strftime("%Y-%m-%d %H:%M UTC") if row.departure else "not known"
        out.append(Promise(f"leaves {said}", f"planned to {leaves}", None))
    return out
