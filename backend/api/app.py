"""The FastAPI app factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from backend.api.deps import ApiError, AppState
from backend.api.jobs import JobRunner
from backend.api.routes import (
    audit,
    dr_events,
    escrow,
    health,
    jobs,
    owners,
    periods,
    prices,
    schedules,
    sessions,
)
from backend.api.schemas import ErrorPublic
from backend.api.work import run_resume, run_schedule, run_settlement
from backend.chain.client import Chain, connect
from backend.chain.deploy import Actors, deploy
from backend.chain.errors import ContractRevertError
from backend.config import Settings
from backend.db.session import session_factory
from backend.settlement.period import PeriodBuildError
from backend.settlement.tariff import TariffError
from scheduler.errors import SchedulerError

logger = logging.getLogger(__name__)


def build_state(settings: Settings, chain: Chain | None = None) -> AppState:
    sessions = session_factory(settings.database_url)
    chain = chain or connect(settings.chain)
    record_path = (
        None if chain.kind == "eth-tester" else Path(settings.deployments_dir) / f"{chain.kind}.json"
    )
    record = deploy(chain, liveness_s=settings.liveness_s, record_path=record_path)
    state_box: dict[str, AppState] = {}
    runner = JobRunner(
        sessions,
        {
            "schedule": lambda p, j: run_schedule(state_box["s"], p, j),
            "settle": lambda p, j: run_settlement(state_box["s"], p, j),
            "resume": lambda p, j: run_resume(state_box["s"], p, j),
        },
    )
    state = AppState(settings, sessions, chain, record, Actors.of(chain), runner)
    state_box["s"] = state
    return state


def _error(status: int, name: str, detail: str) -> JSONResponse:
    """A named error. 422s keep FastAPI's validation-error shape (``detail`` is a list) so that one
    documented schema covers them all; ``error`` carries the name."""
    if status == 422:
        content = {"error": name, "detail": [{"loc": ["body"], "msg": detail, "type": name}]}
    else:
        content = {"error": name, "detail": detail}
    return JSONResponse(status_code=status, content=content)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "missing or unknown API key"},
    403: {"model": ErrorPublic, "description": "the key's role may not do this"},
    404: {"model": ErrorPublic, "description": "no such resource"},
    409: {
        "model": ErrorPublic,
        "description": "conflicts with the stored state or the contract (named error)",
    },
}


def create_app(settings: Settings | None = None, *, chain: Chain | None = None) -> FastAPI:
    """The app; the chain and database connect at start-up (never at import)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings, chain)
        app.state.v2g = state
        resumed = state.runner.resume_interrupted()
        if resumed:
            logger.info("resuming %d job(s) left unfinished: %s", len(resumed), resumed)
        try:
            yield
        finally:
            state.runner.shutdown()
            if chain is None:
                state.chain.close()

    app = FastAPI(
        title="v2g-settle",
        version="0.1.0",
        summary="V2G scheduling and escrowed on-chain settlement for an EV aggregator.",
        description="Energy in whole Wh, money in token base units (strings), times in UTC. "
        "Authenticate with an `X-API-Key` header; roles: operator, owner (own data only), "
        "auditor (read-only audit).",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    for module in (health, owners, sessions, prices, dr_events, schedules, periods, escrow, audit, jobs):
        app.include_router(module.router)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.name, exc.detail)

    async def named_input_error(_: Request, exc: Exception) -> JSONResponse:
        """Scheduling, tariff and period errors: the input is refused, named, and nothing changed."""
        return _error(422, type(exc).__name__, str(exc))

    for refused in (SchedulerError, PeriodBuildError, TariffError):
        app.add_exception_handler(refused, named_input_error)

    @app.exception_handler(ContractRevertError)
    async def revert(_: Request, exc: ContractRevertError) -> JSONResponse:
        return _error(409, exc.name, str(exc))

    @app.exception_handler(IntegrityError)
    async def integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        return _error(409, "Conflict", str(exc.orig))

    return app
