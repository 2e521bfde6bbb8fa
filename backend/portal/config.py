"""The portal's settings, from ``V2G_*`` environment variables (the API's ``Settings`` holds the rest)."""

from __future__ import annotations

from pydantic import Field

from backend.config import FileSettings


class PortalSettings(FileSettings):
    #: Signs session cookies. Unset: a random secret kept in ``<data dir>/portal-session-secret`` (mode 0600),
    #: made on first use, so sessions survive a restart. Never in source.
    session_secret: str | None = Field(default=None, min_length=32)
    #: The JSON-RPC URL browsers read the chain from when they verify an entry. Unset: a managed anvil's own
    #: URL, otherwise this server's read-only ``/rpc`` (an external node's URL is never shown to browsers
    #: unless set here: it may carry an access key).
    public_rpc_url: str | None = None
    #: Seconds a sign-in lasts.
    session_max_age_s: int = Field(default=12 * 3600, ge=60)
    #: Mark the session cookie ``Secure`` (set it when the portal is served over HTTPS).
    secure_cookies: bool = False
