"""`v2g chain recover`: a chain behind the database is given back what it lost.

A managed anvil killed between its saves, or an embedded chain file restored from a copy, ends before
transactions the database relies on. Every transaction the platform sends is journaled in its database
before it is sent (:mod:`backend.db.journal`). Recovery

1. sends again, in the order first sent, each journaled transaction the chain does not have (the same
   signed bytes: same sender, nonce and effect: deployments, mints, deposits, withdrawals, role changes),
   except the settlement job's period transactions;
2. settles every stored period from where the chain now has it (:meth:`SettlementJob.align`): a lost
   proposal is sent again as the metering service signed it, the finalisation and claims are signed
   afresh, because they carry the challenge end of the new proposal (a raw copy of the old ones would
   revert);
3. reads the event index again from the chain alone and reconciles.

A chain whose history *differs* (a journaled transaction's nonce went to another transaction) is not
rebuilt this way: :class:`UnrecoverableChainError`, and nothing more is sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_utils.crypto import keccak
from sqlalchemy import select

from backend.app.settle import SettlePolicy, resume
from backend.audit.indexer import EventIndexer
from backend.audit.statements import ReconciliationReport
from backend.chain.errors import StaleNonceError
from backend.db.models import ChainJournalRow, Deployment, Period, PeriodStatus
from backend.platform import Platform, PlatformError, is_local
from backend.settlement.job import SettlementJob

logger = logging.getLogger(__name__)

#: The settlement contract's functions that carry a period's header (its challenge end): they are
#: signed afresh by the settlement job, never replayed as they were.
PERIOD_FUNCTIONS = (
    "propose(uint64,bytes32,uint96,uint96,uint32,bytes32,bytes32)",
    "finalise(uint64,(bytes32,uint96,uint96,uint32,uint64))",
    "claim(uint64,(bytes32,uint96,uint96,uint32,uint64),uint256,address,int256,bytes32[])",
    "claimBatch(uint64,(bytes32,uint96,uint96,uint32,uint64),uint256[],address[],int256[],bytes32[][])",
)


class UnrecoverableChainError(PlatformError):
    """The chain's history differs from the journal's (not only shorter): replaying cannot rebuild it."""


class EmptyJournalError(PlatformError):
    """The database journaled no transaction on this chain: there is nothing to replay."""


@dataclass(frozen=True)
class RecoveryResult:
    journaled: int
    on_chain: int
    replayed: int
    resettled: list[int]
    head_before: int
    head_after: int
    mismatch_before: str | None
    reconciliation: ReconciliationReport


def _fields_of(raw: bytes) -> tuple[int, bytes, bytes]:
    """The nonce, the ``to`` address and the call data of a signed transaction (legacy, EIP-2930 or
    EIP-1559)."""
    if raw[0] >= 0xC0:  # legacy: rlp([nonce, gasPrice, gas, to, value, data, v, r, s])
        fields = rlp.decode(raw)
        return int.from_bytes(fields[0], "big"), bytes(fields[3]), bytes(fields[5])
    fields = rlp.decode(raw[1:])
    if raw[0] == 0x01:  # [chainId, nonce, gasPrice, gas, to, value, data, accessList, ...]
        return int.from_bytes(fields[1], "big"), bytes(fields[4]), bytes(fields[6])
    # 0x02: [chainId, nonce, maxPriorityFee, maxFee, gas, to, value, data, accessList, ...]
    return int.from_bytes(fields[1], "big"), bytes(fields[5]), bytes(fields[7])


def recover_chain(platform: Platform, policy: SettlePolicy) -> RecoveryResult:
    """Rebuild ``platform``'s chain from the journal (the platform opened without the strict check: its
    chain is expected not to match), then check it strictly, re-index and reconcile."""
    chain = platform.chain
    with chain.lock:
        mismatch = platform.mismatch
        chain_id = int(chain.w3.eth.chain_id)
        if not is_local(chain):
            raise UnrecoverableChainError(
                f"chain id {chain_id} is not a local chain: blocks are lost only on the embedded chain or "
                "a managed anvil, and only those are rebuilt from the journal"
            )
        with platform.sessions() as session:
            deployment = session.scalars(select(Deployment).order_by(Deployment.id.desc())).first()
            rows = list(
                session.execute(
                    select(
                        ChainJournalRow.kind,
                        ChainJournalRow.tx_hash,
                        ChainJournalRow.raw_tx,
                        ChainJournalRow.block_number,
                        ChainJournalRow.timestamp,
                    )
                    .where(ChainJournalRow.chain_id == chain_id)
                    .order_by(ChainJournalRow.id)
                )
            )
        if deployment is None or platform.stored is None:
            raise UnrecoverableChainError(f"{platform.database_url} has no deployment to recover")
        genesis = "0x" + bytes(chain.w3.eth.get_block(0)["hash"]).hex()
        if deployment.chain_id != chain_id or (deployment.genesis_hash not in (None, genesis)):
            raise UnrecoverableChainError(
                "the connected chain is another chain than the database's (chain id or genesis): "
                "nothing to replay onto"
            )
        transactions = [(h, raw) for kind, h, raw, block, _ in rows if kind == "tx" and block is not None]
        if not transactions:
            raise EmptyJournalError(
                f"{platform.database_url} journaled no mined transaction on chain id {chain_id}: "
                "nothing to replay"
            )
        contract = bytes.fromhex(platform.stored.record.settlement[2:])
        period_calls = {keccak(text=f)[:4] for f in PERIOD_FUNCTIONS}
        head_before = int(chain.w3.eth.block_number)
        on_chain = replayed = 0
        for kind, tx_hash, raw_hex, block, timestamp in rows:
            if kind == "clock":  # a clock jump the platform made: time-locked steps after it need it
                behind = int(timestamp or 0) - chain.timestamp()
                if behind > 0:
                    chain.advance_time(behind)
                continue
            if block is None:
                continue  # never mined when it was sent (dropped, or refused): not replayed now either
            if chain.receipt(str(tx_hash)) is not None:
                on_chain += 1
                continue
            raw = bytes.fromhex(str(raw_hex)[2:])
            nonce, to, data = _fields_of(raw)
            if to == contract and data[:4] in period_calls:
                continue  # the settlement job sends its period's transactions again below
            sender = Account.recover_transaction(raw)
            expected = int(chain.w3.eth.get_transaction_count(sender, "pending"))
            if nonce != expected:
                raise UnrecoverableChainError(
                    f"transaction {str(tx_hash)[:12]}… of {sender} has nonce {nonce}, the chain expects "
                    f"{expected}: "
                    + (
                        "a transaction before it is not in this database's journal"
                        if nonce > expected
                        else "its nonce went to another transaction: the chain's history differs"
                    )
                    + f" ({replayed} replayed before it)"
                )
            try:
                chain.send_raw(raw)
            except StaleNonceError:
                raise UnrecoverableChainError(
                    f"transaction {str(tx_hash)[:12]}… cannot be sent again: its sender's nonce went to "
                    f"another transaction on this chain ({replayed} replayed before it): the chain's "
                    "history differs from the database's, it is not only shorter"
                ) from None
            receipt = chain.wait(bytes.fromhex(str(tx_hash)[2:]))  # type: ignore[arg-type]
            if receipt["status"] != 1:
                raise UnrecoverableChainError(
                    f"transaction {str(tx_hash)[:12]}… mined when first sent, reverted when sent again "
                    f"({replayed} replayed before it): the chain's state differs from the journal's"
                )
            replayed += 1
        # each stored period from where the chain has it (before the strict check: a transaction of the
        # database that the chain lost is what that check refuses)
        record = platform.stored.record
        job = SettlementJob(
            platform.sessions,
            chain,
            record,
            platform.actors(("settler",)),
            batch_size=policy.claim_batch,
            travel_time=True,  # a local chain (checked above)
        )
        with platform.sessions() as session:
            periods = list(
                session.scalars(
                    select(Period.id).where(Period.status != PeriodStatus.BUILT).order_by(Period.id)
                )
            )
        changed = [period_id for period_id in periods if job.align(period_id)]
        platform.check(strict=True)
        # the index is read again from the chain alone: events of lost blocks go, replayed ones come back
        EventIndexer(platform.sessions, chain, record.settlement, record.block_number).rebuild()
        for period_id in changed:
            resume(platform, period_id, policy)
        report = platform.reconcile()
        logger.info(
            "chain recovered: %d transaction(s) replayed, periods settled again: %s", replayed, changed
        )
        return RecoveryResult(
            journaled=len(transactions),
            on_chain=on_chain,
            replayed=replayed,
            resettled=changed,
            head_before=head_before,
            head_after=int(chain.w3.eth.block_number),
            mismatch_before=mismatch,
            reconciliation=report,
        )
