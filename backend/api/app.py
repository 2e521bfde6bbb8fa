"""The FastAPI app factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from backend.api.deps import AppState, chain_consistent
from backend.api.errors import (
    ApiError,
    BodyGuardMiddleware,
    CatchAllMiddleware,
    api_error_handler,
    error_response,
    http_error_handler,
    named_input_error_handler,
    validation_error_handler,
)
from backend.api.jobs import JobRunner
from backend.api.market_clock import MarketClock, run_fetch_prices, run_import_prices
from backend.api.openapi import complete
from backend.api.routes import (
    audit,
    dr_events,
    escrow,
    health,
    jobs,
    metrics,
    owners,
    periods,
    portfolio,
    prices,
    schedules,
    sessions,
)
from backend.api.routes.portfolio import run_portfolio
from backend.api.work import run_metered_settlement, run_resume, run_schedule, run_settlement
from backend.app.settle import open_platform
from backend.chain.client import Chain
from backend.chain.errors import ContractRevertError
from backend.config import Settings
from backend.metering.frames import FrameChainError
from backend.metrics import Live
from backend.platform import (
    ChainMismatchError,
    MissingKeysError,
    NoDeploymentError,
    PlatformError,
    UnregisteredOwnerError,
    WrongSignerError,
)
from backend.portal import install as install_portal
from backend.portal.app import error_pages as portal_error_pages
from backend.settlement.period import PeriodBuildError
from backend.settlement.tariff import TariffError
from scheduler.errors import SchedulerError

logger = logging.getLogger(__name__)

#: The status of each refusal of the service layer: the server's own state (503) or the request's (409).
PLATFORM_STATUS: dict[type[PlatformError], int] = {
    ChainMismatchError: 503,
    MissingKeysError: 503,
    WrongSignerError: 503,
    NoDeploymentError: 503,
    UnregisteredOwnerError: 409,
}


def build_state(
    settings: Settings, chain: Chain | None = None, live: Callable[[], Live | None] | None = None
) -> AppState:
    """Open the platform (the server is the embedded chain's writer); deploy when the database has no
    deployment yet. A chain that does not match the database leaves the app up and degraded: /health says
    why, and every operation that needs the chain answers 503 ``ChainMismatchError``."""
    platform = open_platform(settings, chain=chain, write=True, strict=False)
    try:
        if platform.mismatch is None:
            platform.ensure_deployment(liveness_s=settings.liveness_s)
        else:
            logger.error("the chain does not match the database: %s", platform.mismatch)
    except BaseException:
        platform.close()
        raise
    state_box: dict[str, AppState] = {}
    runner = JobRunner(
        platform.sessions,
        {
            "schedule": lambda p, j: run_schedule(state_box["s"], p, j),
            "settle": lambda p, j: run_settlement(state_box["s"], p, j),
            "resume": lambda p, j: run_resume(state_box["s"], p, j),
            "settle_metered": lambda p, j: run_metered_settlement(state_box["s"], p, j),
            "portfolio": lambda p, j: run_portfolio(state_box["s"], p, j),
            "import_prices": lambda p, j: run_import_prices(state_box["s"], p, j),
            "fetch_prices": lambda p, j: run_fetch_prices(state_box["s"], p, j),
        },
    )
    state = AppState(settings, platform, runner)
    if live is not None:
        state.live = live
    state_box["s"] = state
    return state


def create_app(
    settings: Settings | None = None,
    *,
    chain: Chain | None = None,
    live: Callable[[], Live | None] | None = None,
) -> FastAPI:
    """The app; the chain and database connect at start-up (never at import). ``live``: the CSMS and
    operations loop of the process serving it (`v2g operate`), for ``/metrics``."""
    settings = settings or Settings()

    users = [0]  # lifespans running: a second one (a test harness's own) shares the first one's state

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if users[0]:
            users[0] += 1
            try:
                yield
            finally:
                users[0] -= 1
            return
        state = build_state(settings, chain, live)
        app.state.v2g = state
        users[0] = 1
        clock = None
        try:
            if state.platform.mismatch is None:
                resumed = state.runner.resume_interrupted()
                if resumed:
                    logger.info("resuming %d job(s) left unfinished: %s", len(resumed), resumed)
                if settings.service_jobs:
                    clock = MarketClock(state)
                    clock.start()
            yield
        finally:
            users[0] = 0
            if clock is not None:
                clock.stop()
            state.runner.shutdown()
            state.platform.close()

    app = FastAPI(
        title="v2g-settle",
        version="0.1.0",
        summary="V2G scheduling and escrowed on-chain settlement for an EV aggregator.",
        description="Energy in whole Wh, money in token base units (strings), times in UTC. "
        "Authenticate with an `X-API-Key` header; roles: operator, owner (own data only), "
        'auditor (read-only audit). Every error is `{"error": name, "detail": ...}` with the '
        "statuses and names each operation documents; request bodies are at most "
        f"{settings.max_body_bytes} bytes.",
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
    )
    routers = (
        health,
        metrics,
        owners,
        sessions,
        prices,
        dr_events,
        schedules,
        portfolio,
        periods,
        escrow,
        audit,
        jobs,
    )
    chain_derived = {periods, escrow, audit}  # every answer here reads or reflects the chain
    for module in routers:
        app.include_router(
            module.router, dependencies=[Depends(chain_consistent)] if module in chain_derived else []
        )
    app.include_router(periods.metered_router, dependencies=[Depends(chain_consistent)])
    install_portal(app)  # the web portal's pages, static files and read-only /rpc (none in the OpenAPI)

    app.add_exception_handler(ApiError, api_error_handler)
    # the API's JSON errors, and the portal's error pages where a person asked for a page
    portal_error_pages(app, validation_error_handler, http_error_handler)
    for refused in (SchedulerError, PeriodBuildError, TariffError):
        app.add_exception_handler(refused, named_input_error_handler)

    @app.exception_handler(FrameChainError)
    async def frame_chain_error(_: Request, exc: FrameChainError) -> JSONResponse:
        return error_response(409, "FrameChainError", str(exc))

    @app.exception_handler(PlatformError)
    async def platform_error(_: Request, exc: PlatformError) -> JSONResponse:
        status = PLATFORM_STATUS.get(type(exc), 409)
        return error_response(status, type(exc).__name__, str(exc))

    @app.exception_handler(ContractRevertError)
    async def revert(_: Request, exc: ContractRevertError) -> JSONResponse:
        return error_response(409, exc.name, str(exc))

    @app.exception_handler(IntegrityError)
    async def integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        logger.info("refused by the database: %s", exc.orig)
        return error_response(409, "ConflictError", "refused by the database: a concurrent change conflicts")

    # The last added is the outermost: the catch-all turns any unexpected exception into a JSON 500
    # without closing the connection; the body guard answers 413 for an oversized body and 400 for one
    # nested too deep, before anything parses it.
    app.add_middleware(BodyGuardMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)

    def openapi() -> dict[str, Any]:
        return complete(app)

    app.openapi = openapi  # type: ignore[method-assign]
    return app
