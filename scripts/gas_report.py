"""Gas of every V2GSettlement operation on the embedded chain (eth-tester, py-evm gas schedule).

    python scripts/gas_report.py [--leaves 100000] [--sample 256]

Claims are measured on trees of 1,000 and ``--leaves`` entries: ``--sample``
consecutive entries claimed in order (one full bitmap word of 256 entries gives
the exact average over a whole tree), by the settler on owners' behalf, once for
owners who already hold an escrow balance and once for fresh owners. Last line:
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from web3 import Web3

from backend.chain.client import Chain
from backend.chain.contracts import InitialRoles, PeriodHeader, SettlementClient, TokenClient
from backend.settlement.merkle import StandardMerkleTree
from backend.settlement.signing import sign_period_root

LEAF_TYPES = ("uint256", "address", "uint64", "uint256", "address", "int256")
LIVENESS = 3600


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leaves", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=256)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()

    chain = Chain.eth_tester()
    admin, settler, meter = chain.accounts[:3]
    figures: dict[str, float | int] = {}

    token = TokenClient.deploy(chain, admin)
    settlement, receipt = SettlementClient.deploy(
        chain,
        admin,
        token.address,
        admin.address,
        settler.address,
        meter.address,
        LIVENESS,
        roles=InitialRoles(settler=settler.address, pauser=admin.address),
    )
    figures["deploy_settlement"] = receipt["gasUsed"]
    token.mint(admin, settler.address, 10**30)
    token.approve(settler, settlement.address, 2**256 - 1)
    figures["deposit_first"] = settlement.deposit(settler, 10**24)["gasUsed"]
    figures["deposit_again"] = settlement.deposit(settler, 10**6)["gasUsed"]
    figures["request_withdrawal"] = settlement.request_withdrawal(settler, 10**6)["gasUsed"]
    chain.advance_time(settlement.notice_period())
    figures["withdraw"] = settlement.withdraw(settler, 10**6)["gasUsed"]

    chain_id = chain.w3.eth.chain_id
    period_counter = 0

    def period(owners: list[str], amount: int) -> tuple[int, PeriodHeader, StandardMerkleTree, int]:
        nonlocal period_counter
        period_counter += 1
        pid = period_counter
        rows = [(chain_id, settlement.address, pid, i, o, amount) for i, o in enumerate(owners)]
        tree = StandardMerkleTree.of(rows, LEAF_TYPES)
        credit = amount * len(owners)
        signature = sign_period_root(
            meter,
            chain_id=chain_id,
            contract=settlement.address,
            period_id=pid,
            root=tree.root,
            total_credit=credit,
            total_debit=0,
            entry_count=len(owners),
        )
        header, rcpt = settlement.propose(settler, pid, tree.root, credit, 0, len(owners), signature)
        return pid, header, tree, rcpt["gasUsed"]

    def fresh(n: int) -> list[str]:
        return [Web3.to_checksum_address(os.urandom(20)) for _ in range(n)]

    # propose: independent of the entry count
    for size in (1_000, args.leaves):
        started = time.perf_counter()
        owners = fresh(size)
        pid, header, tree, gas = period(owners, 1_000)
        figures[f"propose_{size}_leaves"] = gas
        figures["propose"] = gas
        figures[f"tree_build_s_{size}"] = round(time.perf_counter() - started, 2)
        chain.advance_time(LIVENESS + 1)
        figures["finalise"] = settlement.finalise(settler, pid, header)["gasUsed"]
        # prefund the first `sample` owners so their ledger balance is non-zero (as escrowed owners are)
        sample = min(args.sample, size)
        for label, funded in (("fresh_owner", False), ("funded_owner", True)):
            start = 0 if not funded else sample
            if start + sample > size:
                continue
            if funded:
                for i in range(start, start + sample):
                    settlement.deposit_for(settler, owners[i], 1)
            gases = [
                settlement.claim(settler, pid, header, i, owners[i], 1_000, tree.proof(i))["gasUsed"]
                for i in range(start, start + sample)
            ]
            figures[f"claim_{size}_leaves_{label}_avg"] = round(statistics.mean(gases), 1)
            figures[f"claim_{size}_leaves_{label}_max"] = max(gases)
            mean = statistics.mean(gases)
            rest = statistics.mean(gases[1:])
            print(
                f"claim, {size:,} leaves, {label}: mean {mean:,.0f} gas over {sample} claims "
                f"(first in a bitmap word {gases[0]:,}, then {rest:,.0f})"
            )
        # batch claim on the same tree: the next `batch` entries, owners prefunded
        first = 2 * sample
        if first + args.batch <= size:
            ids = list(range(first, first + args.batch))
            for i in ids:
                settlement.deposit_for(settler, owners[i], 1)
            gas = settlement.claim_batch(
                settler,
                pid,
                header,
                ids,
                [owners[i] for i in ids],
                [1_000] * len(ids),
                [tree.proof(i) for i in ids],
            )["gasUsed"]
            figures[f"claim_batch_per_entry_{size}_leaves"] = round(gas / len(ids), 1)

    # batch claim on a fresh 1,000-leaf tree, owners prefunded
    owners = fresh(1_000)
    for o in owners[: args.batch]:
        settlement.deposit_for(settler, o, 1)
    pid, header, tree, _ = period(owners, 1_000)
    chain.advance_time(LIVENESS + 1)
    settlement.finalise(settler, pid, header)
    ids = list(range(args.batch))
    gas = settlement.claim_batch(
        settler,
        pid,
        header,
        ids,
        [owners[i] for i in ids],
        [1_000] * len(ids),
        [tree.proof(i) for i in ids],
    )["gasUsed"]
    figures["claim_batch_per_entry"] = round(gas / len(ids), 1)
    figures["claim_batch_total"] = gas
    figures["pause"] = settlement.pause(admin)["gasUsed"]

    for key, value in figures.items():
        print(f"{key:40s} {value:>12,}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
