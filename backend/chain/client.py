"""Chains and typed contract clients (web3.py).

- :class:`Chain` is a connected web3 with its funded signing accounts:
  :meth:`Chain.eth_tester` (embedded, the default), :meth:`Chain.anvil` (starts
  the npm anvil binary on a free loopback port, stops it on :meth:`close`), or
  :meth:`Chain.rpc` (any JSON-RPC URL, keys from the environment or a keystore).
  Nothing connects at import.
- :meth:`Chain.send` signs locally with an explicit nonce, so re-sending the same
  transaction (same nonce) after a crash cannot execute twice.
- Reverts become typed exceptions from :mod:`backend.chain.errors`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import TransactionNotFound
from web3.types import TxReceipt

from backend.chain.compiler import REPO_ROOT, load_artifact
from backend.chain.errors import (
    ChainError,
    StaleNonceError,
    TransactionNotMinedError,
    UnknownRevertError,
    decode_revert,
)

logger = logging.getLogger(__name__)

ANVIL_BIN = REPO_ROOT / "node_modules" / ".bin" / "anvil"


@dataclass(frozen=True)
class SignedTx:
    """A signed transaction, ready to store before sending (so a crash never loses or doubles it)."""

    raw: bytes
    tx_hash: str
    nonce: int
    sender: str
    tx: dict[str, Any]


@dataclass
class Chain:
    """A web3 connection and the accounts this process may sign with."""

    w3: Web3
    accounts: list[LocalAccount]
    kind: str
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tester: Any = field(default=None, repr=False)

    # --- construction -------------------------------------------------------

    @classmethod
    def eth_tester(cls) -> Chain:
        """An embedded py-evm chain with ten funded dev accounts (no server)."""
        from eth_tester import EthereumTester, PyEVMBackend
        from web3.providers.eth_tester import EthereumTesterProvider

        backend = PyEVMBackend()
        tester = EthereumTester(backend)
        w3 = Web3(EthereumTesterProvider(tester))
        accounts = [Account.from_key(key.to_bytes()) for key in backend.account_keys]
        return cls(w3, accounts, "eth-tester", _tester=tester)

    @classmethod
    def anvil(cls, *, binary: Path = ANVIL_BIN, accounts: int = 10, timeout_s: float = 20.0) -> Chain:
        """Start anvil on a free loopback port; its dev keys are derived from anvil's public test mnemonic."""
        if not binary.exists():
            found = shutil.which("anvil")
            if found is None:
                raise ChainError(f"anvil not found at {binary}: run `make install`")
            binary = Path(found)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen(
            [
                str(binary),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--accounts",
                str(accounts),
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if w3.is_connected():
                    break
            except Exception:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise ChainError(f"anvil did not start on port {port}")
            time.sleep(0.05)
        Account.enable_unaudited_hdwallet_features()
        mnemonic = (
            "test test test test test test test test test test test junk"  # anvil's public dev mnemonic
        )
        keys = [Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}") for i in range(accounts)]
        logger.info("anvil started on port %d (pid %d)", port, process.pid)
        return cls(w3, keys, "anvil", _process=process)

    @classmethod
    def rpc(cls, url: str, keys: Sequence[str] = ()) -> Chain:
        """Any EVM JSON-RPC endpoint. ``keys`` default to ``V2G_PRIVATE_KEYS`` (comma-separated) from the
        environment; a keystore is read with :func:`account_from_keystore`."""
        w3 = Web3(Web3.HTTPProvider(url))
        if not keys:
            keys = [k for k in os.environ.get("V2G_PRIVATE_KEYS", "").split(",") if k]
        return cls(w3, [Account.from_key(k) for k in keys], "rpc")

    def close(self) -> None:
        """Stop a chain this process started (anvil)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- time (local chains) ------------------------------------------------

    def advance_time(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block (eth-tester and anvil only)."""
        if self._tester is not None:
            latest = int(self.w3.eth.get_block("latest")["timestamp"])
            # the pending block follows the wall clock: on a slow machine it can already be past
            # latest + seconds, and eth-tester refuses to travel back to it
            pending = int(self._tester.get_block_by_number("pending")["timestamp"])
            self._tester.time_travel(max(latest + seconds, pending + 1))
        elif self.kind == "anvil":
            self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
            self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        else:
            raise ChainError("only local chains can travel in time")

    def snapshot(self) -> Any:
        """Snapshot a local chain's state (for tests and what-if runs)."""
        if self._tester is not None:
            return self._tester.take_snapshot()
        return self.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]

    def revert(self, snapshot_id: Any) -> None:
        """Return a local chain to ``snapshot_id``."""
        if self._tester is not None:
            self._tester.revert_to_snapshot(snapshot_id)
        else:
            self.w3.provider.make_request("evm_revert", [snapshot_id])  # type: ignore[arg-type]

    def timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    # --- transactions ---------------------------------------------------------

    def call(self, fn: ContractFunction, sender: LocalAccount | str | None = None) -> Any:
        """A read; reverts raised as typed errors."""
        sender_address = sender if isinstance(sender, str) else (sender.address if sender else None)
        try:
            return fn.call({"from": sender_address} if sender_address else {})
        except Exception as exc:
            revert = decode_revert(exc)
            if revert is not None:
                raise revert from exc
            raise

    def sign_call(
        self,
        fn: ContractFunction | Any,
        sender: LocalAccount,
        *,
        nonce: int | None = None,
        gas: int | None = None,
    ) -> SignedTx:
        """Estimate, build and sign ``fn`` with an explicit nonce; a revert at estimation raises typed."""
        if nonce is None:
            nonce = self.w3.eth.get_transaction_count(sender.address, "pending")
        params: dict[str, Any] = {"from": sender.address, "nonce": nonce, "chainId": self.w3.eth.chain_id}
        try:
            params["gas"] = (
                gas if gas is not None else int(fn.estimate_gas({"from": sender.address}) * 1.2) + 10_000
            )
            tx: dict[str, Any] = dict(fn.build_transaction(params))  # type: ignore[arg-type]
        except Exception as exc:
            revert = decode_revert(exc)
            if revert is not None:
                raise revert from exc
            raise
        signed = sender.sign_transaction(tx)
        return SignedTx(
            bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex(), nonce, sender.address, tx
        )

    def send(
        self,
        fn: ContractFunction | Any,
        sender: LocalAccount,
        *,
        nonce: int | None = None,
        gas: int | None = None,
    ) -> TxReceipt:
        """Sign ``fn`` (a bound function or a constructor) with ``sender``, send it, wait for its receipt.

        The nonce is explicit (the sender's pending count unless given), so a resend after a crash
        is the same transaction. A revert, at estimation or on chain, raises its typed error.
        """
        signed = self.sign_call(fn, sender, nonce=nonce, gas=gas)
        receipt = self.wait(self.send_raw(signed.raw))
        if receipt["status"] != 1:
            raise self._replay_revert(signed.tx, receipt)
        return receipt

    def receipt(self, tx_hash: str) -> TxReceipt | None:
        """The receipt of ``tx_hash`` if it was mined, else ``None``."""
        try:
            return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None

    def send_raw(self, raw: bytes | HexBytes) -> HexBytes:
        """Send a signed transaction.

        Sending one already mined (or pending) returns its hash instead of failing; one whose nonce went
        to another transaction raises :class:`StaleNonceError`.
        """
        tx_hash = HexBytes(Web3.keccak(raw))
        try:
            return HexBytes(self.w3.eth.send_raw_transaction(raw))
        except Exception as exc:
            text = str(exc).lower()
            if "already known" in text or "known transaction" in text:
                logger.info("transaction %s is already pending", tx_hash.hex())
                return tx_hash
            if "nonce" in text:
                if self.receipt("0x" + tx_hash.hex()) is not None:
                    logger.info("transaction %s was already mined", tx_hash.hex())
                    return tx_hash
                raise StaleNonceError(f"nonce of {tx_hash.hex()} was used by another transaction") from exc
            raise

    def wait(self, tx_hash: HexBytes, timeout_s: float = 60.0) -> TxReceipt:
        try:
            return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)
        except Exception as exc:
            raise TransactionNotMinedError(f"no receipt for {tx_hash.hex()} after {timeout_s} s") from exc

    def _replay_revert(self, tx: dict[str, Any], receipt: TxReceipt) -> Exception:
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.w3.eth.call(call, block_identifier=receipt["blockNumber"] - 1)  # type: ignore[arg-type]
        except Exception as exc:
            revert = decode_revert(exc)
            if revert is not None:
                return revert
        return UnknownRevertError({"tx": receipt["transactionHash"].hex()})


def account_from_keystore(path: Path, password_env: str = "V2G_KEYSTORE_PASSWORD") -> LocalAccount:
    """Decrypt a keystore file with the password from ``password_env``."""
    password = os.environ.get(password_env)
    if password is None:
        raise ChainError(f"set {password_env} to decrypt {path}")
    key = Account.decrypt(path.read_text(), password)
    account: LocalAccount = Account.from_key(key)
    return account


class ContractClient:
    """Base of the typed wrappers: one compiled artifact, one deployed address."""

    artifact_name: str

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        artifact = load_artifact(self.artifact_name)
        self.address = Web3.to_checksum_address(address)
        self.contract: Contract = chain.w3.eth.contract(address=self.address, abi=artifact.abi)

    @classmethod
    def at(cls, chain: Chain, address: str) -> Any:
        """Wrap an already deployed contract."""
        return cls(chain, address)

    @classmethod
    def deploy_contract(cls, chain: Chain, sender: LocalAccount, *args: Any) -> tuple[Any, TxReceipt]:
        artifact = load_artifact(cls.artifact_name)
        factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = chain.send(factory.constructor(*args), sender)
        address = receipt["contractAddress"]
        assert address is not None
        return cls(chain, address), receipt

    def events(self, receipt: TxReceipt, name: str) -> list[dict[str, Any]]:
        """Decoded ``name`` events of this contract in ``receipt``, as plain dicts of arguments."""
        event = getattr(self.contract.events, name)()
        logs = [log for log in receipt["logs"] if log["address"] == self.address]
        out = []
        for log in logs:
            try:
                decoded = event.process_log(log)
            except Exception:
                continue
            out.append(dict(decoded["args"]))
        return out


def connect(spec: str) -> Chain:
    """The chain named by configuration: ``eth-tester``, ``anvil`` or a JSON-RPC URL."""
    if spec == "eth-tester":
        return Chain.eth_tester()
    if spec == "anvil":
        return Chain.anvil()
    if spec.startswith(("http://", "https://", "ws://", "wss://")):
        return Chain.rpc(spec)
    raise ChainError(f"unknown chain {spec!r}: use eth-tester, anvil or a JSON-RPC URL")
