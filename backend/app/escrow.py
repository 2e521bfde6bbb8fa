"""Escrow deposits by the admin (a fleet manager's top-up), one rule for every door."""

from __future__ import annotations

from backend.app.settle import admin_may_mint
from backend.chain.contracts import SettlementClient, TokenClient
from backend.platform import Platform


def fund_account(platform: Platform, account: str, amount: int) -> str:
    """Pay ``amount`` into ``account``'s ledger balance from the admin; returns the deposit's transaction
    hash. With the play-money token (the admin holds its minter role) the amount is minted first; with
    any other token the admin must hold it."""
    with platform.chain.lock:
        settlement = SettlementClient.at(platform.chain, platform.record.settlement)
        token = TokenClient.at(platform.chain, platform.record.token)
        admin = platform.actors(("settler",)).admin
        if admin_may_mint(platform, admin.address):
            token.mint(admin, admin.address, amount)
        token.approve(admin, settlement.address, amount)
        receipt = settlement.deposit_for(admin, account, amount)
    return "0x" + bytes(receipt["transactionHash"]).hex()
