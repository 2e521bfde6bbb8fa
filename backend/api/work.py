"""What the API's background jobs do: build a problem from stored data and solve it; settle a schedule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.api.deps import AppState
from backend.audit.indexer import EventIndexer
from backend.db.models import DrEventRow, Job, PlugSession, PricePoint, ScheduleRun, ScheduleTrade, Vehicle
from backend.metering.reach import meter_for
from backend.metering.simulated import registers_of
from backend.settlement.job import SettlementJob
from backend.settlement.tariff import Tariff
from scheduler.errors import InvalidParameterError
from scheduler.index import build_index
from scheduler.inputs import DREvent, Horizon, Prices, Problem, Site
from scheduler.inputs import Session as PlugIn
from scheduler.inputs import Vehicle as Ev
from scheduler.schedule import Direction, Trade, kpis, to_trades
from scheduler.solve import solve

MAX_FLEET = 20_000


def problem_from_db(session: Session, params: dict[str, Any], max_fleet: int = MAX_FLEET) -> Problem:
    """The scheduling problem for a horizon from stored vehicles, plug-ins, prices and DR events."""
    start = datetime.fromisoformat(params["start"]).astimezone(UTC)
    horizon = Horizon(start, int(params["intervals"]), int(params["interval_minutes"]))
    end = horizon.end
    plugs = list(
        session.scalars(select(PlugSession).where(PlugSession.arrival < end, PlugSession.departure > start))
    )
    if len(plugs) > max_fleet:
        raise InvalidParameterError(
            f"{len(plugs)} plug-in sessions in the horizon exceed the limit of {max_fleet}"
        )
    vehicle_ids = {p.vehicle_id for p in plugs}
    vehicles = (
        list(session.scalars(select(Vehicle).where(Vehicle.id.in_(vehicle_ids)))) if vehicle_ids else []
    )
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    prices = list(
        session.scalars(
            select(PricePoint)
            .where(PricePoint.utc >= first_hour, PricePoint.utc < end)
            .order_by(PricePoint.utc)
        )
    )
    hourly = pd.Series(
        [p.eur_mwh for p in prices], index=pd.DatetimeIndex([p.utc for p in prices]), dtype=float
    )
    events = list(session.scalars(select(DrEventRow).where(DrEventRow.start < end)))
    spread = float(params.get("sell_spread_eur_mwh", 0.0))
    return Problem(
        horizon=horizon,
        vehicles=tuple(
            Ev(
                v.id,
                v.owner_id,
                v.battery_kwh,
                v.charge_kw,
                v.discharge_kw,
                v.soc_min,
                v.soc_max,
                v.eta_charge,
                v.eta_discharge,
            )
            for v in vehicles
        ),
        sessions=tuple(
            PlugIn(p.id, p.vehicle_id, p.arrival, p.departure, p.arrival_kwh, p.target_kwh) for p in plugs
        ),
        site=Site.build(horizon, float(params["import_limit_kw"]), float(params["export_limit_kw"])),
        prices=Prices.from_hourly(horizon, hourly, spread),
        dr_events=tuple(
            DREvent(e.id, e.start, timedelta(seconds=e.duration_s), e.import_limit_kw)
            for e in events
            if e.start + timedelta(seconds=e.duration_s) > start
        ),
        degradation_eur_kwh=float(params.get("degradation_eur_kwh", 0.0)),
    )


def run_schedule(state: AppState, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    with state.sessions() as session:
        problem = problem_from_db(session, params, state.settings.max_fleet)
    schedule = solve(problem, v2g=bool(params.get("v2g", True)), mip_gap=float(params.get("mip_gap", 1e-4)))
    idx = build_index(problem, check_targets=False)
    mask = pd.Series(False, index=range(problem.horizon.intervals)).to_numpy()
    for event in problem.dr_events:
        mask |= event.mask(problem.horizon)
    figures = kpis(schedule, idx, mask).as_dict()
    trades = to_trades(schedule)
    with state.sessions.begin() as session:
        existing = session.scalar(select(ScheduleRun).where(ScheduleRun.job_id == job_id))
        if existing is not None:  # a re-run after a restart: replace, never duplicate
            session.execute(delete(ScheduleTrade).where(ScheduleTrade.schedule_id == existing.id))
            session.delete(existing)
            session.flush()
        run = ScheduleRun(
            job_id=job_id,
            start=problem.horizon.start,
            intervals=problem.horizon.intervals,
            interval_minutes=problem.horizon.interval_minutes,
            v2g=bool(params.get("v2g", True)),
            status=schedule.status,
            mip_gap=schedule.mip_gap,
            objective_eur=schedule.objective_eur,
            kpis=figures,
        )
        session.add(run)
        session.flush()
        session.add_all(
            ScheduleTrade(
                schedule_id=run.id,
                owner_id=t.owner,
                vehicle_id=t.vehicle_id,
                session_id=t.session_id,
                interval_start=t.interval_start,
                direction=t.direction.value,
                energy_wh=t.energy_wh,
            )
            for t in trades
        )
        schedule_id = run.id
    return {
        "schedule_id": schedule_id,
        "status": schedule.status,
        "objective_eur": schedule.objective_eur,
        "mip_gap": schedule.mip_gap,
        "trades": len(trades),
        "kpis": figures,
    }


def settlement_job(state: AppState, meter_signer: Callable[..., bytes] | None = None) -> SettlementJob:
    """The settlement job on the app's chain; local chains travel over the challenge window. The period's
    root is signed by the metering service (``meter_signer``), never with a key in this process."""
    return SettlementJob(
        state.sessions,
        state.chain,
        state.record,
        state.actors,
        batch_size=state.settings.claim_batch,
        travel_time=state.chain.kind in ("eth-tester", "anvil"),
        meter_signer=meter_signer,
    )


def run_resume(state: AppState, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    """Advance a stored period as far as it can go."""
    period_id = int(params["period_id"])
    with state.chain_lock:
        return {"period_id": period_id, "status": str(settlement_job(state).run(period_id))}


def run_metered_settlement(state: AppState, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    """A day's metered energy settled (``settle_metered_day``), and the day's energy equation."""
    from backend.audit.energy import energy_balance
    from backend.operations.run import settle_metered_day

    period_id = int(str(params["date"]).replace("-", ""))
    with state.chain_lock:
        metered, period, status = settle_metered_day(
            state.platform, period_id, int(params["fee_bps"]), now=datetime.now(UTC)
        )
        EventIndexer(state.sessions, state.chain, state.record.settlement, state.record.block_number).sync()
    with state.sessions() as session:
        balance = energy_balance(session, period_id, ledger=metered.ledger)
    return {
        "period_id": period_id,
        "status": str(status),
        "entries": period.entry_count,
        "total_credit": period.total_credit,
        "total_debit": period.total_debit,
        "energy": balance.equation(),
        "balances": balance.ok,
    }


def run_settlement(state: AppState, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    schedule_id = int(params["schedule_id"])
    with state.sessions() as session:
        run = session.get(ScheduleRun, schedule_id)
        if run is None:
            raise KeyError(f"no schedule {schedule_id}")
        planned = session.get_one(Job, run.job_id).params
        rows = list(session.scalars(select(ScheduleTrade).where(ScheduleTrade.schedule_id == schedule_id)))
        horizon = Horizon(run.start, run.intervals, run.interval_minutes)
        first_hour = run.start.replace(minute=0, second=0, microsecond=0)
        stored = list(
            session.scalars(
                select(PricePoint)
                .where(PricePoint.utc >= first_hour, PricePoint.utc < horizon.end)
                .order_by(PricePoint.utc)
            )
        )
    # priced as the schedule was planned: sell = buy − the spread it was planned with (as the CLI does)
    prices = Prices.from_hourly(
        horizon,
        pd.Series([p.eur_mwh for p in stored], index=pd.DatetimeIndex([p.utc for p in stored]), dtype=float),
        float(planned.get("sell_spread_eur_mwh", 0.0)),
    )
    stamps = list(horizon.timestamps.to_pydatetime())
    start, end = horizon.start, horizon.end
    tariff = Tariff.from_market(
        stamps, list(prices.buy_eur_mwh), list(prices.sell_eur_mwh), int(params.get("fee_bps", 0))
    )
    trades = [
        Trade(r.owner_id, r.vehicle_id, r.session_id, r.interval_start, Direction(r.direction), r.energy_wh)
        for r in rows
    ]
    period_id = int(params.get("period_id") or start.strftime("%Y%m%d"))
    registers = registers_of(trades, stamps, end, tariff)
    # the simulated schedule's registers are signed by the metering service (V2G_METER_URL, or one started
    # for this settlement on a local chain): this process never holds the meter key
    with meter_for(state.platform, tariff.fee_bps) as (meter, _), state.chain_lock:
        signer = meter.simulated(registers)
        job = settlement_job(state, signer)
        job.build(period_id, start, end, trades, tariff, presign=signer)
        status = job.run(period_id)
        EventIndexer(state.sessions, state.chain, state.record.settlement, state.record.block_number).sync()
    return {"period_id": period_id, "status": str(status)}
