"""Owner payout addresses: one rule for every door (``v2g owners import``, ``POST /owners``).

- EIP-55: an address whose hex letters are all lowercase or all uppercase carries no checksum and is
  accepted (stored checksummed); a mixed-case address must carry a valid checksum, so a mistyped
  character is caught instead of paying a stranger (:class:`InvalidAddressError`).
- Not the zero address (:class:`InvalidAddressError`): tokens sent there are burnt.
- Not an account or contract of a deployment (admin, settler, auditor, meter, the token, the settlement
  contract; on any local chain also its four dev role accounts) (:class:`SystemAddressError`): a credit
  paid to the settlement contract or to the settler's float mixes the owner's money with the ledger's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

from eth_utils.address import is_checksum_address, to_checksum_address
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Deployment

ZERO_ADDRESS = "0x" + "0" * 40
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
ROLE_FIELDS = ("admin", "settler", "auditor", "meter", "token", "settlement")


class OwnerAddressError(ValueError):
    """An address that cannot receive an owner's payouts."""


class InvalidAddressError(OwnerAddressError):
    """Not an address, the zero address, or a mixed-case address with a wrong EIP-55 checksum."""


class SystemAddressError(OwnerAddressError):
    """An account or contract of the deployment itself."""


@cache
def local_role_accounts() -> frozenset[str]:
    """The four role accounts (admin, settler, auditor, meter) of every local chain's dev keys."""
    from eth_tester.backends.pyevm.main import get_default_account_keys

    from backend.chain.client import anvil_dev_keys

    embedded = [k.public_key.to_checksum_address() for k in get_default_account_keys(quantity=4)]
    return frozenset([*embedded, *(str(a.address) for a in anvil_dev_keys(4))])


def system_addresses(session: Session) -> set[str]:
    """Every deployment's own accounts and contracts recorded in the database, and the local chains'
    role accounts."""
    found: set[str] = set(local_role_accounts())
    for deployment in session.scalars(select(Deployment)):
        found |= {deployment.token_address, deployment.settlement_address}
        record = deployment.record or {}
        found |= {str(record[k]) for k in ROLE_FIELDS if record.get(k)}
    return {str(to_checksum_address(a)) for a in found}


def payout_address(value: str, system: Iterable[str]) -> str:
    """``value`` checksummed, or :class:`InvalidAddressError` / :class:`SystemAddressError`."""
    if not ADDRESS_RE.fullmatch(value):
        raise InvalidAddressError(f"{value!r} is not an address (0x and 40 hex digits)")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        raise InvalidAddressError(
            "mixed-case address with a wrong EIP-55 checksum (a character may be mistyped); "
            "give it as copied from the wallet, or all lowercase"
        )
    address = str(to_checksum_address(value))
    if address == ZERO_ADDRESS:
        raise InvalidAddressError("the zero address cannot receive payouts")
    if address in {str(to_checksum_address(a)) for a in system}:
        raise SystemAddressError(f"{address} is an account or contract of this deployment")
    return address
