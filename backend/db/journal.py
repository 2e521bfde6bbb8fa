"""The platform's journal of what it sends on chain, kept in its database (``chain_journal``).

Every transaction is written before it is sent and marked with its block once mined; every clock jump on
a local chain is written after it is made. A chain that lost blocks the database relies on (a managed
anvil killed between its saves, an embedded chain file restored from a copy) is rebuilt from it by
`v2g chain recover` (:mod:`backend.app.recover`). The journal never stops a transaction: a write that
fails is logged, and the transaction goes out (the settlement job keeps its own record of what it sent).
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import ChainJournalRow

logger = logging.getLogger(__name__)


class DbJournal:
    """:class:`backend.chain.client.TxJournal` in the database of ``sessions``, for chain ``chain_id``."""

    def __init__(self, sessions: sessionmaker[Session], chain_id: int) -> None:
        self.sessions = sessions
        self.chain_id = chain_id

    def sent(self, raw: bytes, tx_hash: str) -> None:
        try:
            with self.sessions.begin() as session:
                known = session.scalar(select(ChainJournalRow.id).where(ChainJournalRow.tx_hash == tx_hash))
                if known is None:  # a resend of the same signed transaction is journaled once
                    session.add(
                        ChainJournalRow(
                            chain_id=self.chain_id, kind="tx", tx_hash=tx_hash, raw_tx="0x" + raw.hex()
                        )
                    )
        except SQLAlchemyError as exc:
            logger.warning("chain journal: transaction %s not journaled: %s", tx_hash, exc)

    def mined(self, tx_hash: str, block: int) -> None:
        try:
            with self.sessions.begin() as session:
                session.execute(
                    update(ChainJournalRow)
                    .where(ChainJournalRow.tx_hash == tx_hash)
                    .values(block_number=block)
                )
        except SQLAlchemyError as exc:
            logger.warning("chain journal: block of %s not journaled: %s", tx_hash, exc)

    def clock(self, timestamp: int, block: int) -> None:
        try:
            with self.sessions.begin() as session:
                session.add(
                    ChainJournalRow(
                        chain_id=self.chain_id, kind="clock", timestamp=timestamp, block_number=block
                    )
                )
        except SQLAlchemyError as exc:
            logger.warning("chain journal: clock jump to %d not journaled: %s", timestamp, exc)
