"""One Settings class: every knob of the backend, from the environment (``V2G_*``), ``.env``, or a
configuration file (TOML: ``v2g.toml`` in the working directory, or the file ``V2G_CONFIG`` names; every
key is a setting's name in lower case, e.g. ``database_url``; ``examples/v2g.toml`` lists them all with
their defaults). The environment wins over ``.env``, which wins over the file. Keys never go in the file:
they come from the environment or a keystore."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

#: The configuration file of the working directory, read when ``V2G_CONFIG`` names none.
DEFAULT_CONFIG = Path("v2g.toml")


#: ``V2G_*`` variables that are not settings: keys and secrets (never in a file), and the drills' knobs.
OTHER_VARIABLES = frozenset(
    {
        "V2G_CONFIG",  # the configuration file
        "V2G_PRIVATE_KEYS",  # a local chain's role keys, in order
        "V2G_KEYSTORE_PASSWORD",
        "V2G_METER_URL",  # where a settler reaches the metering service
        "V2G_METER_ADDRESS",  # the meter's address, for a deployment on a chain that is not local
        "V2G_METER_DB_PASSWORD",
        "V2G_ENTSOE_TOKEN",
        "V2G_OPENADR_KEY_PASSPHRASE",
        "V2G_SETTLE_NOW",  # drills: the settler's now
        "V2G_DRILL_CLOCK",  # drills: every process's simulated time
        "V2G_CRASH_AT",  # drills: kill the settlement at a step
        "V2G_PORTAL_SCREENSHOTS",  # tests: where the portal's screenshots go
        "V2G_REPRO_DIR",  # tests
    }
)
ROLE_KEY = re.compile(r"V2G_(ADMIN|SETTLER|AUDITOR|METER)_(KEY|KEYSTORE)")


def unknown_variables(environ: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``V2G_*`` variables of the environment that are neither a setting nor one of
    :data:`OTHER_VARIABLES`, each with the closest known name (a misspelt variable is never ignored)."""
    import difflib

    from backend.portal.config import PortalSettings

    environ = dict(os.environ) if environ is None else environ
    known = {f"V2G_{name.upper()}" for name in (*Settings.model_fields, *PortalSettings.model_fields)}
    known |= OTHER_VARIABLES
    unknown = []
    for name in sorted(environ):
        if name.startswith("V2G_") and name not in known and not ROLE_KEY.fullmatch(name):
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
            unknown.append((name, close[0] if close else None))
    return unknown


class ConfigFileError(ValueError):
    """The configuration file cannot be read, or names a setting that does not exist."""


def config_file() -> Path | None:
    """The configuration file in force: ``V2G_CONFIG`` (which must exist), else ``./v2g.toml`` if any."""
    named = os.environ.get("V2G_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigFileError(f"V2G_CONFIG={named}: no such file")
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def read_config() -> dict[str, Any]:
    """The settings of the configuration file (empty without one); an unknown key, or a file that is not
    TOML, is :class:`ConfigFileError` (a misspelt setting is never silently ignored)."""
    path = config_file()
    if path is None:
        return {}
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    from backend.portal.config import PortalSettings

    known = set(Settings.model_fields) | set(PortalSettings.model_fields)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigFileError(
            f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    return values


def sources_with_config_file(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
    dotenv_settings: PydanticBaseSettingsSource,
    file_secret_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Arguments, then the environment, then ``.env``, then the configuration file, then defaults."""
    from_file = {k: v for k, v in read_config().items() if k in settings_cls.model_fields}
    return (
        init_settings,
        env_settings,
        dotenv_settings,
        InitSettingsSource(settings_cls, init_kwargs=from_file),
        file_secret_settings,
    )


class FileSettings(BaseSettings):
    """Settings from ``V2G_*`` variables, ``.env`` and the configuration file (the backend's and the
    portal's share one file)."""

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
        return sources_with_config_file(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )


class Settings(FileSettings):
    #: SQLAlchemy URL: a SQLite file by default, PostgreSQL by URL (postgresql+psycopg://...).
    database_url: str = "sqlite:///v2g.sqlite"
    #: None: the chain the database settles on (``eth-tester`` for a new one). Or ``eth-tester`` (embedded,
    #: kept under ``data_dir``), ``anvil`` (the managed node of ``data_dir``, or one
    #: started for the process on its state) or an http(s):// JSON-RPC URL; see backend/chain/node.py.
    chain: str | None = None
    #: Where local chains keep their state (``chains/eth-tester.sqlite``, ``chains/anvil/``).
    data_dir: str = ".v2g"
    #: Challenge window of new deployments, seconds.
    liveness_s: int = Field(default=3600, ge=60, le=30 * 24 * 3600)
    #: Aggregator's fee on every trade, basis points (every door's default: `v2g settle`, `v2g operate`,
    #: `v2g meter serve`, ``POST /periods``, ``POST /metered-periods``).
    fee_bps: int = Field(default=100, ge=0, le=10_000)
    #: Entries per claim batch transaction (the contract allows at most 200).
    claim_batch: int = Field(default=200, ge=1, le=200)
    #: The most plug-in sessions one schedule may take (an absurd fleet is refused, not attempted).
    max_fleet: int = Field(default=20_000, ge=1)
    #: Where copies of deployment records are written (``<chain id>/<contract>.json``); the database holds
    #: the record of truth.
    deployments_dir: str = "deployments"
    #: The largest request body the API reads, bytes (larger ones get 413 ``RequestTooLargeError``).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Portfolio jobs: a Dask scheduler's address, or None for a local cluster of ``dask_workers``
    #: processes started per job (1: threads in the server's process).
    dask_scheduler: str | None = None
    dask_workers: int = Field(default=2, ge=1, le=64)
    #: JSON lines (one event per line, INFO and up) to this file, rotated at 10 MB, five kept (None: the
    #: console only). ``v2g run`` gives each process its own, ``meter.jsonl`` and ``platform.jsonl``, in
    #: that file's folder (default ``<data_dir>/logs``).
    log_file: str | None = None
    #: Live operation (``v2g operate``, ``v2g run``): the interface the CSMS, the API and the portal listen
    #: on, the CSMS's websocket port, the API's port, the metering service's port under ``v2g run``, and
    #: the site's grid connection limits, kW.
    host: str = "127.0.0.1"
    csms_port: int = Field(default=9000, ge=1, le=65_535)
    #: CSMS processes sharing the port and the PostgreSQL database (0: one, the platform's own).
    csms_workers: int = Field(default=0, ge=0, le=64)
    api_port: int = Field(default=8000, ge=1, le=65_535)
    meter_port: int = Field(default=8700, ge=1, le=65_535)
    import_limit_kw: float = Field(default=500.0, ge=0.0, le=1e6)
    export_limit_kw: float = Field(default=500.0, ge=0.0, le=1e6)
    #: The CSMS's TLS certificate chain and its unencrypted key (PEM): stations connect to wss:// (OCPP
    #: security profile 2). None: ws://.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: The service's jobs on the market's clock (backend/api/market_clock.py): None runs them under
    #: ``v2g operate`` and not under ``v2g serve``; true or false decides for both.
    service_jobs: bool | None = None
    #: How often the settle job looks for ended days to settle metered, and how long after midnight (UTC)
    #: a day's late frames are awaited before it is settled, seconds.
    settle_every_s: int = Field(default=900, ge=1, le=86_400)
    settle_grace_s: int = Field(default=900, ge=0, le=86_400)
    #: How often periods whose challenge window has passed are looked for (finalised and claimed), seconds.
    finalise_every_s: int = Field(default=300, ge=1, le=86_400)
    #: A directory where price files (CSV or ENTSO-E A44 XML) are dropped for import, and how often it is
    #: read, seconds (None: no drop directory). Tomorrow's prices come from the ENTSO-E API instead when
    #: ``V2G_ENTSOE_TOKEN`` is set (a secret: the environment only), for the bidding zone ``entsoe_area``.
    prices_drop_dir: str | None = None
    prices_every_s: int = Field(default=300, ge=1, le=86_400)
    entsoe_area: str = "NL"
    #: Demand response over OpenADR 2.0b (``v2g operate``): the VTN's URL (None: no VEN), the name this
    #: VEN registers under, the VEN id an earlier registration gave (None: the VTN assigns one), the
    #: resource id of the site's grid node, and the site import limit's fraction at SIMPLE levels 1-3.
    openadr_vtn_url: str | None = None
    openadr_ven_name: str = "v2g-settle"
    openadr_ven_id: str | None = None
    openadr_node: str = "site"
    openadr_simple_levels: tuple[float, float, float] = (0.5, 0.25, 0.0)
    #: Message signing with the VTN: this VEN's certificate and key (PEM; the key's passphrase comes from
    #: ``V2G_OPENADR_KEY_PASSPHRASE``), the VTN certificate's fingerprint, and a CA file for its TLS.
    openadr_cert: str | None = None
    openadr_key: str | None = None
    openadr_vtn_fingerprint: str | None = None
    openadr_ca_file: str | None = None
