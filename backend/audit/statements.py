"""Owner statements, reconciliation (database vs chain) and inclusion-proof verification."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from backend.audit.indexer import indexed_events, restore_args
from backend.audit.replay import replay
from backend.chain.contracts import SettlementClient
from backend.db.models import IndexedEvent, Period, PeriodEntry, SettledTradeRow
from backend.settlement.merkle import leaf_hash, verify
from backend.settlement.period import LEAF_TYPES


@dataclass(frozen=True)
class StatementLine:
    """One period of one owner: energy, money (base units), proof and the on-chain payment."""

    period_id: int
    entry_id: int
    charged_wh: int
    discharged_wh: int
    p2p_wh: int
    fees: int
    amount: int
    proof: tuple[str, ...]
    root: str | None
    claim_tx: str | None
    paid: int | None
    debt_added: int | None


@dataclass(frozen=True)
class Statement:
    owner_id: str
    address: str
    lines: tuple[StatementLine, ...]

    @property
    def total_amount(self) -> int:
        return sum(line.amount for line in self.lines)


def owner_statement(session: Session, contract: str, owner_id: str) -> Statement:
    """Every period of ``owner_id``: energy and fees from the settled trades, amount and proof from the
    entry, root and payment from the chain index."""
    entries = list(
        session.scalars(
            select(PeriodEntry).where(PeriodEntry.owner_id == owner_id).order_by(PeriodEntry.period_id)
        )
    )
    if not entries:
        return Statement(owner_id, "", ())
    address = entries[0].address
    energy = {
        row.period_id: row
        for row in session.execute(
            select(
                SettledTradeRow.period_id,
                func.sum(
                    case((SettledTradeRow.direction == "charge", SettledTradeRow.energy_wh), else_=0)
                ).label("ch"),
                func.sum(
                    case((SettledTradeRow.direction == "discharge", SettledTradeRow.energy_wh), else_=0)
                ).label("dis"),
                func.sum(SettledTradeRow.p2p_wh).label("p2p"),
            )
            .where(SettledTradeRow.owner_id == owner_id)
            .group_by(SettledTradeRow.period_id)
        )
    }
    fees: dict[int, int] = defaultdict(int)
    for period_id, fee in session.execute(
        select(SettledTradeRow.period_id, SettledTradeRow.fee).where(SettledTradeRow.owner_id == owner_id)
    ):
        fees[period_id] += int(fee)
    claims = {
        int(e.period_id or 0): (e.tx_hash, restore_args(e.args))
        for e in session.scalars(
            select(IndexedEvent).where(
                IndexedEvent.contract == contract,
                IndexedEvent.name == "EntryClaimed",
                IndexedEvent.account == address,
            )
        )
    }
    roots = {
        int(e.period_id or 0): str(e.args["root"])
        for e in session.scalars(
            select(IndexedEvent).where(
                IndexedEvent.contract == contract,
                IndexedEvent.name == "PeriodProposed",
                IndexedEvent.period_id.in_([x.period_id for x in entries]),
            )
        )
    }
    lines = []
    for e in entries:
        row = energy.get(e.period_id)
        claim = claims.get(e.period_id)
        lines.append(
            StatementLine(
                period_id=e.period_id,
                entry_id=e.entry_id,
                charged_wh=int(row.ch) if row else 0,
                discharged_wh=int(row.dis) if row else 0,
                p2p_wh=int(row.p2p) if row else 0,
                fees=fees[e.period_id],
                amount=e.amount,
                proof=tuple(e.proof),
                root=roots.get(e.period_id),
                claim_tx=claim[0] if claim else None,
                paid=int(claim[1]["paid"]) if claim else None,
                debt_added=int(claim[1]["debtAdded"]) if claim else None,
            )
        )
    return Statement(owner_id, address, tuple(lines))


@dataclass(frozen=True)
class Mismatch:
    kind: str
    period_id: int | None
    detail: str


@dataclass
class ReconciliationReport:
    periods: int = 0
    entries: int = 0
    accounts: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def reconcile(session: Session, settlement: SettlementClient, aggregator: str) -> ReconciliationReport:
    """Database vs chain: every period's root, totals and count; every entry's claim and payment; every
    ledger balance replayed from events vs the contract's view. Each mismatch is named."""
    report = ReconciliationReport()
    contract = settlement.address
    events = indexed_events(session, contract)
    proposed = {e.args["periodId"]: e.args for e in events if e.name == "PeriodProposed"}
    finalised = {e.args["periodId"] for e in events if e.name == "PeriodFinalised"}
    claimed: dict[tuple[int, int], dict[str, Any]] = {
        (e.args["periodId"], e.args["entryId"]): e.args for e in events if e.name == "EntryClaimed"
    }
    db_periods = {p.id: p for p in session.scalars(select(Period))}
    for pid, period in db_periods.items():
        report.periods += 1
        chain = proposed.get(pid)
        if chain is None:
            if period.status in ("built", "signed"):
                # not an inconsistency, but money the database says is owed and the chain does not know:
                # never "OK" until it is proposed (a settle killed before its proposal, resumed by running
                # it again)
                report.mismatches.append(
                    Mismatch(
                        "period_not_proposed",
                        pid,
                        f"status {period.status}: not on chain yet (run the settlement again to propose it)",
                    )
                )
            else:
                report.mismatches.append(Mismatch("period_missing_on_chain", pid, f"status {period.status}"))
            continue
        for field_name, ours, theirs in (
            ("root", period.root, chain["root"]),
            ("total_credit", period.total_credit, chain["totalCredit"]),
            ("total_debit", period.total_debit, chain["totalDebit"]),
            ("entry_count", period.entry_count, chain["entryCount"]),
        ):
            if ours != theirs:
                report.mismatches.append(
                    Mismatch(f"period_{field_name}", pid, f"database {ours}, chain {theirs}")
                )
        if period.status in ("finalised", "claimed") and pid not in finalised:
            report.mismatches.append(Mismatch("period_not_finalised_on_chain", pid, period.status))
    for pid in set(proposed) - set(db_periods):
        report.mismatches.append(Mismatch("period_unknown_to_database", pid, str(proposed[pid]["root"])))
    for entry in session.scalars(select(PeriodEntry)):
        report.entries += 1
        chain_claim = claimed.pop((entry.period_id, entry.entry_id), None)
        if entry.claimed and chain_claim is None:
            report.mismatches.append(
                Mismatch("entry_claim_missing_on_chain", entry.period_id, f"entry {entry.entry_id}")
            )
        elif chain_claim is not None:
            if not entry.claimed:
                report.mismatches.append(
                    Mismatch("entry_claimed_only_on_chain", entry.period_id, f"entry {entry.entry_id}")
                )
            if chain_claim["amount"] != entry.amount or chain_claim["owner"] != entry.address:
                report.mismatches.append(
                    Mismatch(
                        "entry_amount",
                        entry.period_id,
                        f"entry {entry.entry_id}: database {entry.amount}, chain {chain_claim['amount']}",
                    )
                )
    for pid, eid in claimed:
        report.mismatches.append(Mismatch("claim_unknown_to_database", pid, f"entry {eid}"))
    ledger = replay(aggregator, events)
    accounts = sorted(set(ledger.balances) | set(ledger.debts))
    on_chain = settlement.balances_of(accounts)
    for account in accounts:
        report.accounts += 1
        balance, debt = on_chain[account]
        if balance != ledger.balances.get(account, 0):
            report.mismatches.append(
                Mismatch(
                    "ledger_balance",
                    None,
                    f"{account}: events {ledger.balances.get(account, 0)}, chain {balance}",
                )
            )
        if debt != ledger.debts.get(account, 0):
            report.mismatches.append(
                Mismatch(
                    "ledger_debt", None, f"{account}: events {ledger.debts.get(account, 0)}, chain {debt}"
                )
            )
    return report


@dataclass(frozen=True)
class InclusionResult:
    valid: bool
    leaf: str
    root: str
    proof: tuple[str, ...]
    contract_leaf_matches: bool | None  # None when checked offline (no chain connection)


def verify_inclusion(
    session: Session,
    period_id: int,
    entry_id: int,
    *,
    chain_id: int,
    contract: str,
    settlement: SettlementClient | None = None,
    root: bytes | None = None,
) -> InclusionResult:
    """Prove an entry is in its period: the leaf recomputed from the stored entry, the root the chain's
    ``PeriodProposed`` log holds (``root``, read from the chain by the caller; else the indexed copy of
    that event, never the database's own period row); with ``settlement``, the contract's ``leaf`` view is
    compared too."""
    entry = session.get(PeriodEntry, (period_id, entry_id))
    if entry is None:
        raise KeyError(f"no entry {entry_id} in period {period_id}")
    leaf = leaf_hash(LEAF_TYPES, (chain_id, contract, period_id, entry_id, entry.address, entry.amount))
    if root is None:
        proposed = [
            e for e in indexed_events(session, contract, "PeriodProposed") if e.args["periodId"] == period_id
        ]
        if not proposed:
            raise KeyError(f"period {period_id} is not proposed on chain (or not indexed yet)")
        root = bytes.fromhex(str(proposed[-1].args["root"])[2:])
    proof = [bytes.fromhex(p[2:]) for p in entry.proof]
    matches = None
    if settlement is not None:
        matches = settlement.leaf(period_id, entry_id, entry.address, entry.amount) == leaf
    return InclusionResult(
        verify(root, leaf, proof), "0x" + leaf.hex(), "0x" + root.hex(), tuple(entry.proof), matches
    )
