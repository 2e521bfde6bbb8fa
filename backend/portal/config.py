"""The portal's settings, from ``V2G_*`` environment variables (the API's ``Settings`` holds the rest)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="V2G_", env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from backend.config import sources_with_config_file

        return sources_with_config_file(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )

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
