"""Request and response schemas. Energy in whole Wh (int); money in token base units as decimal strings
(they can pass 2^53); times in UTC ISO 8601."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from web3 import Web3

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Money = Annotated[str, Field(pattern=r"^-?[0-9]+$", description="token base units (6 decimals), as a string")]


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    return x


Finite = Annotated[float, AfterValidator(_finite)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OwnerCreate(Strict):
    id: Id
    address: str = Field(
        pattern=r"^0x[0-9a-fA-F]{40}$", description="0x address (any case; stored checksummed)"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not Web3.is_address(value):
            raise ValueError("not an Ethereum address")
        return str(Web3.to_checksum_address(value))


class OwnerPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    address: str


class VehicleCreate(Strict):
    id: Id
    owner_id: Id
    battery_kwh: Annotated[Finite, Field(gt=0, le=1000)]
    charge_kw: Annotated[Finite, Field(gt=0, le=1000)]
    discharge_kw: Annotated[Finite, Field(ge=0, le=1000)] = 0.0
    soc_min: Annotated[Finite, Field(ge=0, le=1)] = 0.0
    soc_max: Annotated[Finite, Field(ge=0, le=1)] = 1.0
    eta_charge: Annotated[Finite, Field(gt=0, le=1)] = 0.95
    eta_discharge: Annotated[Finite, Field(gt=0, le=1)] = 0.95


class VehiclePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    owner_id: str
    battery_kwh: float
    charge_kw: float
    discharge_kw: float
    soc_min: float
    soc_max: float
    eta_charge: float
    eta_discharge: float


class SessionCreate(Strict):
    id: Id
    vehicle_id: Id
    arrival: AwareDatetime
    departure: AwareDatetime
    arrival_kwh: Annotated[Finite, Field(ge=0, le=1000)]
    target_kwh: Annotated[Finite, Field(ge=0, le=1000)]


class SessionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    vehicle_id: str
    arrival: datetime
    departure: datetime
    arrival_kwh: float
    target_kwh: float


class PriceIn(Strict):
    utc: AwareDatetime
    eur_mwh: Annotated[Finite, Field(ge=-10_000, le=10_000)]


class PricesImport(Strict):
    prices: Annotated[list[PriceIn], Field(min_length=1, max_length=100_000)]


class PricesImported(BaseModel):
    imported: int
    first: datetime
    last: datetime


class DrEventCreate(Strict):
    id: Id
    start: AwareDatetime
    duration_s: Annotated[int, Field(gt=0, le=7 * 86_400)]
    import_limit_kw: Annotated[Finite, Field(ge=0, le=1e7)]


class DrEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    start: datetime
    duration_s: int
    import_limit_kw: float


class ScheduleCreate(Strict):
    start: AwareDatetime
    intervals: Annotated[int, Field(ge=1, le=2_880)] = 96
    interval_minutes: Annotated[int, Field(ge=1, le=60)] = 15
    v2g: bool = True
    import_limit_kw: Annotated[Finite, Field(gt=0, le=1e7)]
    export_limit_kw: Annotated[Finite, Field(ge=0, le=1e7)]
    degradation_eur_kwh: Annotated[Finite, Field(ge=0, le=10)] = 0.02
    sell_spread_eur_mwh: Annotated[Finite, Field(ge=0, le=10_000)] = 0.0
    mip_gap: Annotated[Finite, Field(ge=1e-9, le=0.1)] = 1e-4


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    status: str
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class SchedulePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    job_id: int
    start: datetime
    intervals: int
    interval_minutes: int
    v2g: bool
    status: str
    mip_gap: float
    objective_eur: float
    kpis: dict[str, float]


class TradePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    owner_id: str
    vehicle_id: str
    session_id: str
    interval_start: datetime
    direction: str
    energy_wh: int


class PeriodCreate(Strict):
    schedule_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    fee_bps: Annotated[int, Field(ge=0, le=10_000)] = 0


class PeriodPublic(BaseModel):
    id: int
    status: str
    root: str
    total_credit: Money
    total_debit: Money
    entry_count: int
    challenge_ends: int | None


class EntryPublic(BaseModel):
    period_id: int
    entry_id: int
    owner_id: str
    address: str
    amount: Money
    claimed: bool
    claim_tx: str | None
    proof: list[str]


class ClaimCreate(Strict):
    entry_id: Annotated[int, Field(ge=0, le=2**32)]


class ClaimPublic(BaseModel):
    period_id: int
    entry_id: int
    tx_hash: str


class StatementLinePublic(BaseModel):
    period_id: int
    entry_id: int
    charged_wh: int
    discharged_wh: int
    p2p_wh: int
    fees: Money
    amount: Money
    paid: Money | None
    debt_added: Money | None
    claim_tx: str | None
    root: str | None
    proof: list[str]


class StatementPublic(BaseModel):
    owner_id: str
    address: str
    total_amount: Money
    lines: list[StatementLinePublic]


class MismatchPublic(BaseModel):
    kind: str
    period_id: int | None
    detail: str


class ReconciliationPublic(BaseModel):
    ok: bool
    periods: int
    entries: int
    accounts: int
    mismatches: list[MismatchPublic]


class ProofPublic(BaseModel):
    valid: bool
    leaf: str
    root: str
    proof: list[str]
    contract_leaf_matches: bool | None


class HealthPublic(BaseModel):
    status: str
    chain: str
    chain_id: int
    block: int
    settlement: str
    database: str


class ErrorPublic(BaseModel):
    error: str | None = None
    detail: Any


PositiveMoney = Annotated[
    str, Field(pattern=r"^[1-9][0-9]{0,29}$", description="token base units, > 0, as a string")
]


class FloatCreate(Strict):
    amount: PositiveMoney


class DepositCreate(Strict):
    owner_id: Id
    amount: PositiveMoney


class BalancePublic(BaseModel):
    account: str
    balance: Money
    debt: Money
