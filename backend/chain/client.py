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

import gzip
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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


class TxJournal(Protocol):
    """Where a chain's user records what it sends (before sending), what was mined, and the clock jumps
    it made on a local chain: :class:`backend.db.journal.DbJournal`, in the platform's database."""

    def sent(self, raw: bytes, tx_hash: str) -> None: ...

    def mined(self, tx_hash: str, block: int) -> None: ...

    def clock(self, timestamp: int, block: int) -> None: ...


@dataclass
class Chain:
    """A web3 connection and the accounts this process may sign with."""

    w3: Web3
    accounts: list[LocalAccount]
    kind: str
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: The JSON-RPC endpoint, when there is one (anvil, an external node).
    url: str | None = None
    _tester: Any = field(default=None, repr=False)
    #: One user at a time: web3 providers and the embedded chain are not thread-safe (the API's routes,
    #: the CSMS's credit checks and the jobs of one process share this lock).
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    #: A managed anvil's journal file: its state written after every mined transaction and every clock
    #: jump (``anvil_dumpState``), so that a node killed between anvil's own periodic saves restarts with
    #: every block this process saw mined (:func:`best_anvil_state` picks the newer of the two files).
    durable_state: Path | None = field(default=None, repr=False)
    #: The platform's journal of what this process sends (``v2g chain recover`` replays it).
    journal: TxJournal | None = field(default=None, repr=False, compare=False)

    # --- construction -------------------------------------------------------

    @classmethod
    def eth_tester(cls, path: Path | None = None, *, readonly: bool = False) -> Chain:
        """An embedded py-evm chain with ten funded dev accounts (no server).

        Without ``path`` it lives in memory and ends with the process (the demo, tests). With ``path``
        it is kept in that file and continues where the last process left it
        (:mod:`backend.chain.embedded`); ``readonly`` opens it beside a writer, for queries.
        """
        from eth_tester import EthereumTester, PyEVMBackend
        from web3.providers.eth_tester import EthereumTesterProvider

        if path is None:
            backend = PyEVMBackend()
        else:
            from backend.chain.embedded import DurablePyEVMBackend

            path.parent.mkdir(parents=True, exist_ok=True)
            backend = DurablePyEVMBackend(path, readonly=readonly)
        tester = EthereumTester(backend)
        w3 = Web3(EthereumTesterProvider(tester))
        accounts = [Account.from_key(key.to_bytes()) for key in backend.account_keys]
        return cls(w3, accounts, "eth-tester", _tester=tester)

    @classmethod
    def anvil(
        cls,
        *,
        binary: Path = ANVIL_BIN,
        accounts: int = 10,
        timeout_s: float = 20.0,
        state: Path | None = None,
        detached: bool = False,
        chain_id: int | None = None,
        port: int | None = None,
    ) -> Chain:
        """Start anvil on a free loopback port (``chain_id``: another id than anvil's 31337, to stand in
        for a chain that is not local); its dev keys are derived from anvil's public test mnemonic.

        Without ``state`` the chain is throwaway. With ``state`` anvil loads that file and writes it back
        when it stops (and every few seconds), so the chain continues in the next process.
        Unless ``detached``, anvil is bound to this process: :meth:`close` stops it, and so does the
        end of this process however it ends (the kernel sends it SIGTERM, ``PR_SET_PDEATHSIG``).
        """
        binary = anvil_binary(binary)
        if port is None:  # a free loopback port, unless one is asked for (a node restarted where it was)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
        command = [
            str(binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--accounts",
            str(accounts),
            "--silent",
        ]
        if chain_id is not None:
            command += ["--chain-id", str(chain_id)]
        if state is not None:
            state.parent.mkdir(parents=True, exist_ok=True)
            best = best_anvil_state(state)
            if best is not None:
                command += ["--load-state", str(best.resolve())]
            command += ["--dump-state", str(state.resolve()), "--state-interval", "2"]
            command += ["--timestamp", str(_genesis_timestamp(state))]
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=detached,
            preexec_fn=None if detached else _die_with_parent,
        )
        url = f"http://127.0.0.1:{port}"
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if w3.is_connected():
                    break
            except Exception:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise ChainError(
                    f"anvil did not start on port {port}" + (f" with state {state}" if state else "")
                )
            time.sleep(0.05)
        if state is not None:
            keep_time_monotonic(w3)
        logger.info("anvil started on port %d (pid %d)", port, process.pid)
        return cls(
            w3,
            anvil_dev_keys(accounts),
            "anvil",
            _process=process,
            url=url,
            durable_state=journal_of(state) if state is not None else None,
        )

    @classmethod
    def rpc(cls, url: str, keys: Sequence[str] = ()) -> Chain:
        """Any EVM JSON-RPC endpoint. ``keys`` default to ``V2G_PRIVATE_KEYS`` (comma-separated) from the
        environment; a keystore is read with :func:`account_from_keystore`."""
        w3 = Web3(Web3.HTTPProvider(url))
        if not keys:
            keys = [k for k in os.environ.get("V2G_PRIVATE_KEYS", "").split(",") if k]
        return cls(w3, [Account.from_key(k) for k in keys], "rpc", url=url)

    def close(self) -> None:
        """Stop a chain this process started (anvil); close an embedded chain's file."""
        if self._tester is not None:
            backend = self._tester.backend
            if hasattr(backend, "close"):
                backend.close()
            self._tester = None
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
            self.persist()
        else:
            raise ChainError("only local chains can travel in time")
        if self.journal is not None:
            block = self.w3.eth.get_block("latest")
            self.journal.clock(int(block["timestamp"]), int(block["number"]))

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

    def logs(self, address: str, from_block: int, to_block: int) -> list[Any]:
        """The logs ``address`` emitted in ``[from_block, to_block]``, in chain order.

        On the embedded chain they are read from each block's receipts: eth-tester's ``eth_getLogs``
        walks the whole chain whatever the range (about a minute for 50 blocks of a year-long chain
        kept on disk), while a block's receipts cost milliseconds."""
        wanted = Web3.to_checksum_address(address)
        if self._tester is None:
            return list(
                self.w3.eth.get_logs({"address": wanted, "fromBlock": from_block, "toBlock": to_block})
            )
        out: list[Any] = []
        for number in range(from_block, to_block + 1):
            for tx_hash in self.w3.eth.get_block(number)["transactions"]:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                out.extend(
                    log for log in receipt["logs"] if Web3.to_checksum_address(log["address"]) == wanted
                )
        return out

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
        if self.journal is not None:  # written before it is sent: a chain that loses it can be given it again
            self.journal.sent(bytes(raw), "0x" + tx_hash.hex())
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
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)
        except Exception as exc:
            raise TransactionNotMinedError(f"no receipt for {tx_hash.hex()} after {timeout_s} s") from exc
        self.persist()
        if self.journal is not None:
            self.journal.mined("0x" + bytes(receipt["transactionHash"]).hex(), int(receipt["blockNumber"]))
        return receipt

    def persist(self) -> None:
        """Write a managed anvil's state to its journal file now (atomically); nothing on other chains."""
        if self.durable_state is None:
            return
        dumped = self.w3.provider.make_request("anvil_dumpState", [])  # type: ignore[arg-type]
        state = gzip.decompress(bytes.fromhex(str(dumped["result"])[2:]))
        tmp = self.durable_state.with_suffix(".tmp")
        tmp.write_bytes(state)
        tmp.replace(self.durable_state)

    def _replay_revert(self, tx: dict[str, Any], receipt: TxReceipt) -> Exception:
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.w3.eth.call(call, block_identifier=receipt["blockNumber"] - 1)  # type: ignore[arg-type]
        except Exception as exc:
            revert = decode_revert(exc)
            if revert is not None:
                return revert
        return UnknownRevertError({"tx": receipt["transactionHash"].hex()})


def anvil_binary(binary: Path = ANVIL_BIN) -> Path:
    """The native anvil executable from node_modules (``make install``), else one on ``PATH``.

    ``node_modules/.bin/anvil`` is a Node script that runs the native binary as its child; started
    through it, a signal that cannot be forwarded (SIGKILL, the parent's death) would leave the child
    running. So the native binary of the platform package is started directly."""
    if binary == ANVIL_BIN:
        native = sorted((REPO_ROOT / "node_modules" / "@foundry-rs").glob("anvil-linux-*/bin/anvil"))
        if native:
            return native[0]
    if binary.exists():
        return binary
    found = shutil.which("anvil")
    if found is None:
        raise ChainError(f"anvil not found at {binary}: run `make install`")
    return Path(found)


def anvil_dev_keys(count: int = 10) -> list[LocalAccount]:
    """anvil's dev accounts, from its public test mnemonic (local chains only)."""
    Account.enable_unaudited_hdwallet_features()
    mnemonic = "test test test test test test test test test test test junk"  # anvil's public dev mnemonic
    return [Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


def keep_time_monotonic(w3: Web3) -> None:
    """anvil restarted from a state file restarts its clock at its genesis time, forgetting the time
    that passed and the time it travelled: set it to the wall clock, or just after the last block if
    that is later, so that no new block is older than its parent."""
    head = int(w3.eth.get_block("latest")["timestamp"])
    w3.provider.make_request("evm_setTime", [max(int(time.time()), head + 1)])  # type: ignore[arg-type]


def journal_of(state: Path, pid: int | None = None) -> Path:
    """This process's journal beside a managed anvil's state file (each sending process writes its own:
    no process replaces a newer dump of another's)."""
    return state.with_name(f"{state.stem}.tx.{os.getpid() if pid is None else pid}.json")


def anvil_state_files(state: Path) -> list[Path]:
    """anvil's own save and every sender's journal that exist."""
    return [p for p in (state, *sorted(state.parent.glob(f"{state.stem}.tx.*.json"))) if p.exists()]


def best_anvil_state(state: Path) -> Path | None:
    """The newest of anvil's own periodic save (``state``) and the senders' journals, by best block
    number; ``None`` when there is none (a new chain). A save whose block number cannot be read is still
    loaded when nothing newer is known (anvil refuses it by name rather than starting a new chain over
    it); the journals older than the one chosen are removed."""
    best: tuple[int, Path] | None = None
    for path in anvil_state_files(state):
        try:
            number = int(str(json.loads(path.read_bytes())["best_block_number"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            number = -1
        if best is None or number > best[0]:
            best = (number, path)
    if best is None:
        return None
    for path in anvil_state_files(state):
        if path not in (state, best[1]):
            path.unlink(missing_ok=True)
    return best[1]


def _genesis_timestamp(state: Path) -> int:
    """The genesis time of the chain kept in ``state``, fixed when it is first started.

    anvil rebuilds its genesis block at every start and writes it into the state beside the saved one;
    with another timestamp that is another block 0, and the next start may pick either (another genesis
    hash: another chain). The same timestamp every time makes it the same block."""
    path = state.with_name(state.name + ".genesis")
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        stamp = int(time.time())
        path.write_text(f"{stamp}\n")
        return stamp


def _die_with_parent() -> None:
    """In the child before exec: receive SIGTERM when the parent dies (Linux ``prctl``)."""
    import ctypes
    import signal

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


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
