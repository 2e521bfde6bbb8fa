"""Contract reverts as typed Python exceptions, decoded by selector from the artifacts' ABIs.

Every custom error of every compiled contract gets a class named after it,
subclassing :class:`ContractRevertError`::

    from backend.chain import errors
    try:
        settlement.finalise(...)
    except errors.UnderfundedPeriod as exc:
        exc.args_by_name["required"]

eth-tester reports a revert as ``TransactionFailed`` whose message holds the
revert bytes; anvil (through web3) as ``ContractCustomError`` / ``ContractLogicError``
with the hex data. :func:`decode_revert` handles both.
"""

from __future__ import annotations

import ast
import logging
from functools import cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from backend.chain.compiler import ARTIFACTS_DIR, load_artifact

logger = logging.getLogger(__name__)


class ChainError(Exception):
    """Base of the chain layer's errors."""


class ContractRevertError(ChainError):
    """A contract call or transaction reverted. ``name`` and ``args_by_name`` are the decoded error."""

    name: str = "ContractRevertError"

    def __init__(self, args_by_name: dict[str, Any] | None = None, data: bytes = b"") -> None:
        self.args_by_name = args_by_name or {}
        self.data = data
        shown = ", ".join(f"{k}={v!r}" for k, v in self.args_by_name.items())
        super().__init__(f"{self.name}({shown})")


class UnknownRevertError(ContractRevertError):
    """Revert data that matches no known error (or no data at all)."""

    name = "UnknownRevertError"


class StaleNonceError(ChainError):
    """A stored transaction can never be mined: its nonce was used by another one."""


class TransactionNotMinedError(ChainError):
    """A transaction was sent but no receipt arrived in time."""


def _canonical(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_canonical(c) for c in param["components"]) + ")" + kind[5:]
    return kind


@cache
def _registry() -> dict[bytes, tuple[type[ContractRevertError], list[str], list[str]]]:
    """selector → (exception class, argument names, argument types), over every artifact."""
    entries: dict[bytes, tuple[type[ContractRevertError], list[str], list[str]]] = {}
    abis = [load_artifact(p.stem).abi for p in sorted(ARTIFACTS_DIR.glob("*.json"))]
    builtin = [
        {"type": "error", "name": "Error", "inputs": [{"name": "message", "type": "string"}]},
        {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
    ]
    for abi in [builtin, *abis]:
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [_canonical(p) for p in item["inputs"]]
            signature = f"{item['name']}({','.join(types)})"
            selector = function_signature_to_4byte_selector(signature)
            if selector in entries:
                continue
            cls = error_class(item["name"])
            names = [p["name"] or f"arg{i}" for i, p in enumerate(item["inputs"])]
            entries[selector] = (cls, names, types)
    return entries


_CLASSES: dict[str, type[ContractRevertError]] = {}


def error_class(name: str) -> type[ContractRevertError]:
    """The exception class for custom error ``name`` (created once)."""
    if name not in _CLASSES:
        _CLASSES[name] = type(name, (ContractRevertError,), {"name": name, "__module__": __name__})
    return _CLASSES[name]


def decode_revert_data(data: bytes) -> ContractRevertError:
    """Turn raw revert data into its typed exception."""
    if len(data) < 4:
        return UnknownRevertError({"data": "0x" + data.hex()}, data)
    found = _registry().get(data[:4])
    if found is None:
        return UnknownRevertError({"selector": "0x" + data[:4].hex(), "data": "0x" + data.hex()}, data)
    cls, names, types = found
    values = [
        to_checksum_address(v) if t == "address" else v
        for t, v in zip(types, abi_decode(types, data[4:]), strict=True)
    ]
    return cls(dict(zip(names, values, strict=True)), data)


def revert_data(exc: BaseException) -> bytes | None:
    """The revert bytes carried by an eth-tester or web3 exception, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    message = str(exc.args[0]) if exc.args else ""
    if "b'" in message or 'b"' in message:
        start = message.find("b'") if "b'" in message else message.find('b"')
        try:
            value = ast.literal_eval(message[start:])
        except (ValueError, SyntaxError):
            return None
        return value if isinstance(value, bytes) else None
    if "execution reverted" in message:
        return b""
    return None


def decode_revert(exc: BaseException) -> ContractRevertError | None:
    """The typed revert inside ``exc``, or ``None`` if ``exc`` is not a revert."""
    data = revert_data(exc)
    if data is None:
        return None
    return decode_revert_data(data)


def __getattr__(name: str) -> type[ContractRevertError]:
    """``errors.UnderfundedPeriod`` and friends: any custom error of the compiled contracts."""
    if name.startswith("_"):
        raise AttributeError(name)
    known = {cls.name for cls, _, _ in _registry().values()}
    if name not in known:
        raise AttributeError(f"no contract error named {name}")
    return error_class(name)
