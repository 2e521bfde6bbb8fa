"""Portfolio schedules: a day of many sites under grid zones, scheduled on Dask as a background job.

The body is validated at once (an unknown node or site, a NaN, a cycle of parents, an unreachable target:
422 with the error's name); the job then reports its rounds as progress in ``/jobs/{id}`` (``result``
while it runs) and, when done, the figures, the gap to the proven bound and the physics check. The
schedule itself is kept under the data directory; ``GET /portfolio/schedules/{job_id}/sessions/{id}``
reads one session's intervals from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter

from backend.api.deps import OperatorDep, PathId, PathName, SessionDep, StateDep, not_found
from backend.api.errors import named_errors
from backend.api.openapi import documented, link
from backend.api.schemas import JobPublic, PortfolioScheduleCreate
from backend.db.models import Job
from scheduler.errors import SchedulerError
from scheduler.inputs import Horizon
from scheduler.portfolio import Portfolio
from scheduler.portfolio.model import DR_COLUMNS, NODE_COLUMNS, SESSION_COLUMNS, SITE_COLUMNS

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/portfolio", tags=["portfolio"])

PORTFOLIO_ERRORS = named_errors(SchedulerError)


def portfolio_from_params(params: dict[str, Any]) -> Portfolio:
    """The :class:`Portfolio` a request body describes (raises the scheduler's named errors)."""
    body = PortfolioScheduleCreate.model_validate(params, strict=False)
    horizon = Horizon(body.start, body.intervals, body.interval_minutes)

    def frame(rows: list[Any], columns: list[str]) -> pd.DataFrame:
        return pd.DataFrame([r.model_dump() for r in rows], columns=columns)

    sessions = frame(body.sessions, list(SESSION_COLUMNS))
    for column in ("arrival", "departure"):
        sessions[column] = pd.to_datetime(sessions[column], utc=True)
    dr = frame(body.dr_events, list(DR_COLUMNS))
    dr["start"] = pd.to_datetime(dr["start"], utc=True)
    return Portfolio(
        horizon,
        frame(body.nodes, list(NODE_COLUMNS)),
        frame(body.sites, list(SITE_COLUMNS)),
        sessions,
        np.asarray(body.prices_eur_mwh, dtype=np.float64),
        dr,
        None if body.import_cap_kw is None else np.asarray(body.import_cap_kw, dtype=np.float64),
        body.degradation_eur_kwh,
    )


def schedule_path(data_dir: str, job_id: int) -> Path:
    return Path(data_dir) / "portfolio" / f"job-{job_id}.parquet"


def run_portfolio(state: Any, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    """The job: schedule on the configured Dask cluster, each round written to the job as progress."""
    from scheduler.portfolio import solve_portfolio
    from scheduler.portfolio.check import check_schedule

    portfolio = portfolio_from_params(params)

    def progress(message: str) -> None:
        with state.sessions.begin() as session:
            job = session.get_one(Job, job_id)
            job.result = {"progress": message}

    result = solve_portfolio(
        portfolio,
        workers=state.settings.dask_workers,
        scheduler=state.settings.dask_scheduler,
        tol=float(params.get("tol", 1e-4)),
        progress=progress,
    )
    schedule = result.schedule
    rows = (
        [
            np.concatenate([getattr(b, name) for b in schedule])
            for name in ("session_row", "t", "charge_kw", "discharge_kw")
        ]
        if schedule
        else [np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0)]
    )
    violations = check_schedule(portfolio, *rows, tol=1e-3)
    path = schedule_path(state.settings.data_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    result.schedule_frame(portfolio).to_parquet(path, index=False)
    figures = result.figures()
    figures["violations"] = [str(v) for v in violations[:20]]
    return figures


@router.post(
    "/schedules",
    response_model=JobPublic,
    status_code=202,
    responses=documented(
        {422: PORTFOLIO_ERRORS},
        {202: {"GetJob": link("get_job", "the portfolio job", job_id="$response.body#/id")}},
    ),
)
def create_portfolio_schedule(
    body: PortfolioScheduleCreate, state: StateDep, session: SessionDep, _: OperatorDep
) -> Job:
    """Schedule a portfolio day as a background job (poll ``/jobs/{id}``: its rounds while it runs, the
    figures when done). The tables are checked now and refused with a named error (422)."""
    params = body.model_dump(mode="json")
    portfolio_from_params(params)  # validate now, solve later
    job_id = state.runner.submit("portfolio", params)
    return session.get_one(Job, job_id)


@router.get(
    "/schedules/{job_id}/sessions/{session_id}",
    responses=documented({404: ["NotFoundError"]}),
)
def get_portfolio_session(
    job_id: PathId, session_id: PathName, state: StateDep, session: SessionDep, _: OperatorDep
) -> list[dict[str, Any]]:
    """One session's planned power per interval (UTC start, kW charge and discharge) of a finished job."""
    job = session.get(Job, job_id)
    path = schedule_path(state.settings.data_dir, job_id)
    if job is None or job.kind != "portfolio" or job.status != "succeeded" or not path.exists():
        raise not_found(f"portfolio schedule {job_id}")
    rows = pd.read_parquet(path, filters=[("session", "==", session_id)])
    if rows.empty:
        raise not_found(f"session {session_id} in portfolio schedule {job_id}")
    utc = pd.to_datetime(rows["utc"], utc=True)
    return [
        {"utc": stamp.isoformat(), "charge_kw": float(ch), "discharge_kw": float(dis)}
        for stamp, ch, dis in zip(
            utc,
            rows["charge_kw"].to_numpy(np.float64),
            rows["discharge_kw"].to_numpy(np.float64),
            strict=True,
        )
    ]
