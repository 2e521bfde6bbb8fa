"""The chains a ``v2g`` command can name, and the managed local anvil node.

``--chain`` (or ``V2G_CHAIN``) is one of:

- ``eth-tester`` (default): the embedded chain, kept in ``<data dir>/chains/eth-tester.sqlite``
  (:mod:`backend.chain.embedded`). Nothing to install or start; every command continues it.
- ``anvil``: a local anvil node whose state is kept in ``<data dir>/chains/anvil/state.json``.
  ``v2g chain start`` runs it in the background (for ``v2g serve`` and the commands beside it);
  ``v2g chain stop`` stops it (anvil writes its state as it stops). When no node is running, a command
  starts one for its own duration on the same state file, bound to the command's process (it stops
  with it, even when the command is killed).
- ``http(s)://...``: an external JSON-RPC node; keys from the environment or a keystore. An anvil
  started by hand on this machine (it holds anvil's public dev accounts) is a local chain when no key is
  configured: its dev keys sign and its clock travels over challenge windows.
- ``eth-tester:memory``: a throwaway embedded chain that ends with the process (tests, what-ifs).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from web3 import Web3

from backend.chain.client import Chain, anvil_dev_keys, journal_of, keep_time_monotonic
from backend.chain.errors import ChainError

logger = logging.getLogger(__name__)

EMBEDDED_FILE = Path("chains") / "eth-tester.sqlite"
ANVIL_DIR = Path("chains") / "anvil"


@dataclass(frozen=True)
class NodeInfo:
    pid: int
    url: str
    state: str
    started: float


class AnvilNode:
    """The managed anvil of one data directory: at most one, found by its ``node.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / ANVIL_DIR
        self.state = self.dir / "state.json"
        self.info_path = self.dir / "node.json"

    def info(self) -> NodeInfo | None:
        """The running node, or ``None`` (a stale ``node.json`` of a dead node is removed)."""
        try:
            info = NodeInfo(**json.loads(self.info_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not _alive(info.pid, "anvil"):
            self.info_path.unlink(missing_ok=True)
            return None
        return info

    def start(self, port: int | None = None) -> NodeInfo:
        """Start the node in the background (its own session: it outlives this command); on ``port`` when
        given (a node restarted where its clients reach it)."""
        running = self.info()
        if running is not None:
            return running
        chain = Chain.anvil(state=self.state, detached=True, port=port)
        assert chain._process is not None and chain.url is not None
        info = NodeInfo(chain._process.pid, chain.url, str(self.state), time.time())
        chain._process = None  # detached: this object no longer stops it
        self._record(info)
        return info

    def start_bound(self, port: int | None = None) -> Chain:
        """Start the node bound to this process (it dies with it, as a command's own node does), recorded
        like a background one so that other processes (the API server, commands) use it; the caller
        closes the returned chain to stop it."""
        if self.info() is not None:
            raise ChainError(f"a managed anvil already runs for {self.dir}")
        chain = Chain.anvil(state=self.state, port=port)
        assert chain._process is not None and chain.url is not None
        self._record(NodeInfo(chain._process.pid, chain.url, str(self.state), time.time()))
        return chain

    def _record(self, info: NodeInfo) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info.__dict__))
        tmp.replace(self.info_path)

    def stop(self, timeout_s: float = 15.0) -> NodeInfo | None:
        """Stop the running node (SIGTERM: anvil writes its state first); ``None`` if none ran."""
        info = self.info()
        if info is None:
            return None
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(info.pid, "anvil"):
            if time.monotonic() > deadline:
                os.kill(info.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        self.info_path.unlink(missing_ok=True)
        return info

    def connect(self) -> Chain:
        """The running node if there is one, else a node for this process on the same state."""
        info = self.info()
        if info is None:
            return Chain.anvil(state=self.state)
        w3 = Web3(Web3.HTTPProvider(info.url, request_kwargs={"timeout": 30}))
        try:
            answering = w3.is_connected()
        except Exception:
            answering = False
        if not answering:
            raise ChainError(f"the managed anvil (pid {info.pid}) does not answer at {info.url}")
        keep_time_monotonic(w3)
        return Chain(w3, anvil_dev_keys(), "anvil", url=info.url, durable_state=journal_of(self.state))


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` runs and is ``name`` (a recycled pid of another program is not it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie waiting for its parent: it is gone
        return False
    return name.encode() in cmdline


ROLES = ("ADMIN", "SETTLER", "AUDITOR", "METER")
KEY_VARIABLES = (
    *(f"V2G_{role}_KEY" for role in ROLES),
    *(f"V2G_{role}_KEYSTORE" for role in ROLES),
    "V2G_PRIVATE_KEYS",
)


def _is_local_dev_node(chain: Chain, url: str) -> bool:
    """A node on this machine that holds anvil's public dev accounts (an ``anvil`` started by hand), while
    no key is configured: it is treated as the local chain it is (dev keys, its clock travelled over
    challenge windows). Any configured key, or any other node, makes it an external node."""
    if chain.accounts or any(os.environ.get(name) for name in KEY_VARIABLES):
        return False
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        return False
    try:
        held = list(chain.w3.eth.accounts[:4])
    except Exception:  # no answer: the platform names that when it checks the chain
        return False
    return held == [k.address for k in anvil_dev_keys(4)]


def open_chain(spec: str, data_dir: Path, *, write: bool = True) -> Chain:
    """The chain ``spec`` names (see the module's docstring); ``write=False`` opens the embedded chain
    read-only, beside a process that writes it."""
    if spec == "eth-tester":
        return Chain.eth_tester(data_dir / EMBEDDED_FILE, readonly=not write)
    if spec == "eth-tester:memory":
        return Chain.eth_tester()
    if spec == "anvil":
        return AnvilNode(data_dir).connect()
    if spec.startswith(("http://", "https://")):
        chain = Chain.rpc(spec)
        if _is_local_dev_node(chain, spec):
            logger.info(
                "%s is a local dev node (anvil's dev accounts, no keys configured): using its dev keys", spec
            )
            chain.accounts, chain.kind = anvil_dev_keys(), "anvil"
        return chain
    raise ChainError(f"unknown chain {spec!r}: use eth-tester, anvil or an http(s):// JSON-RPC URL")
