"""The settlement job: built → signed → proposed → finalised → claimed, idempotent and resumable.

Every transaction is signed with an explicit nonce and stored (raw bytes and
hash) *before* it is sent; its receipt is stored after. A re-run after a crash
at any point finds the stored transaction and either reads its receipt or sends
the same bytes again (same hash: it can be mined at most once), so no trade is
paid twice and none is skipped. The contract's claim bitmap is the second line
of defence: an entry already claimed on chain (by its owner, or by a lost
transaction) is detected and marked, never paid again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from eth_utils.crypto import keccak
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, sessionmaker
from web3.types import TxReceipt

from backend.chain.client import Chain, SignedTx
from backend.chain.contracts import PeriodHeader, PeriodState, SettlementClient, compact_signature
from backend.chain.deploy import Actors, DeploymentRecord
from backend.chain.errors import ContractRevertError, StaleNonceError, UnknownRevertError
from backend.db.models import (
    Deployment,
    Owner,
    Period,
    PeriodEntry,
    PeriodStatus,
    SettledTradeRow,
    Submission,
    SubmissionStatus,
)
from backend.settlement.period import PeriodBuild, build_period, gc_paused
from backend.settlement.tariff import Tariff, settle_trades
from scheduler.schedule import Trade

logger = logging.getLogger(__name__)


class SimulatedCrash(RuntimeError):  # noqa: N818 - it is a crash, not an error
    """Raised at a named point when a test asks the job to die there."""


class PeriodConflictError(RuntimeError):
    """A period id is already stored with a different root: refuse to overwrite it."""


class MeterServiceRequiredError(PeriodConflictError):
    """A period is signed by the metering service alone, never with a key in this process."""


CRASH_POINTS = (
    "built",
    "signed",
    "propose_sent",
    "proposed",
    "finalise_sent",
    "finalised",
    "claim_batch_sent",
    "claim_batch_stored",
)


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


# --- storing a built period -----------------------------------------------------------------------

ENTRY_COLUMNS = ("period_id", "entry_id", "owner_id", "address", "amount", "proof", "claimed")
TRADE_COLUMNS = (
    "period_id",
    "entry_id",
    "owner_id",
    "vehicle_id",
    "session_id",
    "interval_start",
    "direction",
    "energy_wh",
    "p2p_wh",
    "grid_wh",
    "p2p_price",
    "grid_price",
    "value",
    "fee",
    "amount",
)
#: Rows per ``executemany`` / ``COPY`` write: bounded memory at any period size.
STORE_CHUNK = 20_000
#: SQLite page cache while a period is stored (KiB; the connection's own size is restored after).
SQLITE_BULK_CACHE_KIB = 256 * 1024


def owner_addresses(session: Session) -> dict[str, str]:
    """Every registered owner's address, read through the driver's cursor (a million rows as plain tuples,
    not ORM objects or rows)."""
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(f"SELECT id, address FROM {Owner.__tablename__}")
        return dict(cursor.fetchall())
    finally:
        cursor.close()


def store_period(
    session: Session, built: PeriodBuild, *, deployment_id: int, starts_at: datetime, ends_at: datetime
) -> Period:
    """Add a built period to ``session``'s transaction (nothing is committed here): the period row, one
    ``period_entries`` row per entry with its proof and one ``settled_trades`` row per trade.

    Entries and trades go in bulk: SQLite through the driver's ``executemany`` in the session's
    transaction, PostgreSQL (psycopg) through ``COPY ... FROM STDIN``, anything else through Core
    ``executemany``. The rows are those the ORM writes for the same objects (tested byte for byte), so
    statements, proofs, reconciliation, the API and the portal read them as before."""
    period = Period(
        id=built.period_id,
        deployment_id=deployment_id,
        starts_at=starts_at,
        ends_at=ends_at,
        status=PeriodStatus.BUILT,
        root=_hex(built.root),
        total_credit=built.total_credit,
        total_debit=built.total_debit,
        entry_count=len(built.entries),
    )
    session.add(period)
    session.flush()
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        _store_sqlite(connection.connection.driver_connection, built, dialect)
    elif dialect.name == "postgresql" and dialect.driver == "psycopg":
        _store_copy(connection.connection.driver_connection, built)
    else:
        _store_core(session, built)
    return period


def _entry_rows(built: PeriodBuild) -> Iterator[tuple[int, int, str, str, int, bytes]]:
    """``(period_id, entry_id, owner_id, address, amount, proof as JSON text)`` in entry order."""
    pid = built.period_id
    for entry, proof in zip(built.entries, built.tree.proofs_json(), strict=True):
        yield pid, entry.entry_id, entry.owner_id, entry.address, entry.amount, proof


class _Converted(dict[Any, Any]):
    """A memo of ``convert`` over few distinct values (interval starts, directions): a C-level lookup."""

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, key: Any) -> Any:
        value = self[key] = self.convert(key)
        return value


def _trade_rows(
    built: PeriodBuild, interval: Callable[[datetime], Any], big: Callable[[int], Any]
) -> Iterator[tuple[Any, ...]]:
    """The settled trades' :data:`TRADE_COLUMNS`, ``interval_start`` through ``interval`` and the
    :class:`BigInt` columns (prices, value, fee, amount) through ``big``."""
    pid = built.period_id
    times, directions = _Converted(interval), _Converted(lambda d: d.value)
    for entry in (*built.entries, *built.zero_net):
        eid, owner = entry.entry_id, entry.owner_id
        for st in entry.trades:
            trade = st.trade
            yield (
                pid,
                eid,
                owner,
                trade.vehicle_id,
                trade.session_id,
                times[trade.interval_start],
                directions[trade.direction],
                trade.energy_wh,
                st.p2p_wh,
                st.grid_wh,
                big(st.p2p_price),
                big(st.grid_price),
                big(st.value),
                big(st.fee),
                big(st.amount),
            )


def _chunks(rows: Iterator[tuple[Any, ...]], size: int = STORE_CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _insert_sql(table: str, columns: Sequence[str], values: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(values)})"


def _store_sqlite(raw: Any, built: PeriodBuild, dialect: Dialect) -> None:
    """``executemany`` on the session's own sqlite3 connection (so in its transaction), values as the ORM
    binds them (``BigInt`` as decimal text, JSON as ``json.dumps`` text, ``False`` as 0, times through the
    column type's own processor), with a larger page cache while it runs (the index inserts by owner and
    address come in random order)."""
    interval = SettledTradeRow.__table__.c.interval_start.type.dialect_impl(dialect).bind_processor(dialect)
    assert interval is not None
    entries_sql = _insert_sql("period_entries", ENTRY_COLUMNS, ["?"] * (len(ENTRY_COLUMNS) - 1) + ["0"])
    trades_sql = _insert_sql("settled_trades", TRADE_COLUMNS, ["?"] * len(TRADE_COLUMNS))
    cursor = raw.cursor()
    (cache,) = cursor.execute("PRAGMA cache_size").fetchone()
    cursor.execute(f"PRAGMA cache_size = {-SQLITE_BULK_CACHE_KIB:d}")
    try:
        cursor.executemany(
            entries_sql,
            ((p, e, o, a, str(amount), proof.decode()) for p, e, o, a, amount, proof in _entry_rows(built)),
        )
        cursor.executemany(trades_sql, _trade_rows(built, interval, str))
    finally:
        cursor.execute(f"PRAGMA cache_size = {int(cache):d}")
        cursor.close()


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_text(value: str) -> str:
    """A text field of ``COPY ... FROM STDIN`` (text format): backslash, tab, newline and CR escaped."""
    if _COPY_SPECIAL.search(value) is None:
        return value
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_timestamp(value: datetime) -> str:
    """A ``timestamptz`` field of COPY, in UTC as :class:`UtcDateTime` binds it."""
    return value.astimezone(UTC).isoformat(sep=" ")


_ENTRY_LINE = b"%d\t%d\t%s\t%s\t%d\t%s\tf\n"
_TRADE_LINE = "\t".join(["%d", "%d", "%s", "%s", "%s", "%s", "%s"] + ["%d"] * 8) + "\n"


def _store_copy(raw: Any, built: PeriodBuild) -> None:
    """``COPY ... FROM STDIN`` (text format) on the session's own psycopg connection (so in its
    transaction), then ``ANALYZE`` of the two tables, as PostgreSQL advises after a bulk load: without
    statistics its planner takes an owner's lookup for thousands of rows (a parallel bitmap scan, 10 to
    40 ms) until autovacuum gets to it, minutes later; with them it is an index scan (well under 1 ms).
    About a second at a million entries (a sample of 30,000 rows), and it does not block reads or
    writes."""
    esc = _copy_text
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY period_entries ({', '.join(ENTRY_COLUMNS)}) FROM STDIN") as copy:
            for chunk in _chunks(_entry_rows(built)):
                copy.write(
                    b"".join(
                        _ENTRY_LINE % (p, e, esc(o).encode(), esc(a).encode(), amount, proof)
                        for p, e, o, a, amount, proof in chunk
                    )
                )
        with cursor.copy(f"COPY settled_trades ({', '.join(TRADE_COLUMNS)}) FROM STDIN") as copy:
            for chunk in _chunks(_trade_rows(built, _copy_timestamp, int)):
                copy.write(
                    "".join(
                        _TRADE_LINE % (p, e, esc(o), esc(v), esc(sid), t, esc(d), *numbers)
                        for p, e, o, v, sid, t, d, *numbers in chunk
                    )
                )
        cursor.execute("ANALYZE period_entries, settled_trades")


def _store_core(session: Session, built: PeriodBuild) -> None:
    """Core ``executemany`` (SQLAlchemy's types convert the values) for a driver without a bulk path."""
    for chunk in _chunks(_entry_rows(built)):
        session.execute(
            insert(PeriodEntry),
            [
                dict(zip(ENTRY_COLUMNS, (p, e, o, a, amount, json.loads(proof), False), strict=True))
                for p, e, o, a, amount, proof in chunk
            ],
        )
    for chunk in _chunks(_trade_rows(built, lambda t: t, int)):
        session.execute(
            insert(SettledTradeRow), [dict(zip(TRADE_COLUMNS, row, strict=True)) for row in chunk]
        )


@dataclass
class SettlementJob:
    sessions: sessionmaker[Session]
    chain: Chain
    record: DeploymentRecord
    actors: Actors
    batch_size: int = 200
    travel_time: bool = False
    #: Fault injection for tests: die at this point (``V2G_CRASH_AT`` for a command). ``crash_hard``
    #: kills the process with SIGKILL, as a power cut would; otherwise :class:`SimulatedCrash` is raised.
    crash_at: str | None = None
    crash_hard: bool = False
    #: Who signs a period's root: the metering service (:class:`backend.metering.service.MeterClient`), so
    #: that this process never holds the meter key; ``None``: a period stored unsigned cannot advance.
    meter_signer: Callable[..., bytes] | None = None

    def __post_init__(self) -> None:
        if self.crash_at is not None and self.crash_at not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {self.crash_at!r}; one of {CRASH_POINTS}")
        self.settlement = SettlementClient.at(self.chain, self.record.settlement)

    def _crash(self, point: str) -> None:
        if self.crash_at == point:
            if self.crash_hard:
                logger.warning("V2G_CRASH_AT=%s: killing this process", point)
                os.kill(os.getpid(), signal.SIGKILL)
            raise SimulatedCrash(point)

    # --- setup -----------------------------------------------------------------------

    def deployment_id(self, session: Session) -> int:
        row = session.scalar(
            select(Deployment).where(
                Deployment.chain_id == self.record.chain_id,
                Deployment.settlement_address == self.record.settlement,
            )
        )
        if row is None:
            row = Deployment(
                chain_id=self.record.chain_id,
                token_address=self.record.token,
                settlement_address=self.record.settlement,
                block_number=self.record.block_number,
                artifact_hashes=self.record.artifact_hashes,
            )
            session.add(row)
            session.flush()
        return row.id

    def register_owners(self, addresses: Mapping[str, str]) -> None:
        with self.sessions.begin() as session:
            known = {o.id: o.address for o in session.scalars(select(Owner))}
            for owner_id, address in addresses.items():
                if owner_id in known:
                    if known[owner_id] != address:
                        raise PeriodConflictError(f"owner {owner_id} is registered with {known[owner_id]}")
                    continue
                session.add(Owner(id=owner_id, address=address))

    # --- build ------------------------------------------------------------------------

    def build(
        self,
        period_id: int,
        starts_at: datetime,
        ends_at: datetime,
        trades: Sequence[Trade],
        tariff: Tariff,
        frame_heads: dict[str, list[Any]] | None = None,
        presign: Callable[..., bytes] | None = None,
    ) -> Period:
        """Price the trades, net them per owner, store the period with its proofs (once); a metered period
        also stores the raw-frame heads it was computed at. ``presign``: the meter signs the period before
        it is stored (a simulated day, whose registers live only in this call), so that it is stored
        ``signed`` and a resumed settlement never needs them again."""
        with gc_paused():
            with self.sessions() as session:
                addresses = owner_addresses(session)
                existing = session.get(Period, period_id)
            built = build_period(
                period_id,
                settle_trades(trades, tariff),
                addresses,
                chain_id=self.record.chain_id,
                contract=self.record.settlement,
            )
            if existing is not None:
                if existing.root != _hex(built.root):
                    raise PeriodConflictError(f"period {period_id} is stored with another root")
                return existing
            signature = (
                presign(
                    chain_id=self.record.chain_id,
                    contract=self.record.settlement,
                    period_id=period_id,
                    root=built.root,
                    total_credit=built.total_credit,
                    total_debit=built.total_debit,
                    entry_count=len(built.entries),
                )
                if presign is not None
                else None
            )
            with self.sessions.begin() as session:
                meanwhile = session.get(Period, period_id)
                if meanwhile is not None:  # another settler stored it meanwhile: the same, or a conflict
                    if meanwhile.root != _hex(built.root):
                        raise PeriodConflictError(f"period {period_id} is stored with another root")
                    return meanwhile
                period = store_period(
                    session,
                    built,
                    deployment_id=self.deployment_id(session),
                    starts_at=starts_at,
                    ends_at=ends_at,
                )
                period.frame_heads = frame_heads
                if signature is not None:
                    period.meter_signature = _hex(signature)
                    period.status = PeriodStatus.SIGNED
        self._crash("built")
        return period

    # --- run --------------------------------------------------------------------------

    def run(self, period_id: int) -> PeriodStatus:
        """Advance the period as far as it can go now (from where the chain has it: :meth:`align`);
        returns where it stands."""
        self.align(period_id)
        while True:
            with self.sessions() as session:
                period = session.get(Period, period_id)
                if period is None:
                    raise KeyError(f"no period {period_id}")
                status = PeriodStatus(period.status)
            if status is PeriodStatus.BUILT:
                self._sign(period_id)
            elif status is PeriodStatus.SIGNED:
                self._propose(period_id)
            elif status is PeriodStatus.PROPOSED:
                if not self._finalise(period_id):
                    return PeriodStatus.PROPOSED
            elif status is PeriodStatus.FINALISED:
                self._claims(period_id)
            else:
                return status

    def align(self, period_id: int) -> bool:
        """Bring the stored period to where the chain has it; returns whether anything changed.

        - The chain is *ahead* (a database restored from a backup taken before the period was proposed,
          finalised or claimed): the proposal is adopted from its ``PeriodProposed`` event (its root must
          be the stored one: :class:`PeriodConflictError` otherwise), the state and claimed entries are read
          from the contract and the stored transactions marked as the chain has them: nothing is sent twice.
        - The chain is *behind* (a local chain lost the blocks of the proposal: a managed anvil killed
          between saves, an embedded file restored): the period returns to ``signed`` and is proposed,
          finalised and claimed again, each transaction signed afresh (the meter's signature is kept; the
          finalisation and claims carry the new proposal's challenge end). A disputed period, or a chain
          that is not local, is never rewound (:class:`PeriodConflictError`: a person decides).
        Transactions of the job still on their way (signed, no receipt yet) are left to :meth:`run`.
        Cheap when both agree (two reads)."""
        on_chain = self.settlement.period_state(period_id)
        with self.sessions() as session:
            period = session.get(Period, period_id)
            if period is None:
                return False
            stored = PeriodStatus(period.status)
            claimed_stored = session.scalar(
                select(func.count())
                .select_from(PeriodEntry)
                .where(PeriodEntry.period_id == period_id, PeriodEntry.claimed.is_(True))
            )
            signed = list(
                session.scalars(
                    select(Submission.tx_hash).where(
                        Submission.period_id == period_id, Submission.status == SubmissionStatus.SIGNED
                    )
                )
            )
        expected = {
            PeriodStatus.BUILT: PeriodState.NONE,
            PeriodStatus.SIGNED: PeriodState.NONE,
            PeriodStatus.PROPOSED: PeriodState.PROPOSED,
            PeriodStatus.DISPUTED: PeriodState.DISPUTED,
            PeriodStatus.FINALISED: PeriodState.FINALISED,
            PeriodStatus.CLAIMED: PeriodState.FINALISED,
        }[stored]
        if on_chain is expected and (
            on_chain is not PeriodState.FINALISED
            or self.settlement.claimed_count(period_id) == claimed_stored
        ):
            return False
        if any(self.chain.receipt(tx_hash) is None for tx_hash in signed):
            return False  # the job's own transactions, signed before a crash, are resolved by run()
        if on_chain is PeriodState.NONE:
            if stored is PeriodStatus.DISPUTED or not self.travel_time:
                raise PeriodConflictError(
                    f"period {period_id} is {stored} in the database and unknown to the chain: the chain "
                    "lost it"
                    + (", and a disputed period is not proposed again" if self.travel_time else "")
                    + ": restore the chain, or decide by hand"
                )
            self._rewind(period_id)
        else:
            self._adopt(period_id, on_chain)
        return True

    def _mark_submissions(self, session: Session, period_id: int) -> list[tuple[Submission, TxReceipt]]:
        """Every submission of the period as the chain has it: mined (with its block), or dropped when
        the chain does not have it. Returns the mined claim batches with their receipts."""
        batches = []
        for sub in session.scalars(select(Submission).where(Submission.period_id == period_id)):
            if sub.status not in (SubmissionStatus.SIGNED, SubmissionStatus.MINED):
                continue
            receipt = self.chain.receipt(sub.tx_hash)
            if receipt is None:
                sub.status, sub.block_number = SubmissionStatus.DROPPED, None
                continue
            sub.status = SubmissionStatus.MINED if receipt["status"] == 1 else SubmissionStatus.REVERTED
            sub.block_number, sub.gas_used = int(receipt["blockNumber"]), int(receipt["gasUsed"])
            if sub.kind == "claim_batch" and receipt["status"] == 1:
                batches.append((sub, receipt))
        return batches

    def _rewind(self, period_id: int) -> None:
        """The chain lost the period's proposal: back to ``signed``; nothing it holds is claimed."""
        with self.sessions.begin() as session:
            period = session.get_one(Period, period_id)
            logger.warning("period %d is %s here, not on chain: proposed again", period_id, period.status)
            period.status = PeriodStatus.SIGNED if period.meter_signature else PeriodStatus.BUILT
            period.challenge_ends = None
            for entry in session.scalars(select(PeriodEntry).where(PeriodEntry.period_id == period_id)):
                entry.claimed, entry.claim_tx = False, None
            self._mark_submissions(session, period_id)

    def _adopt(self, period_id: int, on_chain: PeriodState) -> None:
        """The chain holds more of the period than the database (a database restored from a backup), or
        lost some of its claims: the proposal, state and claims as the chain has them (the proposal's
        root must be the stored one)."""
        topic = "0x" + keccak(text="PeriodProposed(uint64,bytes32,uint96,uint96,uint32,uint64)").hex()
        logs = self.chain.w3.eth.get_logs(
            {
                "address": self.settlement.address,
                "fromBlock": self.record.block_number,
                "toBlock": "latest",
                "topics": [topic, "0x" + period_id.to_bytes(32, "big").hex()],
            }
        )
        if not logs:
            raise PeriodConflictError(f"period {period_id} is {on_chain.name} on chain, with no proposal log")
        proposal = self.settlement.contract.events.PeriodProposed().process_log(logs[-1])["args"]
        root = _hex(bytes(proposal["root"]))
        with self.sessions.begin() as session:
            period = session.get_one(Period, period_id)
            if root != period.root:
                raise PeriodConflictError(
                    f"period {period_id} is proposed on chain with root {root[:12]}…, not the stored "
                    f"{period.root[:12]}…"
                )
            logger.warning(
                "period %d is %s on chain, %s in the database: taken from the chain",
                period_id,
                on_chain.name,
                period.status,
            )
            period.challenge_ends = int(proposal["challengeEnds"])
            period.status = {
                PeriodState.PROPOSED: PeriodStatus.PROPOSED,
                PeriodState.DISPUTED: PeriodStatus.DISPUTED,
                PeriodState.FINALISED: PeriodStatus.FINALISED,  # run() claims what is left, then CLAIMED
            }[on_chain]
            batches = self._mark_submissions(session, period_id)
            paid_by = {e: sub.tx_hash for sub, _ in batches for e in sub.entry_ids}
            for entry in session.scalars(select(PeriodEntry).where(PeriodEntry.period_id == period_id)):
                on = self.settlement.is_claimed(period_id, entry.entry_id)
                if on != entry.claimed or (on and entry.claim_tx is None):
                    # claimed by one of the job's batches (its transaction), elsewhere (none), or a claim
                    # the chain lost (unclaimed again)
                    entry.claimed, entry.claim_tx = on, paid_by.get(entry.entry_id) if on else None

    def header(self, period: Period) -> PeriodHeader:
        assert period.challenge_ends is not None
        return PeriodHeader(
            bytes.fromhex(period.root[2:]),
            period.total_credit,
            period.total_debit,
            period.entry_count,
            period.challenge_ends,
        )

    def _sign(self, period_id: int) -> None:
        with self.sessions.begin() as session:
            period = session.get_one(Period, period_id)
            if self.meter_signer is None:
                day = f"{str(period_id)[:4]}-{str(period_id)[4:6]}-{str(period_id)[6:]}"
                raise MeterServiceRequiredError(
                    f"period {period_id} is built and not signed: the metering service signs it "
                    + (
                        f"(v2g settle --metered --date {day})"
                        if period.frame_heads is not None
                        else f"from the simulated registers (v2g settle --date {day} with the same options "
                        "recomputes them)"
                    )
                )
            signature = self.meter_signer(
                chain_id=self.record.chain_id,
                contract=self.record.settlement,
                period_id=period_id,
                root=bytes.fromhex(period.root[2:]),
                total_credit=period.total_credit,
                total_debit=period.total_debit,
                entry_count=period.entry_count,
                **({"frame_heads": period.frame_heads} if period.frame_heads is not None else {}),
            )
            period.meter_signature = _hex(signature)
            period.status = PeriodStatus.SIGNED
        self._crash("signed")

    def _propose(self, period_id: int) -> None:
        with self.sessions() as session:
            period = session.get_one(Period, period_id)
            fn = self.settlement.contract.functions.propose(
                period_id,
                bytes.fromhex(period.root[2:]),
                period.total_credit,
                period.total_debit,
                period.entry_count,
                *compact_signature(bytes.fromhex(str(period.meter_signature)[2:])),
            )
        receipt = self._submit(period_id, "propose", fn, [])
        (event,) = self.settlement.events(receipt, "PeriodProposed")
        with self.sessions.begin() as session:
            period = session.get_one(Period, period_id)
            period.challenge_ends = int(event["challengeEnds"])
            period.status = PeriodStatus.PROPOSED
        self._crash("proposed")

    def _finalise(self, period_id: int) -> bool:
        with self.sessions() as session:
            period = session.get_one(Period, period_id)
            header = self.header(period)
        on_chain = self.settlement.period_state(period_id)
        if on_chain is PeriodState.DISPUTED:
            with self.sessions.begin() as session:
                session.get_one(Period, period_id).status = PeriodStatus.DISPUTED
            logger.warning("period %d was disputed on chain", period_id)
            return True
        if on_chain is PeriodState.FINALISED:
            # finalised before a crash (by the job's own transaction, or another's): its stored
            # transaction is marked as the chain has it, never left signed
            with self.sessions.begin() as session:
                self._mark_submissions(session, period_id)
        else:
            wait = header.challenge_ends - self.chain.timestamp()
            if wait >= 0:
                if not self.travel_time:
                    logger.info("period %d: challenge window open for %d s more", period_id, wait + 1)
                    return False
                self.chain.advance_time(wait + 1)
            fn = self.settlement.contract.functions.finalise(period_id, header.as_tuple())
            self._submit(period_id, "finalise", fn, [])
        with self.sessions.begin() as session:
            session.get_one(Period, period_id).status = PeriodStatus.FINALISED
        self._crash("finalised")
        return True

    def _claims(self, period_id: int) -> None:
        self._resolve_pending(period_id)
        first = True
        while True:
            with self.sessions() as session:
                period = session.get_one(Period, period_id)
                header = self.header(period)
                batch = list(
                    session.scalars(
                        select(PeriodEntry)
                        .where(PeriodEntry.period_id == period_id, PeriodEntry.claimed.is_(False))
                        .order_by(PeriodEntry.entry_id)
                        .limit(self.batch_size)
                    )
                )
            if not batch:
                break
            fn = self.settlement.contract.functions.claimBatch(
                period_id,
                header.as_tuple(),
                [e.entry_id for e in batch],
                [e.address for e in batch],
                [e.amount for e in batch],
                [[bytes.fromhex(p[2:]) for p in e.proof] for e in batch],
            )
            try:
                receipt = self._submit(period_id, "claim_batch", fn, [e.entry_id for e in batch])
            except ContractRevertError as exc:
                if exc.name != "AlreadyClaimed":
                    raise
                entry_id = int(exc.args_by_name["entryId"])
                if not self.settlement.is_claimed(period_id, entry_id):
                    raise
                self._mark_claimed(period_id, [entry_id], None)  # claimed on chain outside this job
                continue
            self._mark_batch(period_id, [e.entry_id for e in batch], receipt)
            if first:
                first = False
                self._crash("claim_batch_stored")
        with self.sessions.begin() as session:
            session.get_one(Period, period_id).status = PeriodStatus.CLAIMED

    def _mark_claimed(self, period_id: int, entry_ids: list[int], tx_hash: str | None) -> None:
        with self.sessions.begin() as session:
            for entry in session.scalars(
                select(PeriodEntry).where(
                    PeriodEntry.period_id == period_id, PeriodEntry.entry_id.in_(entry_ids)
                )
            ):
                entry.claimed = True
                entry.claim_tx = tx_hash

    def _resolve_pending(self, period_id: int) -> None:
        """Claim batches signed before a crash: read their receipts (resending if needed) and mark them."""
        with self.sessions() as session:
            pending = list(
                session.scalars(
                    select(Submission).where(
                        Submission.period_id == period_id,
                        Submission.kind == "claim_batch",
                        Submission.status == SubmissionStatus.SIGNED,
                    )
                )
            )
        for submission in pending:
            receipt = self._deliver(submission.id)
            if receipt is not None and receipt["status"] == 1:
                self._mark_batch(period_id, submission.entry_ids, receipt)

    def _mark_batch(self, period_id: int, entry_ids: list[int], receipt: TxReceipt) -> None:
        """Mark a mined batch's entries; those it skipped (``EntrySkipped``: claimed on chain before it,
        e.g. by their owner) are marked without the batch's transaction."""
        skipped = {int(e["entryId"]) for e in self.settlement.events(receipt, "EntrySkipped")}
        paid = [e for e in entry_ids if e not in skipped]
        self._mark_claimed(period_id, paid, _hex(bytes(receipt["transactionHash"])))
        if skipped:
            self._mark_claimed(period_id, sorted(skipped), None)  # claimed on chain outside this job

    # --- transactions -----------------------------------------------------------------------

    def _submit(self, period_id: int, kind: str, fn: Any, entry_ids: list[int]) -> TxReceipt:
        """Store, then send, one transaction; a propose or finalise stored before a crash is reused."""
        submission_id: int | None = None
        if kind != "claim_batch":  # pending claim batches are resolved before new ones are built
            with self.sessions() as session:
                submission_id = session.scalar(
                    select(Submission.id).where(
                        Submission.period_id == period_id,
                        Submission.kind == kind,
                        Submission.status.in_([SubmissionStatus.SIGNED, SubmissionStatus.MINED]),
                    )
                )
        if submission_id is None:
            signed: SignedTx = self.chain.sign_call(fn, self.actors.settler)
            with self.sessions.begin() as session:
                same = session.scalars(select(Submission).where(Submission.tx_hash == signed.tx_hash)).first()
                if same is not None:  # signed afresh after a chain lost it, to the very same bytes
                    same.status, same.block_number = SubmissionStatus.SIGNED, None
                    submission_id = same.id
            if submission_id is None:
                with self.sessions.begin() as session:
                    row = Submission(
                        period_id=period_id,
                        kind=kind,
                        entry_ids=entry_ids,
                        sender=signed.sender,
                        nonce=signed.nonce,
                        tx_hash=signed.tx_hash,
                        raw_tx=_hex(signed.raw),
                    )
                    session.add(row)
                    session.flush()
                    submission_id = row.id
        receipt = self._deliver(submission_id, crash_point=f"{kind}_sent")
        if receipt is None:  # dropped: its nonce went to another transaction; sign afresh
            return self._submit(period_id, kind, fn, entry_ids)
        if receipt["status"] != 1:
            self.chain.call(fn, self.actors.settler)  # raises the typed reason if it still reverts
            raise UnknownRevertError({"tx": str(receipt["transactionHash"].hex())})
        return receipt

    def _deliver(self, submission_id: int, crash_point: str | None = None) -> TxReceipt | None:
        """Send a stored transaction (again) and store its receipt; ``None`` if it was dropped."""
        with self.sessions() as session:
            row = session.get_one(Submission, submission_id)
            tx_hash, raw = row.tx_hash, bytes.fromhex(row.raw_tx[2:])
        receipt = self.chain.receipt(tx_hash)
        if receipt is None:
            try:
                self.chain.send_raw(raw)
            except StaleNonceError:
                with self.sessions.begin() as session:
                    session.get_one(Submission, submission_id).status = SubmissionStatus.DROPPED
                return None
            if crash_point is not None:
                self._crash(crash_point)
            receipt = self.chain.wait(bytes.fromhex(tx_hash[2:]))  # type: ignore[arg-type]
        with self.sessions.begin() as session:
            row = session.get_one(Submission, submission_id)
            row.status = SubmissionStatus.MINED if receipt["status"] == 1 else SubmissionStatus.REVERTED
            row.block_number = int(receipt["blockNumber"])
            row.gas_used = int(receipt["gasUsed"])
        return receipt
