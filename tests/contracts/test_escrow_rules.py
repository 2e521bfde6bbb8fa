"""Issue 15: one deterministic test per weakness of the previous contract, with exact errors and events.

Each of these failed on the contract before the change (debits unsecured, reserve only at finalisation,
no release, batches reverting on an owner's own claim, unbounded liveness, instant meter changes).
"""

from __future__ import annotations

import pytest
from eth_utils.crypto import keccak

from backend.chain import errors
from backend.chain.contracts import PeriodState, SettlementClient
from tests.contracts.conftest import CLAIM_WINDOW, FLOAT, LIVENESS, NOTICE, UNIT, World
from tests.contracts.test_settlement import addr, funded_period, refused

DAY = 24 * 3600


def test_withdraw_reverts_without_notice_so_a_proposed_debit_is_collected(world: World) -> None:
    owner = world.owners[0]
    world.settlement.deposit(owner, 10 * UNIT)
    period = world.propose(1, [(addr(world, 1), UNIT), (owner.address, -8 * UNIT)])
    with refused(world, "WithdrawalNotRequested", account=owner.address, requested=10 * UNIT, pending=0):
        world.settlement.withdraw(owner, 10 * UNIT)
    receipt = world.settlement.request_withdrawal(owner, 10 * UNIT)
    (notice,) = world.settlement.events(receipt, "WithdrawalRequested")
    assert notice["availableAt"] > period.header.challenge_ends + DAY  # outlasts the challenge window
    with refused(world, "WithdrawalNotDue", account=owner.address, availableAt=notice["availableAt"]):
        world.settlement.withdraw(owner, 10 * UNIT)
    world.chain.advance_time(LIVENESS + 1)
    world.settlement.finalise(world.settler, 1, period.header)
    receipt = world.settlement.claim(
        world.settler, 1, period.header, 1, owner.address, -8 * UNIT, period.proof(1)
    )
    (claimed,) = world.settlement.events(receipt, "EntryClaimed")
    assert (claimed["paid"], claimed["debtAdded"]) == (8 * UNIT, 0)  # the debit is paid, no debt
    world.chain.advance_time(NOTICE)
    with refused(
        world, "InsufficientBalance", account=owner.address, available=2 * UNIT, requested=10 * UNIT
    ):
        world.settlement.withdraw(owner, 10 * UNIT)
    world.settlement.withdraw(owner, 2 * UNIT)


def test_propose_reserves_float_so_withdrawing_it_cannot_stall_finalise(world: World) -> None:
    period = world.propose(1, [(addr(world, 0), FLOAT)])
    assert world.settlement.balance_of(world.aggregator.address) == 0
    with refused(world, "InsufficientBalance", account=world.aggregator.address, available=0, requested=1):
        world.settlement.request_withdrawal(world.aggregator, 1)
    world.chain.advance_time(LIVENESS + 1)
    world.settlement.finalise(world.outsider, 1, period.header)
    assert world.settlement.remaining(1) == (FLOAT, 0)


def test_release_returns_unclaimed_reserve_after_the_claim_deadline(world: World) -> None:
    period = funded_period(world, [(addr(world, 0), 3 * UNIT), (addr(world, 1), 4 * UNIT)])
    deadline = period.header.challenge_ends + CLAIM_WINDOW
    world.settlement.claim(world.settler, 1, period.header, 0, addr(world, 0), 3 * UNIT, period.proof(0))
    with refused(world, "ClaimWindowOpen", periodId=1, claimDeadline=deadline):
        world.settlement.release(world.outsider, 1, period.header)
    world.chain.advance_time(CLAIM_WINDOW)
    before = world.settlement.balance_of(world.aggregator.address)
    receipt = world.settlement.release(world.outsider, 1, period.header)
    (event,) = world.settlement.events(receipt, "ReserveReleased")
    assert event == {"periodId": 1, "amount": 4 * UNIT}
    assert world.settlement.balance_of(world.aggregator.address) == before + 4 * UNIT
    with refused(world, "NothingToRelease", periodId=1):
        world.settlement.release(world.outsider, 1, period.header)
    # the late claimant is still paid, from the aggregator's free balance
    receipt = world.settlement.claim(
        world.settler, 1, period.header, 1, addr(world, 1), 4 * UNIT, period.proof(1)
    )
    (shortfall,) = world.settlement.events(receipt, "CreditShortfallPaid")
    assert shortfall["amount"] == 4 * UNIT


def test_over_declared_credit_returns_to_the_aggregator_when_every_entry_is_claimed(world: World) -> None:
    entries = [(addr(world, 0), 2 * UNIT)]
    tree = world.tree(1, entries)
    header, _ = world.settlement.propose(
        world.settler, 1, tree.root, 5 * UNIT, 0, 1, world.sign(1, tree.root, 5 * UNIT, 0, 1)
    )
    world.chain.advance_time(LIVENESS + 1)
    world.settlement.finalise(world.settler, 1, header)
    receipt = world.settlement.claim(world.settler, 1, header, 0, addr(world, 0), 2 * UNIT, tree.proof(0))
    (event,) = world.settlement.events(receipt, "ReserveReleased")
    assert event == {"periodId": 1, "amount": 3 * UNIT}
    assert world.settlement.balance_of(world.aggregator.address) == FLOAT - 2 * UNIT


def test_claimBatch_skips_an_entry_its_owner_claimed_first(world: World) -> None:
    owner = world.owners[0]
    entries = [(owner.address, UNIT), (addr(world, 1), 2 * UNIT)]
    period = funded_period(world, entries)
    world.settlement.claim(owner, 1, period.header, 0, owner.address, UNIT, period.proof(0))
    receipt = world.settlement.claim_batch(
        world.settler,
        1,
        period.header,
        [0, 1],
        [o for o, _ in entries],
        [a for _, a in entries],
        [period.proof(0), period.proof(1)],
    )
    (skipped,) = world.settlement.events(receipt, "EntrySkipped")
    assert skipped == {"periodId": 1, "entryId": 0}
    assert [e["entryId"] for e in world.settlement.events(receipt, "EntryClaimed")] == [1]
    assert world.settlement.balance_of(owner.address) == UNIT


def test_dispute_returns_the_reserve_and_claims_are_refused(world: World) -> None:
    period = world.propose(1, [(addr(world, 0), 5 * UNIT)])
    receipt = world.settlement.dispute(world.auditor, 1, period.header, keccak(b"bad"))
    (event,) = world.settlement.events(receipt, "ReserveReleased")
    assert event == {"periodId": 1, "amount": 5 * UNIT}
    assert world.settlement.balance_of(world.aggregator.address) == FLOAT
    world.chain.advance_time(LIVENESS + 1)
    with refused(
        world, "PeriodNotInState", periodId=1, expected=PeriodState.FINALISED, actual=PeriodState.DISPUTED
    ):
        world.settlement.claim(world.settler, 1, period.header, 0, addr(world, 0), 5 * UNIT, period.proof(0))


def test_window_boundary_dispute_at_the_last_second_finalise_one_after(world: World) -> None:
    period = world.propose(1, [(addr(world, 0), UNIT)])
    ends = period.header.challenge_ends
    world.chain.advance_time(ends - world.chain.timestamp() - 1)  # next block at exactly challengeEnds
    with refused(world, "ChallengeWindowOpen", periodId=1, challengeEnds=ends):
        world.settlement.finalise(world.settler, 1, period.header)
    snapshot = world.chain.snapshot()
    world.settlement.dispute(world.auditor, 1, period.header, b"\x00" * 32)  # still inside at challengeEnds
    world.chain.revert(snapshot)


def test_period_proposed_under_a_rotated_meter_cannot_finalise_and_is_voided(world: World) -> None:
    period = world.propose(1, [(addr(world, 0), 5 * UNIT)])
    world.settlement.set_meter(world.admin, world.owners[4].address)
    world.chain.advance_time(NOTICE)
    receipt = world.settlement.accept_meter(world.admin)
    since = world.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    proposed_at = period.header.challenge_ends - LIVENESS
    with refused(world, "MeterRotatedSinceProposal", periodId=1, proposedAt=proposed_at, meterSince=since):
        world.settlement.finalise(world.settler, 1, period.header)
    receipt = world.settlement.release(world.outsider, 1, period.header)
    assert world.settlement.events(receipt, "ReserveReleased")[0]["amount"] == 5 * UNIT
    assert world.settlement.period_state(1) is PeriodState.DISPUTED


def test_setMeter_refuses_the_aggregator_key(world: World) -> None:
    with refused(world, "MeterCannotPropose", account=world.aggregator.address):
        world.settlement.set_meter(world.admin, world.aggregator.address)


@pytest.mark.parametrize(
    ("liveness", "notice", "window", "error", "args"),
    [
        (0, None, CLAIM_WINDOW, "LivenessOutOfRange", {"liveness": 0, "min": 60, "max": 30 * DAY}),
        (2**64 - 1, 90 * DAY, CLAIM_WINDOW, "LivenessOutOfRange", {"liveness": 2**64 - 1}),
        (
            LIVENESS,
            LIVENESS,
            CLAIM_WINDOW,
            "NoticePeriodOutOfRange",
            {"noticePeriod": LIVENESS, "min": LIVENESS + 2 * DAY},
        ),
        (LIVENESS, NOTICE, 0, "ClaimWindowOutOfRange", {"claimWindow": 0, "min": DAY, "max": 365 * DAY}),
    ],
)
def test_constructor_reverts_bad_windows(
    world: World, liveness: int, notice: int | None, window: int, error: str, args: dict[str, int]
) -> None:
    with pytest.raises(errors.ContractRevertError) as caught:
        SettlementClient.deploy(
            world.chain,
            world.admin,
            world.token.address,
            world.admin.address,
            world.settler.address,
            world.meter.address,
            liveness,
            notice_s=notice if notice is not None else 2 * DAY,
            claim_window_s=window,
        )
    assert caught.value.name == error
    assert {k: caught.value.args_by_name[k] for k in args} == args


@pytest.mark.parametrize("call", ["pause", "unpause", "grant", "revoke", "setMeter", "acceptMeter"])
def test_admin_functions_revert_for_strangers(world: World, call: str) -> None:
    s, stranger = world.settlement, world.outsider
    if call == "unpause":
        s.pause(world.admin)
    fns = {
        "pause": lambda: s.pause(stranger),
        "unpause": lambda: s.unpause(stranger),
        "grant": lambda: s.grant_role(stranger, "SETTLER_ROLE", stranger.address),
        "revoke": lambda: s.revoke_role(stranger, "AUDITOR_ROLE", world.auditor.address),
        "setMeter": lambda: s.set_meter(stranger, stranger.address),
        "acceptMeter": lambda: s.accept_meter(stranger),
    }
    with refused(world, "AccessControlUnauthorizedAccount", account=stranger.address):
        fns[call]()


def test_depositForMany_credits_each_account_in_one_transfer(world: World) -> None:
    receipt = world.settlement.deposit_for_many(world.settler, [addr(world, 0), addr(world, 1)], [3, 4])
    assert [e["amount"] for e in world.settlement.events(receipt, "Deposited")] == [3, 4]
    assert world.settlement.balance_of(addr(world, 1)) == 4
    with refused(world, "ArrayLengthMismatch"):
        world.settlement.deposit_for_many(world.settler, [addr(world, 0)], [1, 2])
    with refused(world, "ZeroAddress"):
        world.settlement.deposit_for_many(world.settler, ["0x" + "00" * 20], [1])
    with refused(world, "ZeroAmount"):
        world.settlement.deposit_for_many(world.settler, [addr(world, 0)], [0])
    with refused(world, "BatchTooLarge", length=201, max=200):
        world.settlement.deposit_for_many(world.settler, [addr(world, 0)] * 201, [1] * 201)


def test_propose_reverts_signature_recovering_to_no_key(world: World) -> None:
    tree = world.tree(1, [(addr(world, 0), 1)])
    bad = b"\x00" * 32 + b"\x00" * 31 + b"\x01" + bytes([27])  # r = 0: ecrecover yields the zero address
    with refused(world, "ECDSAInvalidSignature"):
        world.settlement.propose(world.settler, 1, tree.root, 1, 0, 1, bad)


@pytest.mark.parametrize("where", ["first sibling", "last sibling", "appended", "swapped"])
def test_claim_reverts_mutated_proof_bytes(world: World, where: str) -> None:
    entries = [(addr(world, i), (i + 1) * UNIT) for i in range(5)]
    period = funded_period(world, entries)
    proof = list(period.proof(2))
    if where == "first sibling":
        proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    elif where == "last sibling":
        proof[-1] = proof[-1][:-1] + bytes([proof[-1][-1] ^ 0x80])
    elif where == "appended":
        proof.append(keccak(b"extra"))
    else:
        proof[0], proof[1] = proof[1], proof[0]
    with refused(world, "InvalidProof", periodId=1, entryId=2):
        world.settlement.claim(world.settler, 1, period.header, 2, addr(world, 2), 3 * UNIT, proof)
