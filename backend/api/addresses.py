"""Owner addresses: what an account that receives payouts may be.

- EIP-55: an address whose hex letters are all lowercase or all uppercase carries no checksum and is
  accepted (stored checksummed); a mixed-case address must carry a valid checksum, so a mistyped
  character is caught instead of paying a stranger (422 ``InvalidAddressError``).
- Not the zero address (422 ``InvalidAddressError``): tokens sent there are burnt.
- Not one of the deployment's own accounts or contracts (admin, settler, auditor, meter, the token,
  the settlement contract) (409 ``SystemAddressError``): the settler's address is the aggregator's
  float, and an owner sharing it would mix the two ledgers.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_utils.address import is_checksum_address, to_checksum_address

from backend.api.errors import ApiError

ZERO_ADDRESS = "0x" + "0" * 40


def owner_address(value: str, system: Iterable[str]) -> str:
    """``value`` checksummed, or a named refusal. ``value`` already matches ``^0x[0-9a-fA-F]{40}$``."""
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        raise ApiError(
            422,
            "InvalidAddressError",
            "mixed-case address with a wrong EIP-55 checksum (a character may be mistyped); "
            "give it as copied from the wallet, or all lowercase",
        )
    address = str(to_checksum_address(value))
    if address == ZERO_ADDRESS:
        raise ApiError(422, "InvalidAddressError", "the zero address cannot receive payouts")
    if address in {str(to_checksum_address(a)) for a in system}:
        raise ApiError(409, "SystemAddressError", f"{address} is an account or contract of this deployment")
    return address
