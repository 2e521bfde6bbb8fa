"""One Settings class: every knob of the backend, from the environment (``V2G_*``) or ``.env``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="V2G_", env_file=".env", extra="ignore")

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
