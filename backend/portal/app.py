"""Putting the portal on the API's app: its routers, its static files and its error pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from backend.portal import routes, rpc

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add the portal's pages (``/`` and ``/portal/...``), its static files (``/portal/static``) and the
    read-only JSON-RPC endpoint (``/rpc``) to ``app``. None of them is in the API's OpenAPI document."""
    app.include_router(routes.router)
    app.include_router(rpc.router)
    app.mount("/portal/static", StaticFiles(directory=STATIC), name="portal-static")
    app.add_exception_handler(routes.PortalRedirect, routes.redirect_handler)
    app.add_exception_handler(routes.PortalRefusal, routes.refusal_handler)
