"""Request and response schemas. Energy in whole Wh (int); money in token base units as decimal strings
(they can pass 2^53); times in UTC ISO 8601.

Every rule a request body must meet that JSON Schema can say is said here, so the OpenAPI document is
the contract: numbers are strict (``false`` or ``"5"`` is not a number) and finite, bounds are
``minimum``/``exclusiveMinimum``/``maximum``, timestamps carry an offset and a year from 2000 to 2099
(a pattern next to ``format: date-time``), unknown fields are refused. What needs the stored state
(an unknown vehicle, an overlap, a checksum) is refused by the routes with a named error.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
#: The largest integer id or offset: 2^53 - 1, exact in every JSON parser (and in a signed 64-bit column).
MAX_ID = 2**53 - 1
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
Money = Annotated[str, Field(pattern=r"^-?[0-9]+$", description="token base units (6 decimals), as a string")]

#: The years a timestamp may name, as written (before conversion to UTC): far from the calendar's edges,
#: where converting to UTC overflows, and wide enough for any real price, plug-in or schedule.
FIRST_YEAR, LAST_YEAR = 2000, 2099
TIMESTAMP_PATTERN = (
    r"^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
TIMESTAMP_DESCRIPTION = (
    f"RFC 3339 date-time with an offset (`Z` or `+hh:mm`), year {FIRST_YEAR}-{LAST_YEAR} as written, "
    "at most microseconds; stored in UTC"
)


def _timestamp(value: object) -> datetime:
    """An aware datetime from an RFC 3339 string in the documented range (or an aware datetime in it)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a timestamp needs an offset")
        if not FIRST_YEAR <= value.year <= LAST_YEAR:
            raise ValueError(f"a timestamp's year must be {FIRST_YEAR}-{LAST_YEAR}")
        return value
    if not isinstance(value, str) or _TIMESTAMP.fullmatch(value) is None:
        raise ValueError(TIMESTAMP_DESCRIPTION)
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:  # e.g. 2023-02-30
        raise ValueError(f"not a calendar date-time: {exc}") from None


Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": TIMESTAMP_DESCRIPTION,
            "examples": ["2023-07-02T00:00:00Z"],
        }
    ),
]


def _integral(value: object) -> object:
    """JSON Schema's ``integer`` is a number with no fraction: 55.0 is 55. Booleans and strings are not."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Strict(BaseModel):
    """A request body: unknown fields refused; numbers, strings and booleans of their JSON type only;
    no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


#: An Ethereum address as written; the route checks its EIP-55 checksum and what it may not be.
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


class OwnerCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": "owner-00007", "address": "0x52908400098527886E0F7030069857D2E4169EE7"}]
        }
    )

    id: Id
    address: str = Field(
        pattern=ADDRESS_PATTERN,
        description="0x address: all lowercase (stored checksummed) or with a valid EIP-55 checksum; "
        "not the zero address, not an account or contract of the deployment",
    )


class OwnerPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    address: str


class VehicleCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "ev-0007",
                    "owner_id": "owner-00007",
                    "battery_kwh": 60,
                    "charge_kw": 11,
                    "discharge_kw": 11,
                    "soc_min": 0.1,
                    "soc_max": 0.9,
                }
            ]
        }
    )

    id: Id
    owner_id: Id
    battery_kwh: Annotated[float, Field(gt=0, le=1000)]
    charge_kw: Annotated[float, Field(gt=0, le=1000)]
    discharge_kw: Annotated[float, Field(ge=0, le=1000)] = 0.0
    soc_min: Annotated[float, Field(ge=0, le=1)] = 0.0
    soc_max: Annotated[float, Field(ge=0, le=1)] = 1.0
    eta_charge: Annotated[float, Field(gt=0, le=1)] = 0.95
    eta_discharge: Annotated[float, Field(gt=0, le=1)] = 0.95


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


class VehicleSettingsUpdate(Strict):
    """An owner's word on a vehicle; the next re-plan honours it. A field left out keeps its value; null
    clears it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "usual_departure": "07:30",
                    "time_zone": "Europe/Amsterdam",
                    "next_departure": "2023-07-03T06:15:00+02:00",
                    "target_soc": 0.8,
                    "min_soc": 0.3,
                    "v2g": True,
                }
            ]
        }
    )

    #: When it usually leaves, local time ``HH:MM`` in ``time_zone``.
    usual_departure: Annotated[str | None, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = None
    #: The IANA time zone of ``usual_departure`` (one the server does not know: InvalidSettingsError).
    time_zone: Annotated[str, Field(min_length=1, max_length=64)] = "Europe/Amsterdam"
    #: When it leaves next (today's exception to the usual time).
    next_departure: Timestamp | None = None
    #: How full the battery should be when it leaves, a fraction (0.1-1).
    target_soc: Annotated[float | None, Field(ge=0.1, le=1.0)] = None
    #: The least it keeps for driving at any time, a fraction (0-0.9): never given back below this.
    min_soc: Annotated[float | None, Field(ge=0.0, le=0.9)] = None
    #: Whether the aggregator may discharge it to the grid.
    v2g: bool = True


class VehicleSettingsPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    vehicle_id: str
    usual_departure: str | None
    time_zone: str
    next_departure: datetime | None
    target_soc: float | None
    min_soc: float | None
    v2g: bool
    updated_at: datetime


class SessionCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "plug-0007-20230702",
                    "vehicle_id": "ev-0007",
                    "arrival": "2023-07-02T06:00:00Z",
                    "departure": "2023-07-02T18:00:00+02:00",
                    "arrival_kwh": 20,
                    "target_kwh": 48,
                }
            ]
        }
    )

    id: Id
    vehicle_id: Id
    arrival: Timestamp
    departure: Timestamp
    arrival_kwh: Annotated[float, Field(ge=0, le=1000)]
    target_kwh: Annotated[float, Field(ge=0, le=1000)]


class SessionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    vehicle_id: str
    arrival: datetime
    departure: datetime
    arrival_kwh: float
    target_kwh: float


class PriceIn(Strict):
    utc: Timestamp
    eur_mwh: Annotated[float, Field(ge=-10_000, le=10_000)]


class PricesImport(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prices": [
                        {"utc": "2023-07-02T00:00:00Z", "eur_mwh": 81.5},
                        {"utc": "2023-07-02T01:00:00Z", "eur_mwh": -3.2},
                    ]
                }
            ]
        }
    )

    prices: Annotated[list[PriceIn], Field(min_length=1, max_length=100_000)]


class PricesImported(BaseModel):
    imported: int
    first: datetime
    last: datetime


class DrEventCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "dr-20230702-17",
                    "start": "2023-07-02T17:00:00Z",
                    "duration_s": 3600,
                    "import_limit_kw": 50,
                }
            ]
        }
    )

    id: Id
    start: Timestamp
    duration_s: Annotated[int, Field(gt=0, le=7 * 86_400), BeforeValidator(_integral)]
    import_limit_kw: Annotated[float, Field(ge=0, le=1e7)]
    site_id: Annotated[
        Id | None,
        Field(
            description="the site whose import it limits (v2g sites import); null: the loop's own connection"
        ),
    ] = None


class DrEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    start: datetime
    duration_s: int
    import_limit_kw: float
    site_id: str | None


class ScheduleCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "start": "2023-07-02T00:00:00Z",
                    "intervals": 96,
                    "interval_minutes": 15,
                    "v2g": True,
                    "import_limit_kw": 30,
                    "export_limit_kw": 30,
                }
            ]
        }
    )

    start: Timestamp
    intervals: Annotated[int, Field(ge=1, le=2_880), BeforeValidator(_integral)] = 96
    interval_minutes: Annotated[
        Literal[1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60],
        BeforeValidator(_integral),
        Field(description="minutes; divides an hour"),
    ] = 15
    v2g: bool = True
    import_limit_kw: Annotated[float, Field(gt=0, le=1e7)]
    export_limit_kw: Annotated[float, Field(ge=0, le=1e7)]
    degradation_eur_kwh: Annotated[float, Field(ge=0, le=10)] = 0.02
    sell_spread_eur_mwh: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    mip_gap: Annotated[float, Field(ge=1e-9, le=0.1)] = 1e-4


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    status: str
    #: what the job was asked (a day, a period, a file; ``source: market-clock`` for the service's own)
    params: dict[str, Any]
    attempts: int
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
    model_config = ConfigDict(json_schema_extra={"examples": [{"schedule_id": 1, "fee_bps": 100}]})

    schedule_id: Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_integral)]
    #: Aggregator's fee, basis points: default the server's ``fee_bps`` (``V2G_FEE_BPS``, else 100).
    fee_bps: Annotated[int | None, Field(ge=0, le=10_000), BeforeValidator(_integral)] = None


class MeteredPeriodCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"date": "2023-07-03", "fee_bps": 100}]})

    date: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="The UTC day, YYYY-MM-DD.")]
    #: The fee the metering service prices with (it refuses another): default the server's ``fee_bps``.
    fee_bps: Annotated[int | None, Field(ge=0, le=10_000), BeforeValidator(_integral)] = None


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
    model_config = ConfigDict(json_schema_extra={"examples": [{"entry_id": 0}]})

    entry_id: Annotated[int, Field(ge=0, le=2**32), BeforeValidator(_integral)]


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


class RefusalPublic(BaseModel):
    """Energy refused by name: the station, its transaction, when it counts (UTC), whole Wh and why."""

    station_id: str
    transaction_id: str
    at: datetime
    import_wh: int
    export_wh: int
    wh: int
    reason: str
    detail: str


class OverpaymentPublic(BaseModel):
    session_id: str
    interval_start: datetime
    direction: str
    paid_wh: int
    metered_wh: int


class EnergyBalancePublic(BaseModel):
    """A UTC day's energy, whole Wh: ``metered = settled + adjusted + refused + pending``, each term from its
    own source (raw frames; the day's period; later periods; named refusals; in no period yet)."""

    day: str
    metered_wh: int
    settled_wh: int
    adjusted_wh: int
    refused_wh: int
    pending_wh: int
    unsigned_wh: int
    refused_by_reason: dict[str, int]
    refusals: list[RefusalPublic]
    overpaid: list[OverpaymentPublic]
    balances: bool
    equation: str


class ProofPublic(BaseModel):
    valid: bool
    leaf: str
    root: str
    proof: list[str]
    contract_leaf_matches: bool | None


class HealthPublic(BaseModel):
    """``ok``, or ``degraded`` with every problem named (``ErrorName: what``)."""

    status: Literal["ok", "degraded"]
    chain: str
    chain_id: int | None
    block: int | None
    settlement: str | None
    database: str
    problems: list[str] = []


class ValidationIssue(BaseModel):
    """One refused part of a request: where (``loc``), why (``msg``), the rule (``type``) and a short
    echo of what was sent (``input``: long strings cut, large values summarised, NaN as a string)."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None


class ErrorPublic(BaseModel):
    """Every error: its name and what went wrong (a list of issues for 422s, a sentence otherwise)."""

    error: str = Field(description="the error's name, e.g. `DepartureBeforeArrivalError`")
    detail: str | list[ValidationIssue]


PositiveMoney = Annotated[
    str, Field(pattern=r"^[1-9][0-9]{0,29}$", description="token base units, > 0, as a string")
]


class FloatCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"amount": "1000000000"}]})

    amount: PositiveMoney


class DepositCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"owner_id": "owner-00007", "amount": "50000000"}]}
    )

    owner_id: Id
    amount: PositiveMoney


class BalancePublic(BaseModel):
    account: str
    balance: Money
    debt: Money


class CreditPublic(BaseModel):
    """An owner's standing for new sessions, in base units (``backend/operations/credit.py``): ``free`` =
    ``balance`` − ``held_for_withdrawal`` − ``open_exposure``; a session starts only when ``free`` covers
    its exposure (the car's battery at ``price_per_kwh_max`` plus the fee), else the CSMS answers
    ``NoCredit``."""

    owner_id: str
    account: str
    balance: Money
    held_for_withdrawal: Money
    notice_available_at: datetime | None
    notice_expires_at: datetime | None
    debt: Money
    owed_by_aggregator: Money
    open_exposure: Money
    free: Money
    price_per_kwh_max: Money | None


# --- portfolio ----------------------------------------------------------------------------------------

Kw = Annotated[float, Field(ge=0, le=1e9)]


class PortfolioNode(Strict):
    node: Id
    parent: Annotated[
        str, Field(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$", description="'' at the top")
    ] = ""
    import_limit_kw: Kw
    export_limit_kw: Kw


class PortfolioSite(Strict):
    site: Id
    kind: Literal["home", "depot", "public"]
    node: Id
    import_limit_kw: Kw
    export_limit_kw: Kw
    base_load_kw: Kw = 0.0
    pv_kwp: Kw = 0.0


class PortfolioSession(Strict):
    session: Id
    vehicle: Id
    owner: Id
    site: Id
    battery_kwh: Annotated[float, Field(gt=0, le=10_000)]
    charge_kw: Annotated[float, Field(gt=0, le=10_000)]
    discharge_kw: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    soc_min: Annotated[float, Field(ge=0, le=1)] = 0.0
    soc_max: Annotated[float, Field(ge=0, le=1)] = 1.0
    eta_charge: Annotated[float, Field(gt=0, le=1)] = 0.95
    eta_discharge: Annotated[float, Field(gt=0, le=1)] = 0.95
    arrival: Timestamp
    departure: Timestamp
    arrival_kwh: Annotated[float, Field(ge=0, le=10_000)]
    target_kwh: Annotated[float, Field(ge=0, le=10_000)]


class PortfolioDrEvent(Strict):
    event: Id
    node: Id
    start: Timestamp
    duration_s: Annotated[float, Field(gt=0, le=7 * 86_400)]
    import_limit_kw: Kw


class PortfolioScheduleCreate(Strict):
    """One day of a portfolio, the same tables as `v2g portfolio generate` writes (kW, kWh, EUR/MWh)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "start": "2023-03-15T00:00:00Z",
                    "intervals": 4,
                    "interval_minutes": 15,
                    "nodes": [{"node": "Z1", "parent": "", "import_limit_kw": 12, "export_limit_kw": 12}],
                    "sites": [
                        {
                            "site": "H1",
                            "kind": "home",
                            "node": "Z1",
                            "import_limit_kw": 17,
                            "export_limit_kw": 17,
                        }
                    ],
                    "sessions": [
                        {
                            "session": "s1",
                            "vehicle": "v1",
                            "owner": "o1",
                            "site": "H1",
                            "battery_kwh": 50,
                            "charge_kw": 10,
                            "arrival": "2023-03-15T00:00:00Z",
                            "departure": "2023-03-15T01:00:00Z",
                            "arrival_kwh": 10,
                            "target_kwh": 15,
                        }
                    ],
                    "prices_eur_mwh": [10, 100, 50, 50],
                }
            ]
        }
    )

    start: Timestamp
    intervals: Annotated[int, Field(ge=1, le=2_880), BeforeValidator(_integral)] = 96
    interval_minutes: Annotated[
        Literal[1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60],
        BeforeValidator(_integral),
        Field(description="minutes; divides an hour"),
    ] = 15
    nodes: Annotated[list[PortfolioNode], Field(min_length=1, max_length=100_000)]
    sites: Annotated[list[PortfolioSite], Field(min_length=1, max_length=100_000)]
    sessions: Annotated[list[PortfolioSession], Field(max_length=100_000)]
    dr_events: Annotated[list[PortfolioDrEvent], Field(max_length=100_000)] = []
    prices_eur_mwh: Annotated[
        list[Annotated[float, Field(ge=-10_000, le=10_000)]], Field(min_length=1, max_length=2_880)
    ]
    import_cap_kw: Annotated[list[Kw], Field(min_length=1, max_length=2_880)] | None = None
    degradation_eur_kwh: Annotated[float, Field(ge=0, le=10)] = 0.02
    tol: Annotated[float, Field(gt=0, le=0.1)] = 1e-4
