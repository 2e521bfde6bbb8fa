"""SQLAlchemy 2 models. Money and energy are integers; amounts that can pass 2^63 are stored as
decimal strings (:class:`BigInt`) so SQLite and PostgreSQL keep them exact."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class BigInt(TypeDecorator[int]):
    """An arbitrary-size integer stored as its decimal string."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"BigInt columns take int, got {type(value).__name__}")
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: give UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class PeriodStatus(StrEnum):
    BUILT = "built"
    SIGNED = "signed"
    PROPOSED = "proposed"
    FINALISED = "finalised"
    CLAIMED = "claimed"
    DISPUTED = "disputed"


class SubmissionStatus(StrEnum):
    SIGNED = "signed"  # raw transaction stored, maybe not yet sent
    MINED = "mined"
    REVERTED = "reverted"
    DROPPED = "dropped"  # its nonce was used by another transaction; never mined


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    token_address: Mapped[str] = mapped_column(String(42))
    settlement_address: Mapped[str] = mapped_column(String(42))
    block_number: Mapped[int] = mapped_column(BigInteger)
    artifact_hashes: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: What identifies the chain and the deployment's place in its history (checked on every open).
    genesis_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    code_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    #: The full deployment record (role accounts, liveness, artifact hashes).
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (UniqueConstraint("chain_id", "settlement_address"),)


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), unique=True)


class Period(Base):
    __tablename__ = "periods"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the on-chain period id
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"))
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16), default=PeriodStatus.BUILT)
    root: Mapped[str] = mapped_column(String(66))
    total_credit: Mapped[int] = mapped_column(BigInt)
    total_debit: Mapped[int] = mapped_column(BigInt)
    entry_count: Mapped[int] = mapped_column(Integer)
    meter_signature: Mapped[str | None] = mapped_column(String(132), nullable=True)
    challenge_ends: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: A metered period: the heads of the stations' raw-frame chains its energy was computed from
    #: (``{station: [seq, hash]}``); ``None`` for a period settled from a simulated schedule.
    frame_heads: Mapped[dict[str, list[Any]] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class PeriodEntry(Base):
    __tablename__ = "period_entries"

    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id"), primary_key=True)
    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"))
    address: Mapped[str] = mapped_column(String(42), index=True)
    amount: Mapped[int] = mapped_column(BigInt)
    proof: Mapped[list[str]] = mapped_column(JSON)
    claimed: Mapped[bool] = mapped_column(Boolean, default=False)
    claim_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)

    #: An owner's entries by period (statements; an owner's entry in a period, in entry order) and a
    #: period's unclaimed entries in order (claim batches): lookups, not scans, at a million entries.
    __table_args__ = (
        Index("ix_period_entries_owner_period", "owner_id", "period_id", "entry_id"),
        Index("ix_period_entries_period_claimed", "period_id", "claimed", "entry_id"),
    )


class SettledTradeRow(Base):
    __tablename__ = "settled_trades"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id"))
    #: the owner's entry in the period; -1 (``NO_ENTRY``) when the owner's trades net to zero: settled
    #: energy with nothing to pay, so no entry
    entry_id: Mapped[int] = mapped_column(Integer)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"))
    vehicle_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(96))
    interval_start: Mapped[datetime] = mapped_column(UtcDateTime)
    direction: Mapped[str] = mapped_column(String(16))
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    p2p_wh: Mapped[int] = mapped_column(BigInteger)
    grid_wh: Mapped[int] = mapped_column(BigInteger)
    p2p_price: Mapped[int] = mapped_column(BigInt)
    grid_price: Mapped[int] = mapped_column(BigInt)
    value: Mapped[int] = mapped_column(BigInt)
    fee: Mapped[int] = mapped_column(BigInt)
    amount: Mapped[int] = mapped_column(BigInt)

    __table_args__ = (
        Index("ix_settled_trades_owner_period", "owner_id", "period_id"),
        UniqueConstraint("period_id", "session_id", "interval_start", "direction"),
    )


class Submission(Base):
    """A signed transaction of the settlement job, stored before it is sent."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # propose | finalise | claim_batch
    entry_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    sender: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    raw_tx: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=SubmissionStatus.SIGNED)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gas_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class IndexedEvent(Base):
    """A decoded contract event with its position on chain (rebuilt from the chain alone)."""

    __tablename__ = "indexed_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract: Mapped[str] = mapped_column(String(42))
    block_number: Mapped[int] = mapped_column(BigInteger)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(String(66))
    name: Mapped[str] = mapped_column(String(32), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    period_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    account: Mapped[str | None] = mapped_column(String(42), nullable=True)

    __table_args__ = (
        UniqueConstraint("contract", "block_number", "log_index"),
        Index("ix_indexed_events_account_period", "account", "period_id"),
        Index("ix_indexed_events_period_name", "period_id", "name"),
    )


class IndexerCursor(Base):
    __tablename__ = "indexer_cursors"

    contract: Mapped[str] = mapped_column(String(42), primary_key=True)
    last_block: Mapped[int] = mapped_column(BigInteger)


# --- API ------------------------------------------------------------------------------


class ApiKey(Base):
    """An API key, stored as its SHA-256 (keys are 32 random bytes, so a fast hash is enough)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # operator | owner | auditor
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("owners.id"), nullable=True)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PortalSessionRow(Base):
    """A portal sign-in (its id is in the signed cookie): it ends when the user signs out, its key is
    deleted, or it expires, whatever the cookie says (migration 0011)."""

    __tablename__ = "portal_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class VehicleSettings(Base):
    """What an owner tells the aggregator about a vehicle (migration 0014): when it usually leaves (local
    time in ``time_zone``) and when it leaves next, how full it should be, the minimum kept for driving,
    and whether it may give energy back (V2G). The next re-plan honours them."""

    __tablename__ = "vehicle_settings"

    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"), primary_key=True)
    #: "HH:MM", local time in ``time_zone``
    usual_departure: Mapped[str | None] = mapped_column(String(5), nullable=True)
    time_zone: Mapped[str] = mapped_column(String(64), default="Europe/Amsterdam")
    next_departure: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: fractions of the battery (0-1)
    target_soc: Mapped[float | None] = mapped_column(nullable=True)
    min_soc: Mapped[float | None] = mapped_column(nullable=True)
    v2g: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class EvChargingNeedsRow(Base):
    """What a car said over ISO 15118 through its station (``NotifyEVChargingNeeds``, and the schedule it
    chose, ``NotifyEVChargingSchedule``): its departure, the energy it wants and its power limits replace
    the planner's guesses for that car at the next re-plan (migration 0013)."""

    __tablename__ = "ev_charging_needs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64))
    evse_id: Mapped[int] = mapped_column(Integer)
    #: the EVSE's open transaction when it arrived (None: none was open)
    transaction_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # needs | schedule
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    departure_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: the energy the car asks for from now on (Wh), and the transaction's import register when it asked
    energy_wh: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    import_wh_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: the car's state of charge (%) and battery capacity (Wh) when it asked, where it said them
    soc: Mapped[float | None] = mapped_column(nullable=True)
    capacity_wh: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_charge_w: Mapped[float | None] = mapped_column(nullable=True)
    max_discharge_w: Mapped[float | None] = mapped_column(nullable=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_ev_charging_needs_tx", "station_id", "transaction_id", "kind"),)


class ChainJournalRow(Base):
    """Every transaction this platform sent (written before it is sent) and every clock jump it made on a
    local chain, in order (migration 0012): what `v2g chain recover` replays on a chain that lost blocks
    (a managed anvil killed between saves, an embedded chain file restored from a copy)."""

    __tablename__ = "chain_journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(8))  # tx | clock
    tx_hash: Mapped[str | None] = mapped_column(String(66), unique=True, nullable=True)
    raw_tx: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: tx: the block it was mined in (None until its receipt); clock: the block the jump mined.
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: clock: the chain's time after the jump (unix seconds).
    timestamp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Vehicle(Base):
    __tablename__ = "vehicles"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"), index=True)
    battery_kwh: Mapped[float] = mapped_column()
    charge_kw: Mapped[float] = mapped_column()
    discharge_kw: Mapped[float] = mapped_column(default=0.0)
    soc_min: Mapped[float] = mapped_column(default=0.0)
    soc_max: Mapped[float] = mapped_column(default=1.0)
    eta_charge: Mapped[float] = mapped_column(default=0.95)
    eta_discharge: Mapped[float] = mapped_column(default=0.95)


class PlugSession(Base):
    """A plug-in, ``[arrival, departure)``. No two of one vehicle overlap and a settled one is never
    deleted: the database refuses both (migration 0004: triggers on SQLite, an exclusion constraint
    and a trigger on PostgreSQL), not only the API."""

    __tablename__ = "plug_sessions"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    arrival: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    departure: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    arrival_kwh: Mapped[float] = mapped_column()
    target_kwh: Mapped[float] = mapped_column()


class PricePoint(Base):
    """Hourly day-ahead price (EUR/MWh, UTC start of hour)."""

    __tablename__ = "prices"

    utc: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    eur_mwh: Mapped[float] = mapped_column()


class DrEventRow(Base):
    __tablename__ = "dr_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    start: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    duration_s: Mapped[int] = mapped_column(Integer)
    import_limit_kw: Mapped[float] = mapped_column()
    #: The site whose import it limits (migration 0017); ``None``: the operations loop's own site (the
    #: stations registered without a site, and the fleet a day-ahead schedule plans).
    site_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class OpenAdrEventRow(Base):
    """A demand-response event received from a VTN over OpenADR 2.0b (migration 0015): what was asked (per
    interval: start, seconds, the site import limit it means in kW), the answer given (``optIn``,
    ``optOut``, ``mandatory`` when the VTN wants no answer, ``cancelled``) and why. An event held is
    applied as rows of ``dr_events`` (``dr_event_ids``), which the re-plan honours like any other."""

    __tablename__ = "openadr_events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    vtn_id: Mapped[str] = mapped_column(String(128))
    modification_number: Mapped[int] = mapped_column(Integer)
    signal: Mapped[str] = mapped_column(String(64))  # e.g. "LOAD_DISPATCH/setpoint"
    asked: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    opt: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    dr_event_ids: Mapped[list[str]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Job(Base):
    """Long work run in the background; its state and result live here, so a restart loses nothing."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|succeeded|failed
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    start: Mapped[datetime] = mapped_column(UtcDateTime)
    intervals: Mapped[int] = mapped_column(Integer)
    interval_minutes: Mapped[int] = mapped_column(Integer)
    v2g: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    mip_gap: Mapped[float] = mapped_column()
    objective_eur: Mapped[float] = mapped_column()
    kpis: Mapped[dict[str, float]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ScheduleTrade(Base):
    __tablename__ = "schedule_trades"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id"), index=True)
    owner_id: Mapped[str] = mapped_column(String(64), index=True)
    vehicle_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(96))
    interval_start: Mapped[datetime] = mapped_column(UtcDateTime)
    direction: Mapped[str] = mapped_column(String(16))
    energy_wh: Mapped[int] = mapped_column(BigInteger)


# --- live operations: stations, transactions and meter data as received (OCPP) ------------------------


class SiteRow(Base):
    """A grid connection with stations behind it (migration 0017): the live re-plan plans each site on its
    own, against its own limits. Stations registered without a site are behind the operations loop's own
    connection (``v2g operate --import-limit-kw``)."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: What the site may draw from the grid and feed into it (kW), every interval.
    import_limit_kw: Mapped[float] = mapped_column()
    export_limit_kw: Mapped[float] = mapped_column()


class Station(Base):
    """A charging station known to the CSMS; unknown ids are refused at connection."""

    __tablename__ = "stations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: ``2.0.1`` (charge limits only, planned charge-only) or ``2.1`` (V2G setpoints where it can discharge).
    ocpp_version: Mapped[str] = mapped_column(String(8))
    can_discharge: Mapped[bool] = mapped_column(Boolean, default=False)
    evses: Mapped[int] = mapped_column(Integer, default=1)
    #: The most periods one charging schedule may carry (the station's ``PeriodsPerSchedule``).
    periods_per_schedule: Mapped[int] = mapped_column(Integer, default=24)
    #: The public key (hex, 64 bytes, secp256k1) of the station's meter, when its meter signs its values.
    meter_public_key: Mapped[str | None] = mapped_column(String(130), nullable=True)
    #: The rated power of each EVSE (kW, both directions): a reading implying more is implausible.
    max_power_kw: Mapped[float] = mapped_column(default=22.0)
    #: Per-EVSE rated power (kW) where the EVSEs differ; ``None``: every EVSE has ``max_power_kw``.
    evse_max_kw: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    #: OCPP security profile 1/2: the station's HTTP Basic password, hashed (``scrypt$N$r$p$salt$hash``);
    #: ``None``: the station connects without a password (security profile 0, refused unless allowed).
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    boots: Mapped[int] = mapped_column(Integer, default=0)
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: The grid connection the station is behind (``sites.id``); ``None``: the operations loop's own.
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), nullable=True, index=True)


class IdTokenRow(Base):
    """An idToken (RFID card, app, ISO 15118 contract) and the vehicle it authorises."""

    __tablename__ = "id_tokens"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)


class OcppTransaction(Base):
    """A charging transaction as the station reported it (Started ... Ended)."""

    __tablename__ = "ocpp_transactions"

    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    evse_id: Mapped[int] = mapped_column(Integer)
    vehicle_id: Mapped[str | None] = mapped_column(ForeignKey("vehicles.id"), nullable=True, index=True)
    plug_session_id: Mapped[str | None] = mapped_column(String(96), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    stopped_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_seq_no: Mapped[int] = mapped_column(Integer, default=-1)
    #: The latest sample in the station's time (its registers), so an in-order sample is checked without
    #: reading the samples back.
    last_measured_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_import_wh: Mapped[int] = mapped_column(BigInteger, default=0)
    last_export_wh: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Answered NoCredit at its start: the operations loop plans no energy for it (migration 0016; kept
    #: in the database so a restarted platform, or another CSMS process, knows it).
    credit_refused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class MeterReading(Base):
    """One meter sample as received: the energy registers (Wh) of a transaction at a station's time.

    Idempotent on (station, transaction, seq_no): a message sent twice is stored once."""

    __tablename__ = "meter_readings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64))
    transaction_id: Mapped[str] = mapped_column(String(64))
    seq_no: Mapped[int] = mapped_column(Integer)
    #: The sample's place among the message's meter values.
    sample: Mapped[int] = mapped_column(Integer, default=0)
    measured_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    import_wh: Mapped[int] = mapped_column(BigInteger)
    export_wh: Mapped[int] = mapped_column(BigInteger)
    soc: Mapped[float | None] = mapped_column(nullable=True)
    #: A signed meter value (OCPP ``signedMeterValue``) kept for the audit, with its verification result.
    signed: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        UniqueConstraint("station_id", "transaction_id", "seq_no", "sample"),
        Index("ix_meter_readings_transaction_time", "station_id", "transaction_id", "measured_at"),
    )


class FieldRejection(Base):
    """Data from the field that was refused, with its named reason (logged and counted, never lost)."""

    __tablename__ = "field_rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    detail: Mapped[str] = mapped_column(String(500))
    raw: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ChargingProfileRow(Base):
    """A charging profile sent to a station's EVSE, and the station's answer."""

    __tablename__ = "charging_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64), index=True)
    evse_id: Mapped[int] = mapped_column(Integer)
    transaction_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(24))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class RawFrame(Base):
    """Every frame a station sent, as received, append-only and hash-chained per station: ``hash`` is
    ``sha256(prev_hash ‖ station ‖ seq ‖ received_at ‖ frame)`` (:mod:`backend.metering.frames`), so an
    edited, deleted or inserted row breaks the chain from there on. The metering service derives what it
    signs from these rows alone, never from the tables derived from them."""

    __tablename__ = "raw_frames"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64))
    #: 1, 2, ... per station, in the order received.
    seq: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    frame: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("station_id", "seq"), Index("ix_raw_frames_received", "received_at"))


class MeterSignature(Base):
    """The metering service's own record of each metered period it signed and the raw-frame heads it
    signed them at (written only by the metering service: on PostgreSQL its own role). The next period's
    adjustments are computed against the last heads recorded here, not against anything the settler
    stores."""

    __tablename__ = "meter_signatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(String(42))
    root: Mapped[str] = mapped_column(String(66))
    frame_heads: Mapped[dict[str, list[Any]]] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(String(132))
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: the policy the period was replayed under (``MeterPolicy.to_json`` and ``fee_bps``; migration 0010)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class CsmsLink(Base):
    """Which CSMS process holds a station's connection now (``v2g operate --csms-workers N``): written by
    that process at the handshake, removed when the connection ends (or by the coordinator when the
    process dies). One row per station: a station connects to one process at a time."""

    __tablename__ = "csms_links"

    station_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker: Mapped[int] = mapped_column(Integer, index=True)
    connected_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CsmsCommand(Base):
    """A call the planner asks of a station (SetChargingProfile, RequestStopTransaction), handed to the
    CSMS process that holds it (PostgreSQL NOTIFY), and the station's answer."""

    __tablename__ = "csms_commands"

    #: 64 bits on PostgreSQL (a call per profile for years); SQLite's row id is 64 bits already
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    status: Mapped[str | None] = mapped_column(String(24), nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
