"""Authorisation against the free balance: may this owner start a session now?

The rule (``docs/security.md``, "The property"): a session may start when the owner's free escrow covers
the most it can cost,

    free = balance − amount under withdrawal notice − open exposure  ≥  session exposure

- a session's exposure is the vehicle's whole battery (Wh) at the highest buy price stored over the
  horizon (an hour back, :data:`HORIZON` ahead), plus the aggregator's fee, by the one rounding rule
  (:func:`backend.settlement.tariff.energy_value`, :func:`~backend.settlement.tariff.fee_of`);
- open exposure is the exposure of each of the owner's other transactions still open;
- the balance and the notice are the settlement contract's (``balanceOf``, ``withdrawalOf``): money under
  notice may leave, so it does not count.

Below it the CSMS answers ``NoCredit`` (OCPP 2.0.1 AuthorizationStatusEnumType) to ``Authorize`` and to
``TransactionEvent(Started)``. The contract secures what was charged before a notice
(``docs/security.md``); this gate keeps what is charged after one within what the owner holds.
A vehicle whose exposure cannot be priced (no price stored at all) gets ``NoCredit`` too: an
unbounded session is not authorised.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.chain.contracts import SettlementClient
from backend.db.models import OcppTransaction, Owner, PricePoint, Vehicle
from backend.settlement.tariff import WH_PER_KWH, energy_value, eur_mwh_to_base_per_kwh, fee_of

if TYPE_CHECKING:
    from backend.platform import Platform

logger = logging.getLogger(__name__)

#: How far ahead a session's price is bounded: the planner's 48-hour horizon.
HORIZON = timedelta(hours=48)


@dataclass(frozen=True)
class Escrow:
    """What the settlement contract holds for an address, in base units (times in Unix seconds)."""

    balance: int
    held: int = 0  # under withdrawal notice
    notice_available_at: int | None = None
    notice_expires_at: int | None = None
    debt: int = 0
    owed: int = 0  # credits the aggregator owes and has not funded yet


@dataclass(frozen=True)
class Credit:
    """An owner's standing for a new session (base units)."""

    owner_id: str
    address: str
    escrow: Escrow
    open_exposure: int
    session_exposure: int  # of the session asked for (0: none asked)
    price_per_kwh: int | None  # the bound used (None: nothing stored to bound it)

    @property
    def free(self) -> int:
        """Balance minus what is under notice minus the open sessions' exposure (may be negative)."""
        return self.escrow.balance - self.escrow.held - self.open_exposure

    @property
    def allowed(self) -> bool:
        return self.price_per_kwh is not None and self.free >= self.session_exposure


class CreditGate:
    """The rule above over the database (vehicles, open transactions, prices) and the contract's escrow
    (``escrow``: address → :class:`Escrow`, e.g. :func:`chain_escrow`)."""

    def __init__(
        self, sessions: sessionmaker[Session], escrow: Callable[[str], Escrow], fee_bps: int
    ) -> None:
        self.sessions = sessions
        self.escrow = escrow
        self.fee_bps = fee_bps

    def max_price(self, db: Session, at: datetime) -> int | None:
        """The highest buy price over the horizon (base units per kWh), or over everything stored when
        the horizon has none; None when nothing is stored."""
        window = select(func.max(PricePoint.eur_mwh)).where(
            PricePoint.utc >= at - timedelta(hours=1), PricePoint.utc < at + HORIZON
        )
        highest = db.scalar(window)
        if highest is None:
            highest = db.scalar(select(func.max(PricePoint.eur_mwh)))
        return None if highest is None else eur_mwh_to_base_per_kwh(float(highest))

    def exposure(self, vehicle: Vehicle, price_per_kwh: int | None) -> int:
        if price_per_kwh is None:
            return 0
        value = energy_value(round(vehicle.battery_kwh * WH_PER_KWH), max(price_per_kwh, 0))
        return value + fee_of(value, self.fee_bps)

    def check(
        self,
        vehicle_id: str | None = None,
        *,
        at: datetime,
        owner_id: str | None = None,
        exclude: tuple[str, str] | None = None,
    ) -> Credit:
        """The standing of ``vehicle_id``'s owner for a session of that vehicle (or, with ``owner_id`` only,
        the owner's standing with no session asked). ``exclude``: the (station, transaction) being decided,
        already recorded as open."""
        with self.sessions() as db:
            vehicle = db.get(Vehicle, vehicle_id) if vehicle_id is not None else None
            owner = db.get(Owner, vehicle.owner_id if vehicle is not None else owner_id)
            if owner is None:
                raise KeyError(f"no owner for vehicle {vehicle_id!r} / owner {owner_id!r}")
            price = self.max_price(db, at)
            open_rows = db.execute(
                select(OcppTransaction.station_id, OcppTransaction.transaction_id, Vehicle)
                .join(Vehicle, Vehicle.id == OcppTransaction.vehicle_id)
                .where(Vehicle.owner_id == owner.id, OcppTransaction.ended_at.is_(None))
            ).all()
            open_exposure = sum(
                self.exposure(v, price) for station, tx, v in open_rows if (station, tx) != exclude
            )
            session = self.exposure(vehicle, price) if vehicle is not None else 0
            address = owner.address
        return Credit(owner.id, address, self.escrow(address), open_exposure, session, price)


#: How long the gate waits for the chain before it uses an escrow it read recently (s), how recent that
#: read must be (s), and how long an owner never read (or not within it) waits before the check is
#: refused (s): a settlement holds the chain for minutes, and a station's Authorize cannot wait that long.
#: A day is safe against withdrawals: one completing now was under notice (two days at least,
#: ``backend.chain.contracts.DEFAULT_COLLECTION_S``) when the escrow was read, so it was not counted free.
CHAIN_WAIT_S = 0.5
CACHED_ESCROW_S = 24 * 3600.0
UNCACHED_WAIT_S = 10.0


class ChainBusyError(RuntimeError):
    """The chain stayed held (a settlement) and the owner's escrow was not read in the last day."""


def chain_escrow(
    settlement: SettlementClient,
    lock: threading.RLock,
    *,
    wait_s: float = CHAIN_WAIT_S,
    cached_s: float = CACHED_ESCROW_S,
    uncached_wait_s: float = UNCACHED_WAIT_S,
) -> Callable[[str], Escrow]:
    """An :class:`Escrow` reader over the settlement contract, one caller at a time under ``lock`` (web3
    providers and the embedded chain are not thread-safe: :attr:`backend.chain.client.Chain.lock`).

    While another thread holds the chain (a day's settlement, minutes at a large site) a read waits at
    most ``wait_s`` and then answers the owner's escrow as last read, if read in the ``cached_s`` before:
    the settlement in progress is what changes it, and the value from just before it is the one the gate
    would have used a moment earlier (a withdrawal asked meanwhile has its notice period to run, longer
    than a day). An owner not read that recently waits for the chain at most ``uncached_wait_s``, then
    :class:`ChainBusyError` (the CSMS answers NoCredit, and the station may ask again)."""
    cache: dict[str, tuple[float, Escrow]] = {}

    def from_chain(address: str) -> Escrow:
        amount, available_at, expires_at = settlement.withdrawal_of(address)
        escrow = Escrow(
            settlement.balance_of(address),
            amount,
            available_at or None,
            expires_at or None,
            settlement.debt_of(address),
            settlement.owed_to(address),
        )
        cache[address] = (time.monotonic(), escrow)
        return escrow

    def read(address: str) -> Escrow:
        if lock.acquire(timeout=wait_s):
            try:
                return from_chain(address)
            finally:
                lock.release()
        kept = cache.get(address)
        age = time.monotonic() - kept[0] if kept is not None else math.inf
        if kept is not None and age <= cached_s:
            logger.info("the chain is busy: escrow of %s as read %.0f s ago", address, age)
            return kept[1]
        if not lock.acquire(timeout=uncached_wait_s):
            raise ChainBusyError(
                f"the chain is held (a settlement) and the escrow of {address} is not cached"
            )
        try:
            return from_chain(address)
        finally:
            lock.release()

    return read


def credit_gate(platform: Platform, fee_bps: int) -> CreditGate:
    """The gate over ``platform``'s database and the escrow of its deployment (read under the chain's
    lock): one construction for the CSMS, the API and the portal."""
    settlement = SettlementClient.at(platform.chain, platform.record.settlement)
    return CreditGate(platform.sessions, chain_escrow(settlement, platform.chain.lock), fee_bps)
