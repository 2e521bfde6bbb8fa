"""The settlement job: built → signed → proposed → finalised → claimed, idempotent and resumable.

Every transaction is signed with an explicit nonce and stored (raw bytes and
hash) *before* it is sent; its receipt is stored after. A re-run after a crash
at any point finds the stored transaction and either reads its receipt or sends
the same bytes again (same hash: it can be mined at most once), so no trade is
paid twice and none is skipped. The contract's claim bitmap is the second line
of defence: an entry already claimed on chain (by its owner, or by a lost
transaction) is detected and marked, never paid again.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3.types import TxReceipt

from backend.chain.client import Chain, SignedTx
from backend.chain.contracts import PeriodHeader, PeriodState, SettlementClient
from backend.chain.deploy import Actors, DeploymentRecord
from backend.chain.errors import ContractRevertError, StaleNonceError, UnknownRevertError
from backend.db.models import (
    Deployment,
    Owner,
    Period,
    PeriodEntry,
    PeriodStatus,
    SettledTradeRow,
    Submission,
    SubmissionStatus,
)
from backend.settlement.period import build_period
from backend.settlement.signing import sign_period_root
from backend.settlement.tariff import Tariff, settle_trades
from scheduler.schedule import Trade

logger = logging.getLogger(__name__)


class SimulatedCrash(RuntimeError):  # noqa: N818 - it is a crash, not an error
    """Raised at a named point when a test asks the job to die there."""


class PeriodConflictError(RuntimeError):
    """A period id is already stored with a different root: refuse to overwrite it."""


CRASH_POINTS = (
    "built",
    "signed",
    "propose_sent",
    "proposed",
    "finalise_sent",
    "finalised",
    "claim_batch_sent",
    "claim_batch_stored",
)


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


@dataclass
class SettlementJob:
    sessions: sessionmaker[Session]
    chain: Chain
    record: DeploymentRecord
    actors: Actors
    batch_size: int = 200
    travel_time: bool = False
    #: Fault injection for tests: die at this point (``V2G_CRASH_AT`` for a command). ``crash_hard``
    #: kills the process with SIGKILL, as a power cut would; otherwise :class:`SimulatedCrash` is raised.
    crash_at: str | None = None
    crash_hard: bool = False
    #: Who signs a period's root: the metering service (:class:`backend.metering.service.MeterClient`, so
    #: that this process holds no meter key), or, when ``None``, the meter key in ``actors`` (simulations
    #: that settle the plan: ``v2g settle``, ``v2g demo``).
    meter_signer: Callable[..., bytes] | None = None

    def __post_init__(self) -> None:
        if self.crash_at is not None and self.crash_at not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {self.crash_at!r}; one of {CRASH_POINTS}")
        self.settlement = SettlementClient.at(self.chain, self.record.settlement)

    def _crash(self, point: str) -> None:
        if self.crash_at == point:
            if self.crash_hard:
                logger.warning("V2G_CRASH_AT=%s: killing this process", point)
                os.kill(os.getpid(), signal.SIGKILL)
            raise SimulatedCrash(point)

    # --- setup -----------------------------------------------------------------------

    def deployment_id(self, session: Session) -> int:
        row = session.scalar(
            select(Deployment).where(
                Deployment.chain_id == self.record.chain_id,
                Deployment.settlement_address == self.record.settlement,
            )
        )
        if row is None:
            row = Deployment(
                chain_id=self.record.chain_id,
                token_address=self.record.token,
                settlement_address=self.record.settlement,
                block_number=self.record.block_number,
                artifact_hashes=self.record.artifact_hashes,
            )
            session.add(row)
            session.flush()
        return row.id

    def register_owners(self, addresses: Mapping[str, str]) -> None:
        with self.sessions.begin() as session:
            known = {o.id: o.address for o in session.scalars(select(Owner))}
            for owner_id, address in addresses.items():
                if owner_id in known:
                    if known[owner_id] != address:
                        raise PeriodConflictError(f"owner {owner_id} is registered with {known[owner_id]}")
                    continue
                session.add(Owner(id=owner_id, address=address))

    # --- build ------------------------------------------------------------------------

    def build(
        self, period_id: int, starts_at: datetime, ends_at: datetime, trades: Sequence[Trade], tariff: Tariff
    ) -> Period:
        """Price the trades, net them per owner, store the period with its proofs (once)."""
        with self.sessions.begin() as session:
            addresses = {o.id: o.address for o in session.scalars(select(Owner))}
            built = build_period(
                period_id,
                settle_trades(trades, tariff),
                addresses,
                chain_id=self.record.chain_id,
                contract=self.record.settlement,
            )
            existing = session.get(Period, period_id)
            if existing is not None:
                if existing.root != _hex(built.root):
                    raise PeriodConflictError(f"period {period_id} is stored with another root")
                return existing
            period = Period(
                id=period_id,
                deployment_id=self.deployment_id(session),
                starts_at=starts_at,
                ends_at=ends_at,
                status=PeriodStatus.BUILT,
                root=_hex(built.root),
                total_credit=built.total_credit,
                total_debit=built.total_debit,
                entry_count=len(built.entries),
            )
            session.add(period)
            session.flush()
            for entry in built.entries:
                session.add(
                    PeriodEntry(
                        period_id=period_id,
                        entry_id=entry.entry_id,
                        owner_id=entry.owner_id,
                        address=entry.address,
                        amount=entry.amount,
                        proof=[_hex(p) for p in built.proof(entry.entry_id)],
                    )
                )
                for st in entry.trades:
                    session.add(
                        SettledTradeRow(
                            period_id=period_id,
                            entry_id=entry.entry_id,
                            owner_id=entry.owner_id,
                            vehicle_id=st.trade.vehicle_id,
                            session_id=st.trade.session_id,
                            interval_start=st.trade.interval_start,
                            direction=st.trade.direction.value,
                            energy_wh=st.trade.energy_wh,
                            p2p_wh=st.p2p_wh,
                            grid_wh=st.grid_wh,
                            p2p_price=st.p2p_price,
                            grid_price=st.grid_price,
                            value=st.value,
                            fee=st.fee,
                            amount=st.amount,
                        )
                    )
        self._crash("built")
        return period

    # --- run --------------------------------------------------------------------------

    def run(self, period_id: int) -> PeriodStatus:
        """Advance the period as far as it can go now; returns where it stands."""
        while True:
            with self.sessions() as session:
                period = session.get(Period, period_id)
                if period is None:
                    raise KeyError(f"no period {period_id}")
                status = PeriodStatus(period.status)
            if status is PeriodStatus.BUILT:
                self._sign(period_id)
            elif status is PeriodStatus.SIGNED:
                self._propose(period_id)
            elif status is PeriodStatus.PROPOSED:
                if not self._finalise(period_id):
                    return PeriodStatus.PROPOSED
            elif status is PeriodStatus.FINALISED:
                self._claims(period_id)
            else:
                return status

    def header(self, period: Period) -> PeriodHeader:
        assert period.challenge_ends is not None
        return PeriodHeader(
            bytes.fromhex(period.root[2:]),
            period.total_credit,
            period.total_debit,
            period.entry_count,
            period.challenge_ends,
        )

    def _sign(self, period_id: int) -> None:
        with self.sessions.begin() as session:
            period = session.get_one(Period, period_id)
            sign: Callable[..., bytes] = (
                self.meter_signer
                if self.meter_signer is not None
                else partial(sign_period_root, self.actors.meter)
            )
            signature = sign(
                chain_id=self.record.chain_id,
                contract=self.record.settlement,
                period_id=period_id,
                root=bytes.fromhex(period.root[2:]),
                total_credit=period.total_credit,
                total_debit=period.total_debit,
                entry_count=period.entry_count,
            )
            period.meter_signature = _hex(signature)
            period.status = PeriodStatus.SIGNED
        self._crash("signed")

    def _propose(self, period_id: int) -> None:
        with self.sessions() as session:
            period = session.get_one(Period, period_id)
            fn = self.settlement.contract.functions.propose(
                period_id,
                bytes.fromhex(period.root[2:]),
                period.total_credit,
                period.total_debit,
                period.entry_count,
                bytes.fromhex(str(period.meter_signature)[2:]),
            )
        receipt = self._submit(period_id, "propose", fn, [])
        (event,) = self.settlement.events(receipt, "PeriodProposed")
        with self.sessions.begin() as session:
            period = session.get_one(Period, period_id)
            period.challenge_ends = int(event["challengeEnds"])
            period.status = PeriodStatus.PROPOSED
        self._crash("proposed")

    def _finalise(self, period_id: int) -> bool:
        with self.sessions() as session:
            period = session.get_one(Period, period_id)
            header = self.header(period)
        on_chain = self.settlement.period_state(period_id)
        if on_chain is PeriodState.DISPUTED:
            with self.sessions.begin() as session:
                session.get_one(Period, period_id).status = PeriodStatus.DISPUTED
            logger.warning("period %d was disputed on chain", period_id)
            return True
        if on_chain is not PeriodState.FINALISED:
            wait = header.challenge_ends - self.chain.timestamp()
            if wait >= 0:
                if not self.travel_time:
                    logger.info("period %d: challenge window open for %d s more", period_id, wait + 1)
                    return False
                self.chain.advance_time(wait + 1)
            fn = self.settlement.contract.functions.finalise(period_id, header.as_tuple())
            self._submit(period_id, "finalise", fn, [])
        with self.sessions.begin() as session:
            session.get_one(Period, period_id).status = PeriodStatus.FINALISED
        self._crash("finalised")
        return True

    def _claims(self, period_id: int) -> None:
        self._resolve_pending(period_id)
        first = True
        while True:
            with self.sessions() as session:
                period = session.get_one(Period, period_id)
                header = self.header(period)
                batch = list(
                    session.scalars(
                        select(PeriodEntry)
                        .where(PeriodEntry.period_id == period_id, PeriodEntry.claimed.is_(False))
                        .order_by(PeriodEntry.entry_id)
                        .limit(self.batch_size)
                    )
                )
            if not batch:
                break
            fn = self.settlement.contract.functions.claimBatch(
                period_id,
                header.as_tuple(),
                [e.entry_id for e in batch],
                [e.address for e in batch],
                [e.amount for e in batch],
                [[bytes.fromhex(p[2:]) for p in e.proof] for e in batch],
            )
            try:
                receipt = self._submit(period_id, "claim_batch", fn, [e.entry_id for e in batch])
            except ContractRevertError as exc:
                if exc.name != "AlreadyClaimed":
                    raise
                entry_id = int(exc.args_by_name["entryId"])
                if not self.settlement.is_claimed(period_id, entry_id):
                    raise
                self._mark_claimed(period_id, [entry_id], None)  # claimed on chain outside this job
                continue
            self._mark_batch(period_id, [e.entry_id for e in batch], receipt)
            if first:
                first = False
                self._crash("claim_batch_stored")
        with self.sessions.begin() as session:
            session.get_one(Period, period_id).status = PeriodStatus.CLAIMED

    def _mark_claimed(self, period_id: int, entry_ids: list[int], tx_hash: str | None) -> None:
        with self.sessions.begin() as session:
            for entry in session.scalars(
                select(PeriodEntry).where(
                    PeriodEntry.period_id == period_id, PeriodEntry.entry_id.in_(entry_ids)
                )
            ):
                entry.claimed = True
                entry.claim_tx = tx_hash

    def _resolve_pending(self, period_id: int) -> None:
        """Claim batches signed before a crash: read their receipts (resending if needed) and mark them."""
        with self.sessions() as session:
            pending = list(
                session.scalars(
                    select(Submission).where(
                        Submission.period_id == period_id,
                        Submission.kind == "claim_batch",
                        Submission.status == SubmissionStatus.SIGNED,
                    )
                )
            )
        for submission in pending:
            receipt = self._deliver(submission.id)
            if receipt is not None and receipt["status"] == 1:
                self._mark_batch(period_id, submission.entry_ids, receipt)

    def _mark_batch(self, period_id: int, entry_ids: list[int], receipt: TxReceipt) -> None:
        """Mark a mined batch's entries; those it skipped (``EntrySkipped``: claimed on chain before it,
        e.g. by their owner) are marked without the batch's transaction."""
        skipped = {int(e["entryId"]) for e in self.settlement.events(receipt, "EntrySkipped")}
        paid = [e for e in entry_ids if e not in skipped]
        self._mark_claimed(period_id, paid, _hex(bytes(receipt["transactionHash"])))
        if skipped:
            self._mark_claimed(period_id, sorted(skipped), None)  # claimed on chain outside this job

    # --- transactions -----------------------------------------------------------------------

    def _submit(self, period_id: int, kind: str, fn: Any, entry_ids: list[int]) -> TxReceipt:
        """Store, then send, one transaction; a propose or finalise stored before a crash is reused."""
        submission_id: int | None = None
        if kind != "claim_batch":  # pending claim batches are resolved before new ones are built
            with self.sessions() as session:
                submission_id = session.scalar(
                    select(Submission.id).where(
                        Submission.period_id == period_id,
                        Submission.kind == kind,
                        Submission.status.in_([SubmissionStatus.SIGNED, SubmissionStatus.MINED]),
                    )
                )
        if submission_id is None:
            signed: SignedTx = self.chain.sign_call(fn, self.actors.settler)
            with self.sessions.begin() as session:
                row = Submission(
                    period_id=period_id,
                    kind=kind,
                    entry_ids=entry_ids,
                    sender=signed.sender,
                    nonce=signed.nonce,
                    tx_hash=signed.tx_hash,
                    raw_tx=_hex(signed.raw),
                )
                session.add(row)
                session.flush()
                submission_id = row.id
        receipt = self._deliver(submission_id, crash_point=f"{kind}_sent")
        if receipt is None:  # dropped: its nonce went to another transaction; sign afresh
            return self._submit(period_id, kind, fn, entry_ids)
        if receipt["status"] != 1:
            self.chain.call(fn, self.actors.settler)  # raises the typed reason if it still reverts
            raise UnknownRevertError({"tx": str(receipt["transactionHash"].hex())})
        return receipt

    def _deliver(self, submission_id: int, crash_point: str | None = None) -> TxReceipt | None:
        """Send a stored transaction (again) and store its receipt; ``None`` if it was dropped."""
        with self.sessions() as session:
            row = session.get_one(Submission, submission_id)
            tx_hash, raw = row.tx_hash, bytes.fromhex(row.raw_tx[2:])
        receipt = self.chain.receipt(tx_hash)
        if receipt is None:
            try:
                self.chain.send_raw(raw)
            except StaleNonceError:
                with self.sessions.begin() as session:
                    session.get_one(Submission, submission_id).status = SubmissionStatus.DROPPED
                return None
            if crash_point is not None:
                self._crash(crash_point)
            receipt = self.chain.wait(bytes.fromhex(tx_hash[2:]))  # type: ignore[arg-type]
        with self.sessions.begin() as session:
            row = session.get_one(Submission, submission_id)
            row.status = SubmissionStatus.MINED if receipt["status"] == 1 else SubmissionStatus.REVERTED
            row.block_number = int(receipt["blockNumber"])
            row.gas_used = int(receipt["gasUsed"])
        return receipt
