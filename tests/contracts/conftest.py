"""A deployed world on the embedded chain: token, settlement, roles, funded owners.

Deployed once per module; every test runs from a snapshot and is rolled back after.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount

from backend.chain.client import Chain
from backend.chain.contracts import InitialRoles, PeriodHeader, SettlementClient, TokenClient
from backend.settlement.merkle import StandardMerkleTree
from backend.settlement.signing import sign_period_root

LEAF_TYPES = ("uint256", "address", "uint64", "uint256", "address", "int256")
LIVENESS = 3600
NOTICE = LIVENESS + 2 * 24 * 3600  # withdrawal notice (and meter/admin change delay)
CLAIM_WINDOW = 30 * 24 * 3600
UNIT = 10**6  # one token in base units (6 decimals)
FLOAT = 200 * UNIT  # the aggregator's escrowed float in a fresh world


@dataclass
class Period:
    period_id: int
    header: PeriodHeader
    tree: StandardMerkleTree
    entries: list[tuple[str, int]]  # (owner, amount) by entry id

    def proof(self, entry_id: int) -> list[bytes]:
        return self.tree.proof(entry_id)


@dataclass
class World:
    chain: Chain
    token: TokenClient
    settlement: SettlementClient
    admin: LocalAccount
    settler: LocalAccount  # also the aggregator's account (the only proposer)
    auditor: LocalAccount
    meter: LocalAccount
    owners: list[LocalAccount]
    outsider: LocalAccount

    @property
    def aggregator(self) -> LocalAccount:
        return self.settler

    def tree(
        self,
        period_id: int,
        entries: Sequence[tuple[str, int]],
        *,
        contract: str | None = None,
        chain_id: int | None = None,
    ) -> StandardMerkleTree:
        cid = chain_id if chain_id is not None else self.chain.w3.eth.chain_id
        address = contract or self.settlement.address
        rows = [(cid, address, period_id, i, owner, amount) for i, (owner, amount) in enumerate(entries)]
        return StandardMerkleTree.of(rows, LEAF_TYPES)

    def sign(
        self,
        period_id: int,
        root: bytes,
        credit: int,
        debit: int,
        count: int,
        *,
        signer: LocalAccount | None = None,
        chain_id: int | None = None,
        contract: str | None = None,
    ) -> bytes:
        return sign_period_root(
            signer or self.meter,
            chain_id=chain_id if chain_id is not None else self.chain.w3.eth.chain_id,
            contract=contract or self.settlement.address,
            period_id=period_id,
            root=root,
            total_credit=credit,
            total_debit=debit,
            entry_count=count,
        )

    def propose(self, period_id: int, entries: Sequence[tuple[str, int]]) -> Period:
        tree = self.tree(period_id, entries)
        credit = sum(a for _, a in entries if a > 0)
        debit = -sum(a for _, a in entries if a < 0)
        signature = self.sign(period_id, tree.root, credit, debit, len(entries))
        header, _ = self.settlement.propose(
            self.settler, period_id, tree.root, credit, debit, len(entries), signature
        )
        return Period(period_id, header, tree, list(entries))

    def finalised(self, period_id: int, entries: Sequence[tuple[str, int]]) -> Period:
        period = self.propose(period_id, entries)
        self.chain.advance_time(LIVENESS + 1)
        self.settlement.finalise(self.settler, period_id, period.header)
        return period

    def withdraw(self, account: LocalAccount, amount: int) -> None:
        """Give notice, wait it out, withdraw."""
        self.settlement.request_withdrawal(account, amount)
        self.chain.advance_time(NOTICE)
        self.settlement.withdraw(account, amount)

    def balances(self) -> dict[str, int]:
        """Every ledger balance, debt and token balance that an attack must not move."""
        people = [self.settler, *self.owners, self.outsider]
        out = {f"ledger:{a.address}": self.settlement.balance_of(a.address) for a in people}
        out |= {f"debt:{a.address}": self.settlement.debt_of(a.address) for a in people}
        out |= {f"token:{a.address}": self.token.balance_of(a.address) for a in people}
        out["token:contract"] = self.token.balance_of(self.settlement.address)
        return out


def build_world(chain: Chain) -> World:
    admin, settler, auditor, meter, *rest = chain.accounts
    owners, outsider = rest[:5], rest[5]
    token = TokenClient.deploy(chain, admin)
    settlement, _ = SettlementClient.deploy(
        chain,
        admin,
        token.address,
        admin.address,
        settler.address,
        meter.address,
        LIVENESS,
        roles=InitialRoles(settler.address, auditor.address, admin.address),
        notice_s=NOTICE,
        claim_window_s=CLAIM_WINDOW,
    )
    for account in [settler, *owners, outsider]:
        token.mint(admin, account.address, 1_000 * UNIT)
        token.approve(account, settlement.address, 2**256 - 1)
    settlement.deposit(settler, FLOAT)
    return World(chain, token, settlement, admin, settler, auditor, meter, owners, outsider)


@pytest.fixture(scope="module")
def module_world() -> Iterator[World]:
    chain = Chain.eth_tester()
    yield build_world(chain)
    chain.close()


@pytest.fixture
def world(module_world: World) -> Iterator[World]:
    snapshot = module_world.chain.snapshot()
    yield module_world
    module_world.chain.revert(snapshot)
