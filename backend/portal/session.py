"""Sign-in sessions: a signed cookie naming the API key that signed in, and a CSRF token.

The cookie (``v2g_portal``: HttpOnly, SameSite=Strict, ``Secure`` when configured) holds the key's row id,
a fingerprint of its hash, the id of the sign-in kept server-side and a random CSRF token, signed with
itsdangerous (HMAC-SHA1 over a key derived from the secret) and stamped with the time it was issued. The
sign-in (``portal_sessions``) ends when the user signs out, the key is deleted or it expires, whatever a
copy of the cookie says. The key itself is never stored in the cookie; every request looks the key up
again, so the role is always the key's current role. Before sign-in the cookie holds only a CSRF token, so
that the sign-in form is CSRF-safe too (no login CSRF).

Forms carry the CSRF token in a hidden ``csrf`` field (htmx requests in an ``X-CSRF-Token`` header); a
POST whose token differs from the session's, or whose ``Origin`` names another site, is refused.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from backend.api.security import Role
from backend.db.models import ApiKey, PortalSessionRow

logger = logging.getLogger(__name__)

COOKIE = "v2g_portal"
SECRET_FILE = "portal-session-secret"


def session_secret(configured: str | None, data_dir: Path) -> str:
    """The configured secret, or the one kept in ``data_dir`` (made, mode 0600, on first use)."""
    if configured:
        return configured
    path = data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    logger.info("portal session secret made in %s", path)
    return secret


@dataclass(frozen=True)
class PortalSession:
    csrf: str
    key_id: int | None = None
    key_print: str | None = None
    #: the server-side sign-in (``portal_sessions.id``) a signed-in cookie names
    sid: str | None = None


@dataclass(frozen=True)
class PortalUser:
    """Who is signed in: the key's current role and owner."""

    role: Role
    owner_id: str | None
    label: str
    csrf: str

    def may_see_owner(self, owner_id: str) -> bool:
        return self.role is Role.OPERATOR or (self.role is Role.OWNER and self.owner_id == owner_id)


def fingerprint(key_hash: str) -> str:
    return key_hash[:16]


class SessionCodec:
    def __init__(self, secret: str, *, max_age_s: int, secure: bool) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt="v2g-portal-session")
        self.max_age_s = max_age_s
        self.secure = secure

    def load(self, request: Request) -> PortalSession | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self.serializer.loads(raw, max_age=self.max_age_s)
        except BadSignature:  # forged, altered, expired (SignatureExpired is a BadSignature)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        key_id = data.get("k")
        key_print = data.get("h")
        sid = data.get("s")
        if key_id is not None and (
            not isinstance(key_id, int) or not isinstance(key_print, str) or not isinstance(sid, str)
        ):
            return None
        return PortalSession(data["c"], key_id, key_print, sid)

    def store(self, response: Response, session: PortalSession) -> None:
        payload: dict[str, object] = {"c": session.csrf}
        if session.key_id is not None:
            payload.update(k=session.key_id, h=session.key_print, s=session.sid)
        response.set_cookie(
            COOKIE,
            self.serializer.dumps(payload),
            max_age=self.max_age_s,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure,
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure)


def new_session(
    key: ApiKey | None = None, db: Session | None = None, *, max_age_s: int = 12 * 3600
) -> PortalSession:
    """A session before sign-in (a CSRF token only), or a sign-in of ``key`` recorded in ``db``."""
    if key is None:
        return PortalSession(secrets.token_urlsafe(32))
    assert db is not None
    sid = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    db.add(
        PortalSessionRow(id=sid, key_id=key.id, created_at=now, expires_at=now + timedelta(seconds=max_age_s))
    )
    db.commit()
    return PortalSession(secrets.token_urlsafe(32), key.id, fingerprint(key.key_hash), sid)


def end_session(db: Session, session: PortalSession | None) -> bool:
    """Sign out: the server-side sign-in ends now (a copy of the cookie opens nothing afterwards)."""
    if session is None or session.sid is None:
        return False
    row = db.get(PortalSessionRow, session.sid)
    if row is None or row.ended_at is not None:
        return False
    row.ended_at = datetime.now(UTC)
    db.commit()
    return True


def user_of(db: Session, session: PortalSession | None) -> PortalUser | None:
    """The signed-in user, or None (no session, signed out, expired, or the key was deleted)."""
    if session is None or session.key_id is None or session.sid is None:
        return None
    row = db.get(PortalSessionRow, session.sid)
    if row is None or row.key_id != session.key_id or row.ended_at is not None:
        return None
    if row.expires_at <= datetime.now(UTC):
        return None
    key = db.get(ApiKey, session.key_id)
    if key is None or not hmac.compare_digest(fingerprint(key.key_hash), session.key_print or ""):
        return None
    return PortalUser(Role(key.role), key.owner_id, key.label, session.csrf)


def csrf_ok(request: Request, session: PortalSession | None, token: str | None) -> bool:
    """The POST carries the session's CSRF token and, when the browser names its origin, comes from here."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        own = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
        if origin != own:
            return False
    if session is None or not token:
        return False
    return hmac.compare_digest(session.csrf, token)


def handle(sid: str) -> str:
    """What a page shows for a sign-in: a digest of its id (the id itself stays in its cookie)."""
    import hashlib

    return hashlib.sha256(sid.encode()).hexdigest()[:16]


def sign_ins(db: Session, session: PortalSession) -> list[tuple[str, PortalSessionRow]]:
    """The sign-ins still open of the same key (for an owner: of any of the owner's keys), newest first,
    each with its handle."""
    key = db.get(ApiKey, session.key_id) if session.key_id is not None else None
    if key is None:
        return []
    keys = (
        [k.id for k in db.query(ApiKey).filter(ApiKey.owner_id == key.owner_id)] if key.owner_id else [key.id]
    )
    now = datetime.now(UTC)
    rows = (
        db.query(PortalSessionRow)
        .filter(
            PortalSessionRow.key_id.in_(keys),
            PortalSessionRow.ended_at.is_(None),
            PortalSessionRow.expires_at > now,
        )
        .order_by(PortalSessionRow.created_at.desc())
        .all()
    )
    return [(handle(r.id), r) for r in rows]
