"""The meter's EIP-712 signature over a period root (eth-account), matching ``V2GSettlement``."""

from __future__ import annotations

from typing import Any

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

DOMAIN_NAME = "V2GSettlement"
DOMAIN_VERSION = "1"

PERIOD_ROOT_TYPES = {
    "PeriodRoot": [
        {"name": "periodId", "type": "uint64"},
        {"name": "root", "type": "bytes32"},
        {"name": "totalCredit", "type": "uint96"},
        {"name": "totalDebit", "type": "uint96"},
        {"name": "entryCount", "type": "uint32"},
    ]
}


def period_root_typed_data(
    chain_id: int,
    contract: str,
    period_id: int,
    root: bytes,
    total_credit: int,
    total_debit: int,
    entry_count: int,
) -> dict[str, Any]:
    """The full EIP-712 message (domain, types, value) the meter signs. The period id is its nonce:
    the contract accepts one proposal per period id, so a signature is never accepted twice."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **PERIOD_ROOT_TYPES,
        },
        "primaryType": "PeriodRoot",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": contract,
        },
        "message": {
            "periodId": period_id,
            "root": root,
            "totalCredit": total_credit,
            "totalDebit": total_debit,
            "entryCount": entry_count,
        },
    }


def period_root_digest(**kwargs: Any) -> bytes:
    """The 32-byte EIP-712 digest of :func:`period_root_typed_data`."""
    signable = encode_typed_data(full_message=period_root_typed_data(**kwargs))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_period_root(meter: LocalAccount, **kwargs: Any) -> bytes:
    """The meter's 65-byte signature (r ‖ s ‖ v) over the period root."""
    signable = encode_typed_data(full_message=period_root_typed_data(**kwargs))
    return bytes(meter.sign_message(signable).signature)
