"""What the API's background jobs do: build a problem from stored data and solve it; settle a schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.api.deps import AppState
from backend.app.prices import hourly_prices
from backend.app.settle import SettlePolicy, resume, settle_metered, settle_schedule, settler_now
from backend.db.models import DrEventRow, PlugSession, ScheduleRun, ScheduleTrade, Vehicle
from scheduler.errors import InvalidParameterError
from scheduler.index import build_index
from scheduler.inputs import DREvent, Horizon, Prices, Problem, Site
from scheduler.inputs import Session as PlugIn
from scheduler.inputs import Vehicle as Ev
from scheduler.schedule import kpis, to_trades
from scheduler.solve import solve

MAX_FLEET = 20_000


def problem_from_db(session: Session, params: dict[str, Any], max_fleet: int = MAX_FLEET) -> Problem:
    """The scheduling problem for a horizon from stored vehicles, plug-ins, prices and DR events."""
    start = datetime.fromisoformat(params["start"]).astimezone(UTC)
    horizon = Horizon(start, int(params["intervals"]), int(params["interval_minutes"]))
    end = horizon.end
    plugs = list(
        session.scalars(
            select(PlugSession)
            .where(PlugSession.arrival < end, PlugSession.departure > start)
            .order_by(PlugSession.id)
        )
    )
    if len(plugs) > max_fleet:
        raise InvalidParameterError(
            f"{len(plugs)} plug-in sessions in the horizon exceed the limit of {max_fleet}"
        )
    vehicle_ids = {p.vehicle_id for p in plugs}
    vehicles = (
        list(session.scalars(select(Vehicle).where(Vehicle.id.in_(vehicle_ids)).order_by(Vehicle.id)))
        if vehicle_ids
        else []
    )
    hourly = hourly_prices(session, start, end)
    # the fleet a day-ahead schedule plans is the loop's own connection: a site's DR events are not its
    events = list(
        session.scalars(
            select(DrEventRow)
            .where(DrEventRow.start < end, DrEventRow.site_id.is_(None))
            .order_by(DrEventRow.id)
        )
    )
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


def policy(state: AppState, params: dict[str, Any]) -> SettlePolicy:
    """The settlement policy of the server's settings, with the fee the job was submitted with."""
    fee = params.get("fee_bps")
    return SettlePolicy.from_settings(state.settings, fee_bps=None if fee is None else int(fee))


def run_resume(state: AppState, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    """Advance a stored period as far as it can go."""
    period_id = int(params["period_id"])
    result = resume(state.platform, period_id, policy(state, params))
    return {"period_id": period_id, "status": str(result.status)}


def run_metered_settlement(state: AppState, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    """A day's metered energy settled (the use case of `v2g settle --metered`), and its energy equation."""
    from backend.audit.energy import energy_balance

    period_id = int(str(params["date"]).replace("-", ""))
    metered, period, status = settle_metered(
        state.platform, period_id, policy(state, params), now=settler_now()
    )
    with state.chain_lock:
        state.platform.sync_events()
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
    """A stored schedule settled: the use case of `v2g settle` (same tariff, fee, escrow and job)."""
    period_id = params.get("period_id")
    result = settle_schedule(
        state.platform,
        int(params["schedule_id"]),
        policy(state, params),
        period_id=int(period_id) if period_id else None,
    )
    return {"period_id": result.period_id, "status": str(result.status)}
