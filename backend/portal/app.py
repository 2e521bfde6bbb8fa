"""Putting the portal on the API's app: its routers, its static files and its error pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

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


Handler = Callable[[Request, Exception], Awaitable[Response]]


def wants_page(request: Request) -> bool:
    """A portal page, or a browser asking for one: an error is a page with a way back, not JSON."""
    path = request.url.path
    return path == "/" or path.startswith("/portal") or "text/html" in request.headers.get("accept", "")


def error_pages(app: FastAPI, api_validation: Handler, api_http: Handler) -> None:
    """Bad query parameters and unknown pages answer a portal page naming the error (with its status and
    a way back) where a person asked; the API's JSON errors everywhere else."""

    async def validation(request: Request, exc: Exception) -> Response:
        if not wants_page(request):
            return await api_validation(request, exc)
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        detail = (
            f"RequestValidationError: {where}: {first.get('msg')}"
            if where
            else f"RequestValidationError: {first.get('msg')}"
        )
        return routes.page(
            request, "error.html", None, status=422, title="That address is not valid", detail=detail
        )

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not wants_page(request) or exc.status_code not in (404, 405):
            return await api_http(request, exc)
        title = "No such page" if exc.status_code == 404 else "Not allowed here"
        name = "NotFoundError" if exc.status_code == 404 else "MethodNotAllowedError"
        return routes.page(
            request,
            "error.html",
            None,
            status=exc.status_code,
            title=title,
            detail=f"{name}: {request.url.path}",
        )

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
