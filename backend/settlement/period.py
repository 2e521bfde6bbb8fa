"""Settlement periods: settled trades → one entry per owner (net amount) → Merkle tree and totals.

An entry is ``(chainId, contract, periodId, entryId, owner, amount)`` with the
OpenZeppelin standard leaf; the itemised trades behind each entry stay in the
database and in the owner's statement. One entry per owner keeps claims to one
leaf per owner and period (1,000 owners: five batch transactions).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backend.settlement.merkle import StandardMerkleTree
from backend.settlement.tariff import SettledTrade

LEAF_TYPES = ("uint256", "address", "uint64", "uint256", "address", "int256")
MAX_AMOUNT = 2**96 - 1


class PeriodBuildError(ValueError):
    """Trades that cannot form a period (unknown owner, amount out of range, nothing to settle)."""


@dataclass(frozen=True)
class Entry:
    entry_id: int
    owner_id: str
    address: str
    amount: int
    trades: tuple[SettledTrade, ...]


@dataclass(frozen=True)
class PeriodBuild:
    period_id: int
    chain_id: int
    contract: str
    entries: tuple[Entry, ...]
    tree: StandardMerkleTree

    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def total_credit(self) -> int:
        return sum(e.amount for e in self.entries if e.amount > 0)

    @property
    def total_debit(self) -> int:
        return -sum(e.amount for e in self.entries if e.amount < 0)

    def proof(self, entry_id: int) -> list[bytes]:
        return self.tree.proof(entry_id)


def build_period(
    period_id: int,
    settled: Sequence[SettledTrade],
    addresses: Mapping[str, str],
    *,
    chain_id: int,
    contract: str,
) -> PeriodBuild:
    """Net each owner's settled trades into one entry; owners whose net is zero get none."""
    by_owner: dict[str, list[SettledTrade]] = defaultdict(list)
    for st in settled:
        if st.trade.owner not in addresses:
            raise PeriodBuildError(f"owner {st.trade.owner} has no registered address")
        by_owner[st.trade.owner].append(st)
    rows = sorted(
        (
            (addresses[owner], owner, sum(s.amount for s in items), tuple(items))
            for owner, items in by_owner.items()
        ),
        key=lambda r: r[0].lower(),
    )
    entries: list[Entry] = []
    for address, owner, amount, items in rows:
        if amount == 0:
            continue
        if abs(amount) > MAX_AMOUNT:
            raise PeriodBuildError(f"owner {owner}: net amount {amount} exceeds 2^96 - 1 base units")
        entries.append(Entry(len(entries), owner, address, amount, items))
    if not entries:
        raise PeriodBuildError(f"period {period_id}: nothing to settle")
    tree = StandardMerkleTree.of(
        [(chain_id, contract, period_id, e.entry_id, e.address, e.amount) for e in entries], LEAF_TYPES
    )
    return PeriodBuild(period_id, chain_id, contract, tuple(entries), tree)
