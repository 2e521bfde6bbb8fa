"""A hypothesis state machine over deposit, propose, dispute, finalise, claim, withdraw, pause, unpause.

After every step it checks against a Python model and the chain:
- the contract's token balance = Σ ledger balances + unclaimed finalised credit;
- every balance and debt equals the model's; each leaf pays at most once;
- a finalised period never changes; only the settler proposes; nothing pays
  before the challenge window ends;
- a positive balance can always be withdrawn, paused or not (simulated call);
and at the end of each run that replaying every event rebuilds every balance exactly.

Default: a short run (< 3 min); ``-m slow`` runs a long one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from backend.audit.replay import fetch_events, replay
from backend.chain.client import Chain
from backend.chain.contracts import PeriodHeader, PeriodState
from backend.chain.errors import ContractRevertError
from backend.settlement.merkle import StandardMerkleTree
from tests.contracts.conftest import LIVENESS, UNIT, World, build_world


@dataclass
class ModelPeriod:
    header: PeriodHeader
    tree: StandardMerkleTree
    entries: list[tuple[str, int]]
    state: PeriodState = PeriodState.PROPOSED
    claimed: set[int] = field(default_factory=set)
    credit_left: int = 0
    debit_left: int = 0


_WORLD: World | None = None


def shared_world() -> World:
    global _WORLD
    if _WORLD is None:
        _WORLD = build_world(Chain.eth_tester())
    return _WORLD


class SettlementMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.w = shared_world()
        self.snapshot = self.w.chain.snapshot()
        self.first_block = self.w.chain.w3.eth.block_number + 1
        self.people = [self.w.settler, *self.w.owners]  # settler is also the aggregator
        self.balances: dict[str, int] = {
            a.address: self.w.settlement.balance_of(a.address) for a in self.people
        }
        self.debts: dict[str, int] = {a.address: 0 for a in self.people}
        self.periods: dict[int, ModelPeriod] = {}
        self.next_period = 1
        self.paused = False

    def teardown(self) -> None:
        if hasattr(self, "snapshot"):
            try:
                self.check_replay()
            finally:
                self.w.chain.revert(self.snapshot)

    # --- helpers ---------------------------------------------------------------

    def expect_revert(self, name: str, fn: Any, *args: Any) -> None:
        with pytest.raises(ContractRevertError) as caught:
            fn(*args)
        assert caught.value.name == name, caught.value

    def account(self, i: int) -> Any:
        return self.people[i % len(self.people)]

    # --- rules -------------------------------------------------------------------

    @rule(i=st.integers(0, 5), amount=st.integers(1, 300 * UNIT))
    def deposit(self, i: int, amount: int) -> None:
        acct = self.account(i)
        if self.paused:
            self.expect_revert("EnforcedPause", self.w.settlement.deposit, acct, amount)
            return
        self.w.settlement.deposit(acct, amount)
        repaid = min(self.debts[acct.address], amount)
        self.debts[acct.address] -= repaid
        self.balances[self.w.aggregator.address] += repaid
        self.balances[acct.address] += amount - repaid

    @rule(i=st.integers(0, 5), share=st.floats(0.01, 1.0))
    def withdraw(self, i: int, share: float) -> None:
        acct = self.account(i)
        balance = self.balances[acct.address]
        if balance == 0:
            self.expect_revert("InsufficientBalance", self.w.settlement.withdraw, acct, 1)
            return
        amount = max(1, int(balance * share))
        self.w.settlement.withdraw(acct, amount)  # never blocked by a pause
        self.balances[acct.address] -= amount

    @rule(
        entries=st.lists(
            st.tuples(st.integers(1, 5), st.integers(-40 * UNIT, 40 * UNIT).filter(bool)),
            min_size=1,
            max_size=6,
        ),
        by_settler=st.booleans(),
    )
    def propose(self, entries: list[tuple[int, int]], by_settler: bool) -> None:
        pid = self.next_period
        rows = [(self.account(i).address, amount) for i, amount in entries]
        tree = self.w.tree(pid, rows)
        credit = sum(a for _, a in rows if a > 0)
        debit = -sum(a for _, a in rows if a < 0)
        signature = self.w.sign(pid, tree.root, credit, debit, len(rows))
        sender = self.w.settler if by_settler else self.w.owners[0]
        call = (sender, pid, tree.root, credit, debit, len(rows), signature)
        if not by_settler:
            self.expect_revert("AccessControlUnauthorizedAccount", self.w.settlement.propose, *call)
            return
        if self.paused:
            self.expect_revert("EnforcedPause", self.w.settlement.propose, *call)
            return
        header, _ = self.w.settlement.propose(*call)
        self.periods[pid] = ModelPeriod(header, tree, rows)
        self.next_period += 1

    @precondition(lambda self: bool(self.periods))
    @rule(pick=st.integers(0, 100))
    def dispute(self, pick: int) -> None:
        pid = sorted(self.periods)[pick % len(self.periods)]
        p = self.periods[pid]
        now = self.w.chain.timestamp() + 1
        if p.state is not PeriodState.PROPOSED:
            self.expect_revert(
                "PeriodNotInState", self.w.settlement.dispute, self.w.auditor, pid, p.header, b"x" * 32
            )
        elif now > p.header.challenge_ends:
            self.expect_revert(
                "ChallengeWindowClosed", self.w.settlement.dispute, self.w.auditor, pid, p.header, b"x" * 32
            )
        else:
            self.w.settlement.dispute(self.w.auditor, pid, p.header, b"x" * 32)
            p.state = PeriodState.DISPUTED

    @rule(seconds=st.sampled_from([60, LIVENESS // 2, LIVENESS + 1]))
    def advance_time(self, seconds: int) -> None:
        self.w.chain.advance_time(seconds)

    @precondition(lambda self: bool(self.periods))
    @rule(pick=st.integers(0, 100))
    def finalise(self, pick: int) -> None:
        pid = sorted(self.periods)[pick % len(self.periods)]
        p = self.periods[pid]
        now = self.w.chain.timestamp() + 1
        args = (self.w.settler, pid, p.header)
        if self.paused:
            self.expect_revert("EnforcedPause", self.w.settlement.finalise, *args)
        elif p.state is not PeriodState.PROPOSED:
            self.expect_revert("PeriodNotInState", self.w.settlement.finalise, *args)
        elif now <= p.header.challenge_ends:
            self.expect_revert("ChallengeWindowOpen", self.w.settlement.finalise, *args)
        elif self.balances[self.w.aggregator.address] < p.header.total_credit:
            self.expect_revert("UnderfundedPeriod", self.w.settlement.finalise, *args)
        else:
            self.w.settlement.finalise(*args)
            self.balances[self.w.aggregator.address] -= p.header.total_credit
            p.state = PeriodState.FINALISED
            p.credit_left, p.debit_left = p.header.total_credit, p.header.total_debit

    @precondition(lambda self: bool(self.periods))
    @rule(pick=st.integers(0, 100), entry=st.integers(0, 10), by_owner=st.booleans())
    def claim(self, pick: int, entry: int, by_owner: bool) -> None:
        pid = sorted(self.periods)[pick % len(self.periods)]
        p = self.periods[pid]
        entry %= len(p.entries)
        owner, amount = p.entries[entry]
        caller = next(a for a in self.people if a.address == owner) if by_owner else self.w.settler
        args = (caller, pid, p.header, entry, owner, amount, p.tree.proof(entry))
        if self.paused:
            self.expect_revert("EnforcedPause", self.w.settlement.claim, *args)
        elif p.state is not PeriodState.FINALISED:
            self.expect_revert("PeriodNotInState", self.w.settlement.claim, *args)
        elif entry in p.claimed:
            self.expect_revert("AlreadyClaimed", self.w.settlement.claim, *args)
        else:
            self.w.settlement.claim(*args)
            p.claimed.add(entry)
            if amount > 0:
                self.balances[owner] += amount
                p.credit_left -= amount
            else:
                paid = min(self.balances[owner], -amount)
                self.balances[owner] -= paid
                self.balances[self.w.aggregator.address] += paid
                self.debts[owner] += -amount - paid
                p.debit_left += amount

    @rule()
    def pause(self) -> None:
        if self.paused:
            self.expect_revert("EnforcedPause", self.w.settlement.pause, self.w.admin)
        else:
            self.w.settlement.pause(self.w.admin)
            self.paused = True

    @rule()
    def unpause(self) -> None:
        if not self.paused:
            self.expect_revert("ExpectedPause", self.w.settlement.unpause, self.w.admin)
        else:
            self.w.settlement.unpause(self.w.admin)
            self.paused = False

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def token_balance_is_ledger_plus_reserve(self) -> None:
        if not hasattr(self, "w"):
            return
        reserved = sum(p.credit_left for p in self.periods.values() if p.state is PeriodState.FINALISED)
        assert self.w.token.balance_of(self.w.settlement.address) == sum(self.balances.values()) + reserved

    @invariant()
    def balances_debts_and_periods_match_the_model(self) -> None:
        if not hasattr(self, "w"):
            return
        s = self.w.settlement
        for address, balance in self.balances.items():
            assert s.balance_of(address) == balance
            assert s.debt_of(address) == self.debts[address]
        for pid, p in self.periods.items():
            assert s.period_state(pid) is p.state
            if p.state is PeriodState.FINALISED:
                assert s.remaining(pid) == (p.credit_left, p.debit_left)
                assert [s.is_claimed(pid, e) for e in range(len(p.entries))] == [
                    e in p.claimed for e in range(len(p.entries))
                ]
            else:
                assert not any(
                    s.is_claimed(pid, e) for e in range(len(p.entries))
                )  # nothing before finalising

    @invariant()
    def positive_balances_can_always_be_withdrawn(self) -> None:
        if not hasattr(self, "w"):
            return
        for address, balance in self.balances.items():
            if balance > 0:
                self.w.chain.call(self.w.settlement.contract.functions.withdraw(balance), address)

    def check_replay(self) -> None:
        latest = self.w.chain.w3.eth.block_number
        events = fetch_events(self.w.settlement.contract, self.first_block, latest)
        ledger = replay(self.w.aggregator.address, events)
        for address, balance in self.balances.items():
            start = 0  # the snapshot world starts with empty ledgers
            assert start + ledger.balances.get(address, 0) == balance, address
            assert ledger.debts.get(address, 0) == self.debts[address]
        assert ledger.total_held == self.w.token.balance_of(self.w.settlement.address)


SHORT = settings(
    max_examples=12,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
LONG = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_settlement_state_machine() -> None:
    SettlementMachine.TestCase.settings = SHORT
    SettlementMachine.TestCase().runTest()


@pytest.mark.slow
def test_settlement_state_machine_long() -> None:
    SettlementMachine.TestCase.settings = LONG
    SettlementMachine.TestCase().runTest()
