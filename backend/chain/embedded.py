"""The embedded eth-tester chain, kept on disk so that it outlives the process that used it.

Design: py-evm keeps every piece of chain state (headers, bodies, receipts, the state trie, the
canonical head) in one key-value store. Here that store is a SQLite file instead of a dict, so a
later process opens the same blocks, contracts, balances and logs at no replay cost: opening reads
the canonical head and nothing else; every other key is read when it is first needed (and cached).

- **Durability**: writes go into one SQLite transaction that is committed after every mined block
  (eth-tester mines one block per transaction) and after a snapshot revert. A process killed mid-way
  loses at most the block being mined; the settlement job has stored that transaction's signed bytes
  before it was sent, and sends the same bytes again on resume.
- **One writer**: the process that signs (a command that settles, ``v2g serve``) holds an exclusive
  ``flock`` on ``<file>.lock`` for as long as the chain is open; a second writer gets
  :class:`ChainBusyError` naming the holder. Readers (an audit query while the server runs) open the
  file without the lock: they see every committed block, and whatever they would write (a
  ``eth_call``'s pending state) stays in memory.
- **Time**: blocks carry their own timestamps; a new block is never older than its parent, so time
  travelled over a challenge window stays travelled after a restart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eth.db.atomic import AtomicDB
from eth.db.backends.base import BaseDB
from eth_tester import PyEVMBackend

from backend.chain.errors import ChainError

logger = logging.getLogger(__name__)

_TOMBSTONE = b""


class ChainBusyError(ChainError):
    """The embedded chain file is open for writing in another process."""


class ChainFileError(ChainError):
    """The embedded chain file cannot be opened (not a chain, unreadable, or a newer layout)."""


class SqliteKeyValue(BaseDB):
    """py-evm's key-value store in one SQLite table, read lazily, written in block-sized transactions.

    Threads may share it (the API's job threads) as long as one uses it at a time: the chain is used
    under the app's chain lock."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._cache: dict[bytes, bytes] = {}
        self._overlay: dict[bytes, bytes] = {}  # readers: writes that never reach the file
        try:
            if readonly:
                self._conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
                )
                self._conn.execute("BEGIN")
            self._conn.execute("SELECT count(*) FROM kv WHERE k = x''").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ChainFileError(f"{path}: not an embedded chain ({exc})") from None

    def __getitem__(self, key: bytes) -> bytes:
        if key in self._overlay:
            value = self._overlay[key]
            if value is _TOMBSTONE:
                raise KeyError(key)
            return value
        if key in self._cache:
            return self._cache[key]
        row = self._conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        value = bytes(row[0])
        self._cache[key] = value
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self.readonly:
            self._overlay[key] = value
            return
        self._cache[key] = value
        self._conn.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (key, value))

    def _exists(self, key: bytes) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __delitem__(self, key: bytes) -> None:
        if not self._exists(key):
            raise KeyError(key)
        if self.readonly:
            self._overlay[key] = _TOMBSTONE
            return
        self._cache.pop(key, None)
        self._conn.execute("DELETE FROM kv WHERE k = ?", (key,))

    def __iter__(self) -> Iterator[bytes]:
        for (key,) in self._conn.execute("SELECT k FROM kv"):
            if self._overlay.get(bytes(key)) is not _TOMBSTONE:
                yield bytes(key)
        yield from (k for k, v in self._overlay.items() if v is not _TOMBSTONE)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM kv").fetchone()[0])

    def commit(self) -> None:
        """Make everything written so far durable (writers only)."""
        if not self.readonly:
            self._conn.execute("COMMIT")
            self._conn.execute("BEGIN")

    def close(self) -> None:
        if not self.readonly:
            self._conn.execute("COMMIT")
        self._conn.close()


class _WriterLock:
    """An exclusive ``flock`` on ``<chain>.lock``, released when the process ends however it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(self._fd)
            os.close(self._fd)
            raise ChainBusyError(
                f"{path.with_suffix('')} is open for writing by {holder}: stop it, or send the work "
                "through it (the API), or read only"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv[:3])}).encode())

    def release(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} ({holder['command']})"
    except (ValueError, KeyError, OSError):
        return "another process"


class DurablePyEVMBackend(PyEVMBackend):  # type: ignore[misc]
    """eth-tester's py-evm backend over :class:`SqliteKeyValue`: the same genesis, accounts and chain id as
    the in-memory default; the chain continues where the last process left it."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        super().__init__()  # an in-memory genesis: the chain class, its ten dev accounts, genesis data
        fresh = not path.exists()
        if fresh and readonly:
            raise ChainFileError(f"{path}: no embedded chain here yet")
        self.lock = None if readonly else _WriterLock(path.with_name(path.name + ".lock"))
        try:
            self.store = SqliteKeyValue(path, readonly=readonly)
            chain_class: Any = type(self.chain)  # type: ignore[has-type]
            if fresh or len(self.store) == 0:
                memory = self.chain.chaindb.db.wrapped_db.kv_store  # type: ignore[has-type]
                for key, value in memory.items():
                    self.store[key] = value
                self.store.commit()
                logger.info("embedded chain created at %s", path)
            self.chain = chain_class(AtomicDB(self.store))
        except Exception:
            if self.lock is not None:
                self.lock.release()
            raise
        head = self.chain.get_canonical_head()
        logger.info(
            "embedded chain %s opened at block %d%s", path, head.block_number, " (read-only)" * readonly
        )

    # eth-tester finds a transaction by walking back from the head block by block, which costs seconds
    # on a year of blocks; py-evm keeps a transaction index, so look it up there.
    def _find_transaction(self, transaction_hash: bytes) -> tuple[Any, Any, int]:
        from eth.exceptions import TransactionNotFound as NotIndexed
        from eth_tester.exceptions import TransactionNotFound

        pending = self.chain.get_block()
        for index, transaction in enumerate(pending.transactions):
            if transaction.hash == transaction_hash:
                return pending, transaction, index
        try:
            number, index = self.chain.chaindb.get_transaction_index(transaction_hash)
        except NotIndexed:
            raise TransactionNotFound(
                f"No transaction found for transaction hash: 0x{transaction_hash.hex()}"
            ) from None
        block = self.chain.get_canonical_block_by_number(number)
        return block, block.transactions[index], index

    def get_transaction_by_hash(self, transaction_hash: bytes) -> Any:
        from eth_tester.backends.pyevm.serializers import serialize_transaction

        block, transaction, index = self._find_transaction(transaction_hash)
        return serialize_transaction(block, transaction, index, block.number == self.chain.get_block().number)

    def get_transaction_receipt(self, transaction_hash: bytes) -> Any:
        from eth_tester.backends.pyevm.serializers import serialize_transaction_receipt

        block, transaction, index = self._find_transaction(transaction_hash)
        return serialize_transaction_receipt(
            block,
            block.get_receipts(self.chain.chaindb),
            transaction,
            index,
            block.number == self.chain.get_block().number,
            self.chain.get_vm(),
        )

    def mine_blocks(self, num_blocks: int = 1, coinbase: Any = None) -> tuple[bytes, ...]:
        kwargs = {} if coinbase is None else {"coinbase": coinbase}
        hashes = tuple(super().mine_blocks(num_blocks, **kwargs))
        self.store.commit()
        return hashes

    def revert_to_snapshot(self, snapshot: Any) -> None:
        super().revert_to_snapshot(snapshot)
        self.store.commit()

    def close(self) -> None:
        self.store.close()
        if self.lock is not None:
            self.lock.release()
