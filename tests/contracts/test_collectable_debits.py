"""Issue 24: debits that are always collected, credits that are always paid.

One test per escape found by the attack scripts. Each failed on the previous contract (the notice never
expired, credits never repaid debt, a dispute outlasted the notice, a pause erased debits, an
under-declared total shorted a claimant, roles were granted instantly and to the meter key) and asserts
the exact error or event of the rule that closes it.
"""

from __future__ import annotations

from dataclasses import replace

from backend.chain.contracts import InitialRoles, SettlementClient
from tests.contracts.conftest import CLAIM_WINDOW, FLOAT, LIVENESS, NOTICE, UNIT, World
from tests.contracts.test_settlement import addr, refused

DAY = 24 * 3600


def now(world: World) -> int:
    return int(world.chain.w3.eth.get_block("latest")["timestamp"])


def test_a_notice_expires_so_an_old_one_cannot_outrun_a_new_debit(world: World) -> None:
    # Notice while owing nothing, wait it out, charge 30 days later, withdraw once the debit is proposed:
    # the notice has expired (WITHDRAWAL_WINDOW after it ran out) and the debit is collected in full.
    owner = world.owners[0]
    world.settlement.deposit(owner, 10 * UNIT)
    world.settlement.request_withdrawal(owner, 10 * UNIT)
    _, available_at, expires_at = world.settlement.withdrawal_of(owner.address)
    assert expires_at == available_at + 7 * DAY
    world.chain.advance_time(30 * DAY)
    period = world.propose(1, [(addr(world, 1), UNIT), (owner.address, -8 * UNIT)])
    with refused(world, "WithdrawalNoticeExpired", account=owner.address, expiredAt=expires_at):
        world.settlement.withdraw(owner, 10 * UNIT)
    world.chain.advance_time(LIVENESS + 1)
    world.settlement.finalise(world.settler, 1, period.header)
    receipt = world.settlement.claim(
        world.settler, 1, period.header, 1, owner.address, -8 * UNIT, period.proof(1)
    )
    (claimed,) = world.settlement.events(receipt, "EntryClaimed")
    assert (claimed["paid"], claimed["debtAdded"]) == (8 * UNIT, 0)


def test_a_credit_repays_the_owners_debt_first(world: World) -> None:
    # An owner who owes 8 receives a credit of 10: 8 repay the debt, 2 reach the balance.
    owner = world.owners[0]
    debit = world.finalised(1, [(owner.address, -8 * UNIT), (addr(world, 1), UNIT)])
    world.settlement.claim(world.settler, 1, debit.header, 0, owner.address, -8 * UNIT, debit.proof(0))
    assert world.settlement.debt_of(owner.address) == 8 * UNIT
    credit = world.finalised(2, [(owner.address, 10 * UNIT)])
    receipt = world.settlement.claim(owner, 2, credit.header, 0, owner.address, 10 * UNIT, credit.proof(0))
    assert world.settlement.events(receipt, "DebtRepaid") == [{"owner": owner.address, "amount": 8 * UNIT}]
    (claimed,) = world.settlement.events(receipt, "EntryClaimed")
    assert (claimed["amount"], claimed["paid"], claimed["debtAdded"]) == (10 * UNIT, 2 * UNIT, 0)
    assert world.settlement.debt_of(owner.address) == 0
    assert world.settlement.balance_of(owner.address) == 2 * UNIT
    assert world.settlement.balance_of(world.aggregator.address) == FLOAT - UNIT - 10 * UNIT + 8 * UNIT


def test_a_dispute_at_the_windows_end_and_a_re_proposal_are_outlasted_by_the_notice(world: World) -> None:
    # A 3-day challenge window with the shortest notice the contract allows (3 + 1 + 1 days): the auditor
    # disputes at the window's end, the corrected period is proposed at once; the owner's notice now runs
    # from the dispute, so the corrected debit is finalised and collected before the owner can leave.
    liveness = 3 * DAY
    settlement, _ = SettlementClient.deploy(
        world.chain,
        world.admin,
        world.token.address,
        world.admin.address,
        world.settler.address,
        world.meter.address,
        liveness,
        roles=InitialRoles(world.settler.address, world.auditor.address, world.admin.address),
        notice_s=liveness + 2 * DAY,
        claim_window_s=CLAIM_WINDOW,
    )
    w = replace(world, settlement=settlement)
    owner = w.owners[0]
    for account in (owner, w.aggregator):
        w.token.approve(account, settlement.address, 2**256 - 1)
    settlement.deposit(w.aggregator, FLOAT)
    settlement.deposit(owner, 10 * UNIT)
    entries = [(addr(w, 1), UNIT), (owner.address, -9 * UNIT)]
    period = w.propose(1, entries)
    settlement.request_withdrawal(owner, 10 * UNIT)
    w.chain.advance_time(liveness - 5)
    settlement.dispute(w.auditor, 1, period.header, b"wrong tariff".ljust(32, b"\0"))
    disputed_at = now(w)
    corrected = w.propose(2, entries)
    w.chain.advance_time(2 * DAY + 10)  # the notice as first given has run out ...
    due = disputed_at + liveness + 2 * DAY
    with refused(
        w, "WithdrawalNotDue", account=owner.address, availableAt=due
    ):  # ... but runs from the dispute
        settlement.withdraw(owner, 10 * UNIT)
    w.chain.advance_time(corrected.header.challenge_ends + 2 - now(w))
    settlement.finalise(w.settler, 2, corrected.header)
    receipt = settlement.claim(
        w.settler, 2, corrected.header, 1, owner.address, -9 * UNIT, corrected.proof(1)
    )
    (claimed,) = settlement.events(receipt, "EntryClaimed")
    assert (claimed["paid"], claimed["debtAdded"]) == (9 * UNIT, 0)
    w.chain.advance_time(due - now(w) + 1)
    settlement.withdraw(owner, UNIT)
    assert settlement.balance_of(owner.address) == 0


def test_a_pause_cannot_erase_a_debit(world: World) -> None:
    # Claims go on while paused and withdrawals wait: a long pause no longer lets an owner leave with
    # money its finalised debit is owed from, and no claim window closes for it.
    owner = world.owners[0]
    world.settlement.deposit(owner, 10 * UNIT)
    period = world.finalised(1, [(addr(world, 1), UNIT), (owner.address, -6 * UNIT)])
    world.settlement.request_withdrawal(owner, 10 * UNIT)
    world.settlement.pause(world.admin)
    world.chain.advance_time(NOTICE + DAY)
    with refused(world, "EnforcedPause"):
        world.settlement.withdraw(owner, 10 * UNIT)
    receipt = world.settlement.claim(
        world.settler, 1, period.header, 1, owner.address, -6 * UNIT, period.proof(1)
    )
    (claimed,) = world.settlement.events(receipt, "EntryClaimed")
    assert (claimed["paid"], claimed["debtAdded"]) == (6 * UNIT, 0)
    world.settlement.claim(world.owners[1], 1, period.header, 0, addr(world, 1), UNIT, period.proof(0))
    assert world.settlement.balance_of(addr(world, 1)) == UNIT


def test_an_under_declared_total_is_owed_by_the_aggregator_which_cannot_withdraw_meanwhile(
    world: World,
) -> None:
    # The meter signed credits of 6 for a tree paying 5 + 5, and the aggregator withdrew its free balance:
    # the last claimant is not refused but owed the 4 (CreditOwed), the aggregator cannot withdraw while it
    # owes, and its next deposit pays the owner (payOwed).
    owner = world.owners[0]
    entries = [(addr(world, 1), 5 * UNIT), (owner.address, 5 * UNIT)]
    tree = world.tree(1, entries)
    signature = world.sign(1, tree.root, 6 * UNIT, 0, 2)
    header, _ = world.settlement.propose(world.settler, 1, tree.root, 6 * UNIT, 0, 2, signature)
    world.settlement.request_withdrawal(world.aggregator, FLOAT - 6 * UNIT)
    world.chain.advance_time(NOTICE)
    world.settlement.withdraw(world.aggregator, FLOAT - 6 * UNIT - UNIT)  # keeps 1 free
    world.settlement.finalise(world.settler, 1, header)
    world.settlement.claim(world.owners[1], 1, header, 0, addr(world, 1), 5 * UNIT, tree.proof(0))
    receipt = world.settlement.claim(owner, 1, header, 1, owner.address, 5 * UNIT, tree.proof(1))
    assert world.settlement.events(receipt, "CreditShortfallPaid") == [
        {"periodId": 1, "entryId": 1, "amount": UNIT}
    ]
    assert world.settlement.events(receipt, "CreditOwed") == [
        {"periodId": 1, "entryId": 1, "owner": owner.address, "amount": 3 * UNIT}
    ]
    assert world.settlement.balance_of(owner.address) == 2 * UNIT
    assert (world.settlement.owed_to(owner.address), world.settlement.owed_total()) == (3 * UNIT, 3 * UNIT)
    with refused(world, "AggregatorUnderfunded", required=3 * UNIT, available=0):
        world.settlement.pay_owed(world.outsider, owner.address)
    world.settlement.deposit(world.aggregator, 10 * UNIT)
    with refused(world, "CreditsOwed", total=3 * UNIT):
        world.settlement.withdraw(world.aggregator, 1)
    receipt = world.settlement.pay_owed(world.outsider, owner.address)
    assert world.settlement.events(receipt, "OwedCreditPaid") == [
        {"account": owner.address, "amount": 3 * UNIT}
    ]
    assert world.settlement.balance_of(owner.address) == 5 * UNIT
    assert world.settlement.owed_total() == 0
    with refused(world, "NothingOwed", account=owner.address):
        world.settlement.pay_owed(world.outsider, owner.address)


def test_a_late_claim_after_release_and_an_empty_float_is_owed_not_lost(world: World) -> None:
    owner = world.owners[0]
    period = world.finalised(1, [(owner.address, 7 * UNIT)])
    world.chain.advance_time(CLAIM_WINDOW + 1)
    world.settlement.release(world.outsider, 1, period.header)
    world.settlement.request_withdrawal(world.aggregator, FLOAT)
    world.chain.advance_time(NOTICE)
    world.settlement.withdraw(world.aggregator, FLOAT)
    receipt = world.settlement.claim(owner, 1, period.header, 0, owner.address, 7 * UNIT, period.proof(0))
    assert world.settlement.events(receipt, "CreditOwed")[0]["amount"] == 7 * UNIT
    # an owed credit pays a later debit first (DebtOffset), so neither side holds both
    debit = world.finalised(2, [(owner.address, -2 * UNIT)])
    receipt = world.settlement.claim(
        world.settler, 2, debit.header, 0, owner.address, -2 * UNIT, debit.proof(0)
    )
    assert world.settlement.events(receipt, "DebtOffset") == [{"account": owner.address, "amount": 2 * UNIT}]
    assert (world.settlement.owed_to(owner.address), world.settlement.debt_of(owner.address)) == (5 * UNIT, 0)


def test_roles_are_granted_a_notice_after_they_are_announced_and_stay_separate(world: World) -> None:
    s, admin = world.settlement, world.admin
    with refused(world, "RoleGrantNotScheduled"):
        s.grant_role(admin, "AUDITOR_ROLE", admin.address)
    with refused(world, "RoleConflict", account=admin.address):  # the admin never audits itself
        s.schedule_role_grant(admin, "AUDITOR_ROLE", admin.address)
    with refused(world, "RoleConflict", account=world.aggregator.address):
        s.schedule_role_grant(admin, "AUDITOR_ROLE", world.aggregator.address)
    with refused(world, "MeterCannotHoldRole", account=world.meter.address):
        s.schedule_role_grant(admin, "SETTLER_ROLE", world.meter.address)
    with refused(world, "RoleConflict", account=world.auditor.address):
        s.schedule_role_grant(admin, "SETTLER_ROLE", world.auditor.address)
    receipt = s.schedule_role_grant(admin, "PAUSER_ROLE", world.outsider.address)
    (scheduled,) = s.events(receipt, "RoleGrantScheduled")
    assert scheduled["effectiveAt"] == now(world) + NOTICE
    with refused(world, "RoleGrantNotDue", effectiveAt=scheduled["effectiveAt"]):
        s.grant_role(admin, "PAUSER_ROLE", world.outsider.address)
    world.chain.advance_time(NOTICE)
    s.grant_role(admin, "PAUSER_ROLE", world.outsider.address)
    assert s.has_role("PAUSER_ROLE", world.outsider.address)
    assert s.role_grant_at("PAUSER_ROLE", world.outsider.address) == 0  # a grant is used once
    with refused(world, "MeterCannotHoldRole", account=world.outsider.address):  # a role holder never meters
        s.set_meter(admin, world.outsider.address)
