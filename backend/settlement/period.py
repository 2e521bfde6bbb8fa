"""Settlement periods: settled trades → one entry per owner (net amount) → Merkle tree and totals.

An entry is ``(chainId, contract, periodId, entryId, owner, amount)`` with the
OpenZeppelin standard leaf; the itemised trades behind each entry stay in the
database and in the owner's statement. One entry per owner keeps claims to one
leaf per owner and period (1,000 owners: five batch transactions).

A period of 1,000,000 owners is millions of small objects (trades, entries,
leaves); Python's cyclic garbage collector, which scans them all again and again
while they are made, is paused for the build (:func:`gc_paused`): they hold no
cycles, reference counting frees them.
"""

from __future__ import annotations

import gc
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

from backend.settlement.merkle import StandardMerkleTree, leaves
from backend.settlement.tariff import SettledTrade

LEAF_TYPES = ("uint256", "address", "uint64", "uint256", "address", "int256")
MAX_AMOUNT = 2**96 - 1


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside the block (nested and concurrent blocks: on again after the
    last one, and only if it was on before the first)."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


class PeriodBuildError(ValueError):
    """Trades that cannot form a period (unknown owner, amount out of range, nothing to settle)."""


class Entry(NamedTuple):
    """One owner's net amount in a period and the settled trades behind it (a tuple: a million are made
    per period)."""

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
    #: Owners whose trades net to zero (energy at a zero price, or a charge and a discharge that cancel):
    #: settled, with no entry (nothing to pay); their trades are stored with entry id :data:`NO_ENTRY`.
    zero_net: tuple[Entry, ...] = ()

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


#: The entry id of a settled trade whose owner nets to zero in its period (no entry, nothing to pay).
NO_ENTRY = -1


def net_entries(settled: Sequence[SettledTrade], addresses: Mapping[str, str]) -> list[Entry]:
    """One entry per owner with a non-zero net amount, in address order (ids 0, 1, ...)."""
    return net_and_zero(settled, addresses)[0]


def net_and_zero(
    settled: Sequence[SettledTrade], addresses: Mapping[str, str]
) -> tuple[list[Entry], list[Entry]]:
    """In one pass over the trades: the entries (:func:`net_entries`) and the owners whose trades net to
    zero, each with its trades (entry id :data:`NO_ENTRY`, in owner order)."""
    by_owner: dict[str, list[SettledTrade]] = defaultdict(list)
    for st in settled:
        by_owner[st.trade.owner].append(st)
    unknown = by_owner.keys() - addresses.keys()
    if unknown:
        raise PeriodBuildError(f"owner {min(unknown)} has no registered address")
    rows = []
    zero = []
    for owner, items in by_owner.items():
        address = addresses[owner]
        amount = sum([s.amount for s in items]) if len(items) > 1 else items[0].amount
        if amount != 0:
            rows.append((address.lower(), address, owner, amount, items))
        else:
            zero.append(Entry(NO_ENTRY, owner, address, 0, tuple(items)))
    rows.sort(key=itemgetter(0))  # stable, as the address order of the leaves must be
    for _, _, owner, amount, _ in rows:
        if not -MAX_AMOUNT <= amount <= MAX_AMOUNT:
            raise PeriodBuildError(f"owner {owner}: net amount {amount} exceeds 2^96 - 1 base units")
    entries = [
        Entry(entry_id, owner, address, amount, tuple(items))
        for entry_id, (_, address, owner, amount, items) in enumerate(rows)
    ]
    return entries, sorted(zero, key=lambda e: e.owner_id)


def period_tree(
    period_id: int, entries: Sequence[Entry], *, chain_id: int, contract: str
) -> StandardMerkleTree:
    """The Merkle tree of the entries' leaves ``(chainId, contract, periodId, entryId, owner, amount)``."""
    rows = [(e.entry_id, e.address, e.amount) for e in entries]
    hashes = leaves(LEAF_TYPES, rows, common=(chain_id, contract, period_id))
    return StandardMerkleTree.from_leaves(hashes, LEAF_TYPES)


def build_period(
    period_id: int,
    settled: Sequence[SettledTrade],
    addresses: Mapping[str, str],
    *,
    chain_id: int,
    contract: str,
) -> PeriodBuild:
    """Net each owner's settled trades into one entry; owners whose net is zero get none (their trades
    are kept in :attr:`PeriodBuild.zero_net`: energy settled at no cost is settled energy)."""
    with gc_paused():
        entries, zero = net_and_zero(settled, addresses)
        if not entries:
            raise PeriodBuildError(f"period {period_id}: nothing to settle")
        tree = period_tree(period_id, entries, chain_id=chain_id, contract=contract)
    return PeriodBuild(period_id, chain_id, contract, tuple(entries), tree, tuple(zero))
