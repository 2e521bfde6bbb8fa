"""From a solved schedule to a settled period: the steps the demo, the CLI and the benchmark share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from backend.chain.client import Chain
from backend.chain.contracts import SettlementClient, TokenClient
from backend.chain.deploy import Actors, DeploymentRecord

MAX_BATCH = 200


def local_owner_accounts(owner_ids: Sequence[str]) -> dict[str, LocalAccount]:
    """Deterministic throw-away keys for demo owners on local chains (never for a real chain)."""
    return {o: Account.from_key(keccak(text=f"v2g-settle local demo owner {o}")) for o in owner_ids}


@dataclass(frozen=True)
class EscrowFunding:
    minted: int
    deposited: int
    transactions: int


def fund_escrow(
    chain: Chain,
    record: DeploymentRecord,
    actors: Actors,
    amounts: Mapping[str, int],
    *,
    aggregator_float: int,
) -> EscrowFunding:
    """Local chains: mint test tokens and fund every owner's escrow (``depositForMany`` in batches of 200,
    paid by the admin acting as a fleet manager) and the aggregator's float for credits."""
    token = TokenClient.at(chain, record.token)
    settlement = SettlementClient.at(chain, record.settlement)
    total = sum(amounts.values()) + aggregator_float
    txs = 0
    token.mint(actors.admin, actors.admin.address, total)
    token.approve(actors.admin, settlement.address, total)
    txs += 2
    items = [(a, v) for a, v in amounts.items() if v > 0]
    for i in range(0, len(items), MAX_BATCH):
        chunk = items[i : i + MAX_BATCH]
        fn = settlement.contract.functions.depositForMany([a for a, _ in chunk], [v for _, v in chunk])
        chain.send(fn, actors.admin)
        txs += 1
    if aggregator_float:
        settlement.deposit_for(actors.admin, actors.settler.address, aggregator_float)
        txs += 1
    return EscrowFunding(total, total, txs)
