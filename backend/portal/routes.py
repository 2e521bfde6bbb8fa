"""The portal's pages: sign-in, the owner's, the operator's and the auditor's pages, period entries, and
in-browser verification. Every page reads through the same service layer as the API; roles are the API's
(an owner sees only its own data, and another owner's page, entry or session is refused the same way
whether it exists or not)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import math
import pathlib
import re
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from backend.api.deps import AppState, PathId, PathName, SessionDep, StateDep
from backend.api.security import Role, hash_key
from backend.app.vehicles import DEFAULT_TIME_ZONE, InvalidSettingsError, settings_of, update_settings
from backend.audit.energy import energy_balance
from backend.db.models import ApiKey, Owner, Period, PeriodEntry, Vehicle, VehicleSettings
from backend.metering.frames import FrameChainError
from backend.platform import PlatformError
from backend.portal import queries
from backend.portal.config import PortalSettings
from backend.portal.format import FILTERS
from backend.portal.session import (
    PortalSession,
    PortalUser,
    SessionCodec,
    csrf_ok,
    end_session,
    new_session,
    session_secret,
    user_of,
)
from backend.portal.session import handle as portal_handle
from backend.portal.session import sign_ins as portal_sign_ins
from backend.settlement.period import LEAF_TYPES

logger = logging.getLogger(__name__)

HERE = pathlib.Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(FILTERS)

router = APIRouter(include_in_schema=False, tags=["portal"])

VENDOR = ("ethers.umd.min.js", "chart.umd.min.js", "htmx.min.js", "merkle-tree.min.js")
OWN_SCRIPTS = ("portal.js", "verify.js")


@cache
def integrity(name: str) -> str:
    """The SHA-384 of a static script, for its ``integrity`` attribute."""
    path = HERE / "static" / ("vendor/" + name if name in VENDOR else name)
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


def script_json(data: Any) -> str:
    """JSON for a ``<script type="application/json">`` block (no ``</script>`` can end it early)."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- sessions ---------------------------------------------------------------------------------------------


def codec(state: AppState) -> SessionCodec:
    made: SessionCodec | None = getattr(state, "_portal_codec", None)
    if made is None:
        settings = PortalSettings()
        secret = session_secret(settings.session_secret, pathlib.Path(state.settings.data_dir))
        made = SessionCodec(secret, max_age_s=settings.session_max_age_s, secure=settings.secure_cookies)
        state._portal_codec = made  # type: ignore[attr-defined]
    return made


class PortalRedirect(Exception):  # noqa: N818 - a control-flow signal, not an error
    def __init__(self, location: str) -> None:
        self.location = location


class PortalRefusal(Exception):  # noqa: N818
    def __init__(self, status: int, title: str, detail: str, user: PortalUser | None = None) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.user = user


async def redirect_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PortalRedirect)
    return RedirectResponse(exc.location, status_code=303)


async def refusal_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PortalRefusal)
    return page(request, "error.html", exc.user, status=exc.status, title=exc.title, detail=exc.detail)


def current_user(request: Request, state: StateDep, db: SessionDep) -> PortalUser:
    user = user_of(db, codec(state).load(request))
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise PortalRedirect("/?next=" + quote(target, safe=""))
    return user


UserDep = Annotated[PortalUser, Depends(current_user)]


def role_in(user: PortalUser, *roles: Role) -> None:
    if user.role not in roles:
        raise PortalRefusal(403, "Not for this role", f"a {user.role} key may not see this page", user)


def see_owner(user: PortalUser, owner_id: str) -> None:
    """Refused the same way whether ``owner_id`` exists or not: owner ids cannot be probed."""
    if not user.may_see_owner(owner_id):
        raise PortalRefusal(
            403, "Not yours", "owners see only their own vehicles, sessions and statements", user
        )


def home_of(user: PortalUser) -> str:
    if user.role is Role.OWNER:
        return f"/portal/owners/{quote(user.owner_id or '', safe='')}"
    return "/portal/operator" if user.role is Role.OPERATOR else "/portal/auditor"


def safe_next(target: str | None) -> str | None:
    """Only a path on this site (no scheme, no host, no ``//``): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


# --- rendering --------------------------------------------------------------------------------------------


def page(
    request: Request,
    name: str,
    user: PortalUser | None,
    *,
    status: int = 200,
    csrf: str | None = None,
    connect_any: bool = False,
    **context: Any,
) -> HTMLResponse:
    state: AppState = request.app.state.v2g
    context.update(
        user=user,
        csrf=csrf or (user.csrf if user else ""),
        integrity=integrity,
        chain_kind=state.chain.kind,
        degraded=state.platform.mismatch,
    )
    response = templates.TemplateResponse(request, name, context, status_code=status)
    secure_headers(response, connect_any=connect_any)
    return response


def secure_headers(response: Response, *, connect_any: bool = False) -> None:
    connect = "'self' http: https:" if connect_any else "'self'"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        f"connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
        "object-src 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"


# --- sign-in ----------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def index(request: Request, state: StateDep, db: SessionDep, next: str | None = None) -> Response:
    """Signed in: the role's home page; otherwise the sign-in form."""
    sessions = codec(state)
    session = sessions.load(request)
    user = user_of(db, session)
    if user is not None:
        return RedirectResponse(safe_next(next) or home_of(user), status_code=303)
    if session is None:
        session = new_session()
    response = page(request, "sign_in.html", None, csrf=session.csrf, next=safe_next(next) or "")
    sessions.store(response, session)
    return response


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request,
    state: StateDep,
    db: SessionDep,
    api_key: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    sessions = codec(state)
    session = sessions.load(request)
    if not csrf_ok(request, session, csrf):
        fresh = new_session()
        response = page(
            request,
            "sign_in.html",
            None,
            status=400,
            csrf=fresh.csrf,
            next=safe_next(next) or "",
            error="The form expired or did not come from this site: sign in again.",
        )
        sessions.store(response, fresh)
        return response
    key = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(api_key.strip()))) if api_key else None
    if key is None:
        assert session is not None
        response = page(
            request,
            "sign_in.html",
            None,
            status=401,
            csrf=session.csrf,
            next=safe_next(next) or "",
            error="Unknown API key.",
        )
        return response
    signed = new_session(key, db, max_age_s=sessions.max_age_s)  # a new CSRF token with every sign-in
    user = user_of(db, signed)
    assert user is not None
    redirect = RedirectResponse(safe_next(next) or home_of(user), status_code=303)
    sessions.store(redirect, signed)
    return redirect


@router.post("/sign-out")
def sign_out(
    request: Request, state: StateDep, db: SessionDep, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    sessions = codec(state)
    session = sessions.load(request)
    if not csrf_ok(request, session, csrf):
        # not a silent no-op: say why, and stay signed in (a cross-site form must not sign anyone out)
        raise PortalRefusal(
            403,
            "Not signed out",
            "the sign-out form expired or did not come from this site: sign out again from this page",
            user_of(db, session),
        )
    end_session(db, session)
    response = RedirectResponse("/", status_code=303)
    sessions.clear(response)
    return response


@router.get("/portal/sign-ins", response_class=HTMLResponse)
def sign_ins_page(request: Request, state: StateDep, db: SessionDep, user: UserDep) -> Response:
    """The sign-ins still open with this key (an owner: with any of their keys), this one marked; any
    other can be ended here."""
    session = codec(state).load(request)
    assert session is not None and session.sid is not None
    rows = portal_sign_ins(db, session)
    return page(request, "sign_ins.html", user, rows=rows, this=portal_handle(session.sid))


@router.post("/portal/sign-ins/{handle}/end")
def end_sign_in(
    request: Request,
    state: StateDep,
    db: SessionDep,
    user: UserDep,
    handle: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    require_csrf(request, state, user, csrf)
    session = codec(state).load(request)
    assert session is not None
    for found, row in portal_sign_ins(db, session):
        if found == handle:
            row.ended_at = datetime.now(UTC)
            db.commit()
            raise PortalRedirect("/portal/sign-ins")
    raise PortalRefusal(404, "No such sign-in", f"no open sign-in {handle} of yours", user)


def require_csrf(request: Request, state: AppState, user: PortalUser, token: str | None) -> None:
    session: PortalSession | None = codec(state).load(request)
    if not csrf_ok(request, session, token or request.headers.get("x-csrf-token")):
        raise PortalRefusal(403, "Refused", "the form expired or did not come from this site", user)


# --- owners -----------------------------------------------------------------------------------------------


def owner_or_refuse(db: SessionDep, user: PortalUser, owner_id: str) -> Owner:
    see_owner(user, owner_id)
    owner = db.get(Owner, owner_id)
    if owner is None:
        raise PortalRefusal(404, "No such owner", f"no owner {owner_id}", user)
    return owner


@router.get("/portal/owners/{owner_id}", response_class=HTMLResponse)
def owner_page(
    request: Request, owner_id: PathName, state: StateDep, db: SessionDep, user: UserDep
) -> Response:
    role_in(user, Role.OWNER, Role.OPERATOR)
    owner = owner_or_refuse(db, user, owner_id)
    standing = None
    problem = None
    try:
        standing = queries.credit_of(state.platform, owner_id, state.settings.fee_bps)
        _address, statement = queries.statement_rows(db, state.platform, owner_id)
    except PlatformError as exc:
        problem = f"{type(exc).__name__}: {exc}"
        statement = []
    return page(
        request,
        "owner.html",
        user,
        owner=owner,
        vehicles=queries.owner_vehicles(db, owner_id),
        sessions=queries.owner_sessions(db, owner_id),
        statement=statement,
        standing=standing,
        problem=problem,
    )


def _vehicle_of(db: SessionDep, user: PortalUser, owner_id: str, vehicle_id: str) -> tuple[Owner, Vehicle]:
    role_in(user, Role.OWNER, Role.OPERATOR)
    owner = owner_or_refuse(db, user, owner_id)
    vehicle = db.get(Vehicle, vehicle_id)
    if vehicle is None or vehicle.owner_id != owner.id:
        raise PortalRefusal(
            404, "No such vehicle", f"{owner_id} has no registered vehicle {vehicle_id}", user
        )
    return owner, vehicle


def _settings_form(settings: VehicleSettings) -> dict[str, Any]:
    """The stored settings as the form shows them: local times in the settings' zone, percentages."""
    zone = ZoneInfo(settings.time_zone or DEFAULT_TIME_ZONE)
    nxt = settings.next_departure
    return {
        "usual_departure": settings.usual_departure or "",
        "time_zone": settings.time_zone or DEFAULT_TIME_ZONE,
        "next_departure": nxt.astimezone(zone).strftime("%Y-%m-%dT%H:%M") if nxt else "",
        "target_soc": "" if settings.target_soc is None else f"{settings.target_soc * 100:g}",
        "min_soc": "" if settings.min_soc is None else f"{settings.min_soc * 100:g}",
        "v2g": settings.v2g,
    }


@router.get("/portal/owners/{owner_id}/vehicles/{vehicle_id}/settings", response_class=HTMLResponse)
def vehicle_settings_page(
    request: Request, owner_id: PathName, vehicle_id: PathName, db: SessionDep, user: UserDep
) -> Response:
    """A vehicle's settings (the API's ``/vehicles/{id}/settings``), as a form."""
    owner, vehicle = _vehicle_of(db, user, owner_id, vehicle_id)
    form = _settings_form(settings_of(db, vehicle))
    saved = request.query_params.get("saved") == "1"
    return page(
        request,
        "vehicle_settings.html",
        user,
        owner=owner,
        vehicle=vehicle,
        form=form,
        saved=saved,
        earned=queries.v2g_earned(db, vehicle.id),
    )


@router.post("/portal/owners/{owner_id}/vehicles/{vehicle_id}/settings", response_class=HTMLResponse)
def vehicle_settings_save(
    request: Request,
    owner_id: PathName,
    vehicle_id: PathName,
    state: StateDep,
    db: SessionDep,
    user: UserDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    usual_departure: Annotated[str, Form(max_length=5)] = "",
    time_zone: Annotated[str, Form(max_length=64)] = DEFAULT_TIME_ZONE,
    next_departure: Annotated[str, Form(max_length=32)] = "",
    target_soc: Annotated[str, Form(max_length=8)] = "",
    min_soc: Annotated[str, Form(max_length=8)] = "",
    v2g: Annotated[str, Form(max_length=1)] = "",
) -> Response:
    """Save the form through the same rule as the API (``backend/app/vehicles.py``); a refusal is shown
    by name on the form, with what was typed, and nothing is stored."""
    owner, vehicle = _vehicle_of(db, user, owner_id, vehicle_id)
    require_csrf(request, state, user, csrf)
    typed = {
        "usual_departure": usual_departure,
        "time_zone": time_zone.strip() or DEFAULT_TIME_ZONE,
        "next_departure": next_departure,
        "target_soc": target_soc,
        "min_soc": min_soc,
        "v2g": v2g == "1",
    }
    try:
        changes = _settings_changes(typed)
        update_settings(db, vehicle, changes)
        db.commit()
    except InvalidSettingsError as exc:
        db.rollback()
        return page(
            request,
            "vehicle_settings.html",
            user,
            status=422,
            owner=owner,
            vehicle=vehicle,
            form=typed,
            earned=queries.v2g_earned(db, vehicle.id),
            error_name=type(exc).__name__,
            error=str(exc),
        )
    target = f"/portal/owners/{quote(owner.id)}/vehicles/{quote(vehicle.id)}/settings?saved=1"
    return RedirectResponse(target, status_code=303)


def _settings_changes(typed: dict[str, Any]) -> dict[str, Any]:
    """The form's strings as settings (every field: a blank one clears it); malformed ones are named."""

    def percent(name: str, lo: float, hi: float) -> float | None:
        text = str(typed[name]).strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise InvalidSettingsError(f"{name}: {text!r} is not a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise InvalidSettingsError(f"{name}: {text} % is outside {lo:g}-{hi:g} %")
        return value / 100.0

    usual = str(typed["usual_departure"]).strip() or None
    if usual is not None and not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", usual):
        raise InvalidSettingsError(f"usual_departure: {usual!r} is not a time HH:MM")
    zone_name = str(typed["time_zone"])
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSettingsError(
            f"time_zone {zone_name!r} is not a time zone (e.g. Europe/Amsterdam)"
        ) from None
    nxt_text = str(typed["next_departure"]).strip()
    nxt = None
    if nxt_text:
        try:
            nxt = datetime.fromisoformat(nxt_text).replace(tzinfo=zone)
        except ValueError:
            raise InvalidSettingsError(f"next_departure: {nxt_text!r} is not a date and time") from None
    return {
        "usual_departure": usual,
        "time_zone": zone_name,
        "next_departure": nxt,
        "target_soc": percent("target_soc", 10, 100),
        "min_soc": percent("min_soc", 0, 90),
        "v2g": bool(typed["v2g"]),
    }


# a session id may hold a slash: a live transaction without a booking is "station/transaction"
@router.get("/portal/owners/{owner_id}/sessions/{session_id:path}", response_class=HTMLResponse)
def session_page(
    request: Request,
    owner_id: PathName,
    session_id: Annotated[str, Path(min_length=1, max_length=96)],
    db: SessionDep,
    user: UserDep,
) -> Response:
    role_in(user, Role.OWNER, Role.OPERATOR)
    owner = owner_or_refuse(db, user, owner_id)
    detail = queries.session_detail(db, owner_id, session_id)
    if detail is None:
        raise PortalRefusal(404, "No such session", f"{owner_id} has no session {session_id}", user)
    chart = {
        "labels": [r.start.strftime("%Y-%m-%dT%H:%M:%SZ") for r in detail.rows],
        "energy_label": detail.energy_label,
        "charge_kwh": [r.charge_wh / 1000 for r in detail.rows],
        "discharge_kwh": [-r.discharge_wh / 1000 for r in detail.rows],
        "amount_eur": [None if r.amount is None else r.amount / 10**6 for r in detail.rows],
        "metered_charge_kwh": [kwh(r.metered_import_wh) for r in detail.rows],
        "metered_discharge_kwh": [kwh(r.metered_export_wh, -1) for r in detail.rows],
    }
    promises = queries.against_settings(db, detail)
    return page(
        request,
        "session.html",
        user,
        owner=owner,
        detail=detail,
        chart_json=script_json(chart),
        promises=promises,
    )


def kwh(wh: int | None, sign: int = 1) -> float | None:
    return None if wh is None else sign * wh / 1000


def blank_none(*values: Any) -> list[Any]:
    return ["" if v is None else v for v in values]


def csv_response(rows: list[list[Any]], filename: str) -> Response:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    response = Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/portal/owners/{owner_id}/statement.csv")
def statement_csv(owner_id: PathName, state: StateDep, db: SessionDep, user: UserDep) -> Response:
    """The statement, one row per period (money in base units, energy in Wh, times in UTC)."""
    role_in(user, Role.OWNER, Role.OPERATOR)
    owner_or_refuse(db, user, owner_id)
    address, rows = queries.statement_rows(db, state.platform, owner_id)
    header = [
        "owner_id",
        "address",
        "period_id",
        "period_start_utc",
        "entry_id",
        "status",
        "charged_wh",
        "discharged_wh",
        "fees_base_units",
        "amount_base_units",
        "paid_base_units",
        "debt_added_base_units",
        "root",
        "propose_tx",
        "claim_tx",
    ]
    body = [
        [
            owner_id,
            address,
            r.period_id,
            r.starts_at.isoformat() if r.starts_at else "",
            r.entry_id,
            r.status,
            r.charged_wh,
            r.discharged_wh,
            r.fees,
            r.amount,
            "" if r.paid is None else r.paid,
            "" if r.debt_added is None else r.debt_added,
            r.root or "",
            r.propose_tx or "",
            r.claim_tx or "",
        ]
        for r in rows
    ]
    return csv_response([header, *body], f"statement-{owner_id}.csv")


@router.get("/portal/owners/{owner_id}/trades.csv")
def trades_csv(owner_id: PathName, db: SessionDep, user: UserDep) -> Response:
    """Every settled or planned interval of every session of the owner's."""
    role_in(user, Role.OWNER, Role.OPERATOR)
    owner_or_refuse(db, user, owner_id)
    header = [
        "session_id",
        "vehicle_id",
        "source",
        "interval_start_utc",
        "charge_wh",
        "discharge_wh",
        "metered_import_wh",
        "metered_export_wh",
        "price_base_units_per_kwh",
        "value_base_units",
        "fee_base_units",
        "amount_base_units",
    ]
    body: list[list[Any]] = []
    for s in queries.owner_sessions(db, owner_id):
        detail = queries.session_detail(db, owner_id, s.id)
        for r in detail.rows if detail else []:
            body.append(
                [
                    s.id,
                    s.vehicle_id,
                    detail.source if detail else "",
                    r.start.isoformat(),
                    r.charge_wh,
                    r.discharge_wh,
                    *blank_none(r.metered_import_wh, r.metered_export_wh, r.price, r.value, r.fee, r.amount),
                ]
            )
    return csv_response([header, *body], f"trades-{owner_id}.csv")


# --- operator and auditor ---------------------------------------------------------------------------------


@router.get("/portal/operator", response_class=HTMLResponse)
def operator_page(
    request: Request,
    db: SessionDep,
    user: UserDep,
    schedule: Annotated[int | None, Query(ge=0, le=2**53 - 1)] = None,
) -> Response:
    role_in(user, Role.OPERATOR)
    live = request.app.state.v2g.live() if schedule is None else None  # `v2g operate` serving this page
    plan = (queries.live_plan(db, live.loop()) if live is not None else None) or queries.fleet_plan(
        db, schedule
    )
    return page(
        request,
        "operator.html",
        user,
        plan=plan,
        chart_json=script_json(plan.chart_data()) if plan else "{}",
        schedules=queries.schedule_ids(db),
        periods=queries.periods(db),
        jobs=queries.jobs(db),
        live=queries.live_operations(db),
        owners=queries.owners(db),
    )


@router.get("/portal/auditor", response_class=HTMLResponse)
def auditor_page(request: Request, state: StateDep, db: SessionDep, user: UserDep) -> Response:
    role_in(user, Role.AUDITOR, Role.OPERATOR)
    rows = queries.periods(db)
    contract = state.platform.stored.record.settlement if state.platform.stored else ""
    return page(
        request,
        "auditor.html",
        user,
        periods=rows,
        disputes=queries.disputes(db, contract),
        totals={
            "credit": sum(p.total_credit for p in rows),
            "debit": sum(p.total_debit for p in rows),
            "entries": sum(p.entry_count for p in rows),
            "claimed": sum(p.claimed for p in rows),
        },
    )


@router.get("/portal/periods/{period_id}", response_class=HTMLResponse)
def period_page(
    request: Request, period_id: PathId, state: StateDep, db: SessionDep, user: UserDep
) -> Response:
    """A period's entries; an owner sees only its own."""
    period = next((p for p in queries.periods(db) if p.id == period_id), None)
    if period is None:
        raise PortalRefusal(404, "No such period", f"no period {period_id}", user)
    contract = state.platform.stored.record.settlement if state.platform.stored else ""
    energy, energy_error = None, None
    stored = db.get(Period, period_id)
    if user.role is not Role.OWNER and stored is not None and stored.frame_heads is not None:
        try:  # a metered period: where its day's energy went, from the raw frames (`v2g audit energy`)
            energy = energy_balance(db, period_id)
        except FrameChainError as exc:
            energy_error = f"FrameChainError: {exc}"
    return page(
        request,
        "period.html",
        user,
        period=period,
        entries=queries.entries(db, period_id, user.owner_id if user.role is Role.OWNER else None),
        claims=queries.claim_args(db, contract, period_id),
        energy=energy,
        energy_error=energy_error,
    )


@router.post("/portal/periods/{period_id}/settle")
def settle_period(
    request: Request,
    period_id: PathId,
    state: StateDep,
    db: SessionDep,
    user: UserDep,
    csrf: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    """Advance a stored period as far as it can go (the API's ``POST /periods/{id}/settle``)."""
    role_in(user, Role.OPERATOR)
    require_csrf(request, state, user, csrf)
    if next((p for p in queries.periods(db) if p.id == period_id), None) is None:
        raise PortalRefusal(404, "No such period", f"no period {period_id}", user)
    state.runner.submit("resume", {"period_id": period_id})
    return RedirectResponse("/portal/operator#jobs", status_code=303)


@router.get("/portal/fragments/reconciliation", response_class=HTMLResponse)
def reconciliation_fragment(request: Request, state: StateDep, user: UserDep) -> Response:
    role_in(user, Role.OPERATOR, Role.AUDITOR)
    try:
        with state.chain_lock:
            report = state.platform.reconcile()
        problem = None
    except PlatformError as exc:
        report, problem = None, f"{type(exc).__name__}: {exc}"
    return page(request, "fragments/reconciliation.html", user, report=report, problem=problem)


@router.get("/portal/fragments/jobs", response_class=HTMLResponse)
def jobs_fragment(request: Request, db: SessionDep, user: UserDep) -> Response:
    role_in(user, Role.OPERATOR)
    return page(request, "fragments/jobs.html", user, jobs=queries.jobs(db))


# --- verification in the browser ---------------------------------------------------------------------------


def rpc_endpoint(state: AppState) -> tuple[str, str]:
    """The JSON-RPC URL browsers verify against, and what it is."""
    public = PortalSettings().public_rpc_url
    if public:
        return public, "the chain's public JSON-RPC node (V2G_PUBLIC_RPC_URL)"
    if state.chain.kind == "anvil" and state.chain.url:
        return state.chain.url, "the local anvil node's own JSON-RPC"
    what = (
        "the embedded chain, which has no node of its own"
        if state.chain.kind == "eth-tester"
        else "the chain"
    )
    return "/rpc", f"this server's read-only /rpc endpoint onto {what}"


@router.get("/portal/verify", response_class=HTMLResponse)
def verify_page(
    request: Request,
    state: StateDep,
    db: SessionDep,
    user: UserDep,
    period: Annotated[int | None, Query(ge=0, le=2**53 - 1)] = None,
    entry: Annotated[int | None, Query(ge=0, le=2**53 - 1)] = None,
) -> Response:
    """An entry and its proof from this server's database, checked in the browser against the chain."""
    found: PeriodEntry | None = None
    if period is not None and entry is not None:
        found = db.get(PeriodEntry, (period, entry))
        if user.role is Role.OWNER and (found is None or found.owner_id != user.owner_id):
            raise PortalRefusal(403, "Not yours", "owners verify only their own entries", user)
    record = state.platform.stored.record if state.platform.stored else None
    rpc_url, rpc_what = rpc_endpoint(state)
    block = (
        queries.proposal_block(db, record.settlement, found.period_id)
        if found is not None and record
        else None
    )
    return page(
        request,
        "verify.html",
        user,
        connect_any=True,
        entry=found,
        period=period,
        entry_id=entry,
        record=record,
        leaf_types=json.dumps(list(LEAF_TYPES)),
        proof_text="\n".join(found.proof) if found else "",
        block_hint=block,
        rpc_url=rpc_url,
        rpc_what=rpc_what,
        own_entries=(
            queries.entries_of_owner(db, user.owner_id) if user.role is Role.OWNER and user.owner_id else []
        ),
    )
