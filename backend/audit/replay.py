"""Rebuild the settlement contract's ledger from its events alone.

Every balance change of ``V2GSettlement`` is an event, so an auditor with
nothing but the chain can recompute every ledger balance, debt and period
reserve, and compare them with the contract's views.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LEDGER_EVENTS = (
    "Deposited",
    "Withdrawn",
    "PeriodProposed",
    "PeriodFinalised",
    "ReserveReleased",
    "CreditShortfallPaid",
    "EntryClaimed",
    "DebtRepaid",
    "CreditOwed",
    "DebtOffset",
    "OwedCreditPaid",
)


@dataclass(frozen=True)
class LoggedEvent:
    """A decoded event with its position on chain."""

    name: str
    block_number: int
    log_index: int
    tx_hash: str
    args: dict[str, Any]


@dataclass
class Ledger:
    """Balances, debts, credits the aggregator owes, and per-period unclaimed credit/debit, in token base
    units."""

    aggregator: str
    balances: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    debts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    owed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reserved_credit: dict[int, int] = field(default_factory=dict)
    remaining_debit: dict[int, int] = field(default_factory=dict)

    def apply(self, event: LoggedEvent) -> None:
        a = event.args
        if event.name == "Deposited":
            self.balances[a["account"]] += a["amount"]
            if a["debtRepaid"]:
                self.debts[a["account"]] -= a["debtRepaid"]
                self.balances[self.aggregator] += a["debtRepaid"]
        elif event.name == "Withdrawn":
            self.balances[a["account"]] -= a["amount"]
        elif event.name == "PeriodProposed":  # the float moves into the period's reserve at proposal
            self.balances[self.aggregator] -= a["totalCredit"]
            period = a["periodId"]
            self.reserved_credit[period] = self.reserved_credit.get(period, 0) + a["totalCredit"]
        elif event.name == "PeriodFinalised":
            self.remaining_debit[a["periodId"]] = a["totalDebit"]
        elif event.name == "ReserveReleased":  # dispute, all claimed, deadline passed, meter rotated away
            self.balances[self.aggregator] += a["amount"]
            self.reserved_credit[a["periodId"]] -= a["amount"]
        elif event.name == "CreditShortfallPaid":  # credit beyond the reserve, from the aggregator's balance
            self.balances[self.aggregator] -= a["amount"]
            self.reserved_credit[a["periodId"]] = self.reserved_credit.get(a["periodId"], 0) + a["amount"]
        elif event.name == "DebtRepaid":  # part of a credit repaid the owner's debt
            self.debts[a["owner"]] -= a["amount"]
            self.balances[self.aggregator] += a["amount"]
        elif event.name == "CreditOwed":  # part of a credit neither the reserve nor the aggregator funded
            self.owed[a["owner"]] += a["amount"]
        elif event.name == "DebtOffset":  # a debt and an owed credit cancelled each other
            self.debts[a["account"]] -= a["amount"]
            self.owed[a["account"]] -= a["amount"]
        elif event.name == "OwedCreditPaid":
            self.owed[a["account"]] -= a["amount"]
            self.balances[self.aggregator] -= a["amount"]
            self.balances[a["account"]] += a["amount"]
        elif event.name == "EntryClaimed":
            owner, amount = a["owner"], a["amount"]
            if amount > 0:
                # the funded part (reserve, topped up by any shortfall paid) went to the owner's balance,
                # less what repaid its debt (DebtRepaid); the rest is owed (CreditOwed)
                period = a["periodId"]
                funded = min(amount, self.reserved_credit.get(period, 0))
                self.reserved_credit[period] = self.reserved_credit.get(period, 0) - funded
                self.balances[owner] += a["paid"]
            else:
                self.balances[owner] -= a["paid"]
                self.balances[self.aggregator] += a["paid"]
                self.debts[owner] += a["debtAdded"]
                self.remaining_debit[a["periodId"]] = self.remaining_debit.get(a["periodId"], 0) + amount

    @property
    def total_held(self) -> int:
        """What the contract must hold in tokens: every balance plus every unclaimed reserved credit."""
        return sum(self.balances.values()) + sum(self.reserved_credit.values())


def replay(aggregator: str, events: Iterable[LoggedEvent]) -> Ledger:
    """Apply ``events`` in chain order."""
    ledger = Ledger(aggregator)
    for event in sorted(events, key=lambda e: (e.block_number, e.log_index)):
        ledger.apply(event)
    return ledger


def fetch_events(
    contract: Any, from_block: int, to_block: int, names: Iterable[str] = LEDGER_EVENTS, step: int = 500
) -> list[LoggedEvent]:
    """Decoded events of ``contract`` between two blocks, queried in bounded block ranges."""
    out: list[LoggedEvent] = []
    for name in names:
        event = getattr(contract.events, name)
        start = from_block
        while start <= to_block:
            end = min(start + step - 1, to_block)
            for log in event().get_logs(from_block=start, to_block=end):
                out.append(
                    LoggedEvent(
                        name,
                        int(log["blockNumber"]),
                        int(log["logIndex"]),
                        log["transactionHash"].hex(),
                        dict(log["args"]),
                    )
                )
            start = end + 1
    out.sort(key=lambda e: (e.block_number, e.log_index))
    return out
