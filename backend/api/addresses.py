"""Owner addresses through the API: the one rule of :mod:`backend.owners`, as documented errors (422
``InvalidAddressError``, 409 ``SystemAddressError``)."""

from __future__ import annotations

from collections.abc import Iterable

from backend.api.errors import ApiError
from backend.owners import InvalidAddressError, SystemAddressError, payout_address


def owner_address(value: str, system: Iterable[str]) -> str:
    """``value`` checksummed, or a named refusal."""
    try:
        return payout_address(value, system)
    except InvalidAddressError as exc:
        raise ApiError(422, "InvalidAddressError", str(exc)) from None
    except SystemAddressError as exc:
        raise ApiError(409, "SystemAddressError", str(exc)) from None
