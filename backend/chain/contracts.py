"""Typed clients of the project's contracts: the test stablecoin and the settlement contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from backend.chain.client import Chain, ContractClient


class TokenClient(ContractClient):
    """TestStablecoin (6 decimals, minting by role)."""

    artifact_name = "TestStablecoin"

    @classmethod
    def deploy(
        cls, chain: Chain, admin: LocalAccount, name: str = "Test EUR", symbol: str = "tEUR"
    ) -> TokenClient:
        client, _ = cls.deploy_contract(chain, admin, name, symbol, admin.address)
        return client  # type: ignore[no-any-return]

    def mint(self, sender: LocalAccount, to: str, amount: int) -> TxReceipt:
        return self.chain.send(self.contract.functions.mint(to, amount), sender)

    def approve(self, sender: LocalAccount, spender: str, amount: int) -> TxReceipt:
        return self.chain.send(self.contract.functions.approve(spender, amount), sender)

    def balance_of(self, account: str) -> int:
        return int(self.chain.call(self.contract.functions.balanceOf(account)))


ZERO_ADDRESS = "0x" + "00" * 20


class MalformedSignatureError(ValueError):
    """A signature that is not 65 bytes ``(r, s, v)`` with v 27 or 28 and s below 2^255."""


def compact_signature(signature: bytes) -> tuple[bytes, bytes]:
    """EIP-2098's ``(r, yParity·2^255 | s)`` of a 65-byte ``(r, s, v)`` signature, as ``propose`` takes it."""
    if len(signature) != 65:
        raise MalformedSignatureError(f"a signature is 65 bytes (r, s, v), not {len(signature)}")
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    if v not in (27, 28) or s >= 2**255:
        raise MalformedSignatureError(f"v {v} and s {s:#x} have no compact form (EIP-2098)")
    return r, ((v - 27) << 255 | s).to_bytes(32, "big")


#: The notice beyond the challenge window: a day to propose the period that holds the notice (the
#: contract's PROPOSAL_GRACE) and a day to collect its debits (MIN_COLLECTION_TIME), the contract's minimum.
DEFAULT_COLLECTION_S = 2 * 24 * 3600
#: Credits stay reserved this long after the challenge window (then the reserve can be released).
DEFAULT_CLAIM_WINDOW_S = 30 * 24 * 3600
MAX_NOTICE_S = 90 * 24 * 3600


def default_notice_s(liveness_s: int) -> int:
    """The withdrawal notice for a challenge window: liveness plus :data:`DEFAULT_COLLECTION_S` (capped
    at the contract's maximum)."""
    return min(liveness_s + DEFAULT_COLLECTION_S, MAX_NOTICE_S)


class PeriodState(IntEnum):
    NONE = 0
    PROPOSED = 1
    DISPUTED = 2
    FINALISED = 3


@dataclass(frozen=True)
class InitialRoles:
    """The first holders of the settler, auditor and pauser roles, granted at deployment (zero: none)."""

    settler: str = ZERO_ADDRESS
    auditor: str = ZERO_ADDRESS
    pauser: str = ZERO_ADDRESS


@dataclass(frozen=True)
class PeriodHeader:
    """What a proposal commits to (see ``IV2GSettlement.PeriodHeader``)."""

    root: bytes
    total_credit: int
    total_debit: int
    entry_count: int
    challenge_ends: int

    def as_tuple(self) -> tuple[bytes, int, int, int, int]:
        return (self.root, self.total_credit, self.total_debit, self.entry_count, self.challenge_ends)


class SettlementClient(ContractClient):
    """V2GSettlement: escrow, periods, claims."""

    artifact_name = "V2GSettlement"

    @classmethod
    def deploy(
        cls,
        chain: Chain,
        sender: LocalAccount,
        token: str,
        admin: str,
        aggregator: str,
        meter: str,
        liveness_s: int,
        *,
        roles: InitialRoles | None = None,
        notice_s: int | None = None,
        claim_window_s: int = DEFAULT_CLAIM_WINDOW_S,
    ) -> tuple[SettlementClient, TxReceipt]:
        """Deploy V2GSettlement with its first settler, auditor and pauser (``roles``; every later grant
        waits a notice). ``notice_s`` (withdrawal notice, also the delay of meter, admin and role changes)
        defaults to the challenge window plus :data:`DEFAULT_COLLECTION_S`."""
        notice = notice_s if notice_s is not None else default_notice_s(liveness_s)
        first = roles or InitialRoles()
        client, receipt = cls.deploy_contract(
            chain,
            sender,
            token,
            admin,
            aggregator,
            meter,
            (first.settler, first.auditor, first.pauser),
            liveness_s,
            notice,
            claim_window_s,
        )
        return client, receipt

    # roles
    def role(self, name: str) -> bytes:
        return bytes(self.chain.call(getattr(self.contract.functions, name)()))

    def schedule_role_grant(self, admin: LocalAccount, role: str, account: str) -> TxReceipt:
        """The first step of a grant: possible with :meth:`grant_role` one notice period later."""
        return self.chain.send(self.contract.functions.scheduleRoleGrant(self.role(role), account), admin)

    def role_grant_at(self, role: str, account: str) -> int:
        return int(self._view("roleGrantAt", self.role(role), account))

    def grant_role(self, admin: LocalAccount, role: str, account: str) -> TxReceipt:
        """Grant a role scheduled at least a notice period ago (:meth:`schedule_role_grant`)."""
        return self.chain.send(self.contract.functions.grantRole(self.role(role), account), admin)

    def renounce_role(self, holder: LocalAccount, role: str) -> TxReceipt:
        return self.chain.send(self.contract.functions.renounceRole(self.role(role), holder.address), holder)

    def revoke_role(self, admin: LocalAccount, role: str, account: str) -> TxReceipt:
        return self.chain.send(self.contract.functions.revokeRole(self.role(role), account), admin)

    def has_role(self, role: str, account: str) -> bool:
        return bool(self.chain.call(self.contract.functions.hasRole(self.role(role), account)))

    # meter key
    def meter(self) -> str:
        return str(self._view("meter"))

    def pending_meter(self) -> tuple[str, int]:
        """The scheduled meter key and when it can be accepted (the zero address and 0 when none)."""
        pending, effective_at = self._view("pendingMeter")
        return str(pending), int(effective_at)

    def set_meter(self, admin: LocalAccount, meter: str) -> TxReceipt:
        """Schedule a meter key change (effective after :meth:`accept_meter`, one notice period on)."""
        return self.chain.send(self.contract.functions.setMeter(meter), admin)

    def accept_meter(self, admin: LocalAccount) -> TxReceipt:
        return self.chain.send(self.contract.functions.acceptMeter(), admin)

    def cancel_meter_change(self, admin: LocalAccount) -> TxReceipt:
        return self.chain.send(self.contract.functions.cancelMeterChange(), admin)

    # escrow
    def deposit(self, sender: LocalAccount, amount: int) -> TxReceipt:
        return self.chain.send(self.contract.functions.deposit(amount), sender)

    def deposit_for(self, sender: LocalAccount, account: str, amount: int) -> TxReceipt:
        return self.chain.send(self.contract.functions.depositFor(account, amount), sender)

    def deposit_for_many(
        self, sender: LocalAccount, accounts: Sequence[str], amounts: Sequence[int]
    ) -> TxReceipt:
        return self.chain.send(self.contract.functions.depositForMany(list(accounts), list(amounts)), sender)

    def request_withdrawal(self, sender: LocalAccount, amount: int) -> TxReceipt:
        """Give notice to withdraw up to ``amount`` after the notice period."""
        return self.chain.send(self.contract.functions.requestWithdrawal(amount), sender)

    def withdraw(self, sender: LocalAccount, amount: int) -> TxReceipt:
        """Withdraw within a notice that has run out (see :meth:`request_withdrawal`)."""
        return self.chain.send(self.contract.functions.withdraw(amount), sender)

    def withdrawal_of(self, account: str) -> tuple[int, int, int]:
        """The account's notice: ``(amount, available_at, expires_at)``, as things stand now (zeros: none)."""
        amount, available_at, expires_at = self._view("withdrawalOf", account)
        return int(amount), int(available_at), int(expires_at)

    def pay_owed(self, sender: LocalAccount, account: str) -> TxReceipt:
        return self.chain.send(self.contract.functions.payOwed(account), sender)

    def owed_to(self, account: str) -> int:
        return int(self._view("owedTo", account))

    def owed_total(self) -> int:
        return int(self._view("owedTotal"))

    # periods
    def period_digest(self, period_id: int, root: bytes, credit: int, debit: int, entry_count: int) -> bytes:
        fn = self.contract.functions.periodRootDigest(period_id, root, credit, debit, entry_count)
        return bytes(self.chain.call(fn))

    def propose(
        self,
        sender: LocalAccount,
        period_id: int,
        root: bytes,
        credit: int,
        debit: int,
        entry_count: int,
        signature: bytes,
        *,
        tx_nonce: int | None = None,
    ) -> tuple[PeriodHeader, TxReceipt]:
        fn = self.contract.functions.propose(
            period_id, root, credit, debit, entry_count, *compact_signature(signature)
        )
        receipt = self.chain.send(fn, sender, nonce=tx_nonce)
        (event,) = self.events(receipt, "PeriodProposed")
        return PeriodHeader(root, credit, debit, entry_count, int(event["challengeEnds"])), receipt

    def dispute(self, sender: LocalAccount, period_id: int, header: PeriodHeader, reason: bytes) -> TxReceipt:
        return self.chain.send(self.contract.functions.dispute(period_id, header.as_tuple(), reason), sender)

    def finalise(self, sender: LocalAccount, period_id: int, header: PeriodHeader) -> TxReceipt:
        return self.chain.send(self.contract.functions.finalise(period_id, header.as_tuple()), sender)

    def release(self, sender: LocalAccount, period_id: int, header: PeriodHeader) -> TxReceipt:
        """Return a period's unclaimed reserve to the aggregator (after its claim deadline, or once its
        meter key was rotated away)."""
        return self.chain.send(self.contract.functions.release(period_id, header.as_tuple()), sender)

    def claim(
        self,
        sender: LocalAccount,
        period_id: int,
        header: PeriodHeader,
        entry_id: int,
        owner: str,
        amount: int,
        proof: Sequence[bytes],
    ) -> TxReceipt:
        fn = self.contract.functions.claim(period_id, header.as_tuple(), entry_id, owner, amount, list(proof))
        return self.chain.send(fn, sender)

    def claim_batch(
        self,
        sender: LocalAccount,
        period_id: int,
        header: PeriodHeader,
        entry_ids: Sequence[int],
        owners: Sequence[str],
        amounts: Sequence[int],
        proofs: Sequence[Sequence[bytes]],
        *,
        tx_nonce: int | None = None,
    ) -> TxReceipt:
        fn = self.contract.functions.claimBatch(
            period_id,
            header.as_tuple(),
            list(entry_ids),
            list(owners),
            list(amounts),
            [list(p) for p in proofs],
        )
        return self.chain.send(fn, sender, nonce=tx_nonce)

    def pause(self, sender: LocalAccount) -> TxReceipt:
        return self.chain.send(self.contract.functions.pause(), sender)

    def unpause(self, sender: LocalAccount) -> TxReceipt:
        return self.chain.send(self.contract.functions.unpause(), sender)

    # views
    def _view(self, name: str, *args: Any) -> Any:
        return self.chain.call(getattr(self.contract.functions, name)(*args))

    def balance_of(self, account: str) -> int:
        return int(self._view("balanceOf", account))

    def debt_of(self, account: str) -> int:
        return int(self._view("debtOf", account))

    def balances_of(self, accounts: Sequence[str], chunk: int = 500) -> dict[str, tuple[int, int]]:
        """Ledger balance and debt of every account, in a few calls."""
        out: dict[str, tuple[int, int]] = {}
        for i in range(0, len(accounts), chunk):
            part = list(accounts[i : i + chunk])
            balances, debts = self._view("balancesOf", part)
            out |= {a: (int(b), int(d)) for a, b, d in zip(part, balances, debts, strict=True)}
        return out

    def period_state(self, period_id: int) -> PeriodState:
        return PeriodState(self._view("periodState", period_id))

    def remaining(self, period_id: int) -> tuple[int, int]:
        credit, debit = self._view("remaining", period_id)
        return int(credit), int(debit)

    def claimed_count(self, period_id: int) -> int:
        return int(self._view("claimedCount", period_id))

    def liveness(self) -> int:
        return int(self._view("liveness"))

    def notice_period(self) -> int:
        return int(self._view("noticePeriod"))

    def claim_window(self) -> int:
        return int(self._view("claimWindow"))

    def is_claimed(self, period_id: int, entry_id: int) -> bool:
        return bool(self._view("isClaimed", period_id, entry_id))

    def leaf(self, period_id: int, entry_id: int, owner: str, amount: int) -> bytes:
        return bytes(self._view("leaf", period_id, entry_id, owner, amount))

    def paused(self) -> bool:
        return bool(self._view("paused"))
