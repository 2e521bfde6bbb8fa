"""Index the settlement contract's events into the database by block ranges, as blocks arrive.

eth-tester's ``get_logs`` over the whole chain grows quadratically with its
length, so the indexer keeps a cursor and asks only for the blocks it has not
seen, in bounded ranges. :meth:`EventIndexer.rebuild` drops the index and reads
it again from the chain alone.
"""

from __future__ import annotations

import logging
from typing import Any

from eth_utils.crypto import keccak
from hexbytes import HexBytes
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from backend.audit.replay import LoggedEvent
from backend.chain.client import Chain
from backend.chain.compiler import load_artifact
from backend.db.models import IndexedEvent, IndexerCursor

logger = logging.getLogger(__name__)

#: The argument naming the account an event concerns, for the statement index.
ACCOUNT_ARG = {"Deposited": "account", "Withdrawn": "account", "EntryClaimed": "owner"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | HexBytes):
        return "0x" + bytes(value).hex()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)  # amounts can pass 2^53: keep them exact
    return value


def _event_topics(abi: list[dict[str, Any]]) -> dict[bytes, str]:
    topics = {}
    for item in abi:
        if item.get("type") == "event":
            signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            topics[keccak(text=signature)] = item["name"]
    return topics


class EventIndexer:
    def __init__(
        self, sessions: sessionmaker[Session], chain: Chain, contract: str, start_block: int
    ) -> None:
        self.sessions = sessions
        self.chain = chain
        self.address = chain.w3.to_checksum_address(contract)
        self.start_block = start_block
        abi = load_artifact("V2GSettlement").abi
        self.contract = chain.w3.eth.contract(address=self.address, abi=abi)
        self.topics = _event_topics(abi)

    def sync(self, to_block: int | None = None, step: int = 500) -> int:
        """Index every block after the cursor up to ``to_block`` (latest); returns events stored."""
        latest = self.chain.w3.eth.block_number if to_block is None else to_block
        stored = 0
        with self.sessions() as session:
            cursor = session.get(IndexerCursor, self.address)
            start = (cursor.last_block + 1) if cursor else self.start_block
        while start <= latest:
            end = min(start + step - 1, latest)
            logs = self.chain.logs(self.address, start, end)
            with self.sessions.begin() as session:
                for log in logs:
                    name = self.topics.get(bytes(log["topics"][0]))
                    if name is None:
                        continue
                    args = dict(getattr(self.contract.events, name)().process_log(log)["args"])
                    account = args.get(ACCOUNT_ARG.get(name, ""))
                    session.add(
                        IndexedEvent(
                            contract=self.address,
                            block_number=int(log["blockNumber"]),
                            log_index=int(log["logIndex"]),
                            tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                            name=name,
                            args={k: _jsonable(v) for k, v in args.items()},
                            period_id=int(args["periodId"]) if "periodId" in args else None,
                            account=account,
                        )
                    )
                    stored += 1
                cursor = session.get(IndexerCursor, self.address)
                if cursor is None:
                    session.add(IndexerCursor(contract=self.address, last_block=end))
                else:
                    cursor.last_block = end
            start = end + 1
        logger.info("indexed %d event(s) up to block %d", stored, latest)
        return stored

    def rebuild(self) -> int:
        """Forget the index and read it again from the chain."""
        with self.sessions.begin() as session:
            session.execute(delete(IndexedEvent).where(IndexedEvent.contract == self.address))
            session.execute(delete(IndexerCursor).where(IndexerCursor.contract == self.address))
        return self.sync()


def indexed_events(session: Session, contract: str, *names: str) -> list[LoggedEvent]:
    """Stored events (args with integers restored), in chain order."""
    query = select(IndexedEvent).where(IndexedEvent.contract == contract)
    if names:
        query = query.where(IndexedEvent.name.in_(names))
    rows = session.scalars(query.order_by(IndexedEvent.block_number, IndexedEvent.log_index))
    return [LoggedEvent(r.name, r.block_number, r.log_index, r.tx_hash, restore_args(r.args)) for r in rows]


def restore_args(args: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, str) and value.lstrip("-").isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out
