"""Raw frames: every frame a station sent, as received, append-only and hash-chained per station.

A frame's hash is ``sha256(prev_hash ‖ JSON[station, seq, received_at, frame])`` with ``prev_hash`` the
station's previous frame's hash (64 zeros for its first). The CSMS appends (:func:`append`, inside the
same database transaction as what it derives from the frame, before the station gets its answer); the
metering service reads them back up to a period's heads and verifies every link (:func:`load_verified`)
before it believes a single register: an edited, deleted or inserted row is a :class:`FrameChainError`
naming the station and the frame, never a signed root.

The heads (``{station: [seq, hash]}``) a period was computed at are what an auditor recomputes it from:
:func:`backend.audit.recompute.export_period` writes the frames up to the heads, with what else a
recomputation needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, func, insert, select
from sqlalchemy.orm import Session

from backend.db.models import RawFrame
from backend.db.session import bound_chunks

GENESIS = "0" * 64

Heads = dict[str, list[Any]]  # station → [seq, hash]


class FrameChainError(ValueError):
    """The raw frames do not form the chain they claim to: a row was edited, deleted or inserted."""


@dataclass(frozen=True)
class Frame:
    station_id: str
    seq: int
    received_at: datetime
    frame: str
    prev_hash: str
    hash: str


def stamp(at: datetime) -> str:
    """The receive time as hashed: UTC, microseconds (what both databases keep)."""
    return at.isoformat(timespec="microseconds")


def frame_hash(prev_hash: str, station_id: str, seq: int, received_at: datetime, frame: str) -> str:
    body = json.dumps([station_id, seq, stamp(received_at), frame], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode()).hexdigest()


def append(session: Session, station_id: str, frame: str, received_at: datetime) -> tuple[int, str]:
    """Store one frame at the end of its station's chain; returns its ``(seq, hash)``."""
    last = session.execute(
        select(RawFrame.seq, RawFrame.hash)
        .where(RawFrame.station_id == station_id)
        .order_by(RawFrame.seq.desc())
        .limit(1)
    ).first()
    seq, prev = (int(last[0]) + 1, str(last[1])) if last is not None else (1, GENESIS)
    digest = frame_hash(prev, station_id, seq, received_at, frame)
    session.add(
        RawFrame(
            station_id=station_id, seq=seq, received_at=received_at, frame=frame, prev_hash=prev, hash=digest
        )
    )
    return seq, digest


class FrameChain:
    """The CSMS's appends, a batch at a time (the field writer's :class:`~backend.operations.field.Batched`
    kind): each station's head is kept here once its frame is committed, so a batch of frames is one
    INSERT, with a read of the heads only for stations not seen since this process started (or since
    :meth:`forget`). A head kept here that another process moved on (the station was served there
    meanwhile) makes the insert break ``(station_id, seq)``'s uniqueness: the batch is written again
    frame by frame (:func:`append`, the head read from the database) and the kept heads are dropped.
    Items are ``(station_id, frame, received_at)``; results ``(seq, hash)``."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[int, str]] = {}

    def forget(self, station_id: str) -> None:
        """Read this station's head from the database next time (it connected: it may have been served
        by another process since)."""
        self._heads.pop(station_id, None)

    def write(self, session: Session, items: list[tuple[str, str, datetime]]) -> list[tuple[int, str]]:
        heads_ = dict(self._heads)
        missing = sorted({station_id for station_id, _, _ in items} - heads_.keys())
        if missing:
            heads_.update((s, (int(q), str(h))) for s, (q, h) in heads_of(session, missing).items())
        rows, out = [], []
        for station_id, frame, received_at in items:
            seq, prev = heads_.get(station_id, (0, GENESIS))
            seq += 1
            digest = frame_hash(prev, station_id, seq, received_at, frame)
            rows.append(
                {
                    "station_id": station_id,
                    "seq": seq,
                    "received_at": received_at,
                    "frame": frame,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            heads_[station_id] = (seq, digest)
            out.append((seq, digest))
        session.execute(insert(cast(Table, RawFrame.__table__)), rows)  # Core: executemany, no ORM
        return out

    def write_one(self, session: Session, item: tuple[str, str, datetime]) -> tuple[int, str]:
        return append(session, *item)

    def reset(self) -> None:
        """A transaction failed: every head is read from the database again (one restored or failed over
        may have lost what this process saw committed)."""
        self._heads = {}

    def done(self, committed: list[tuple[Any, Any]], failed: list[Any]) -> None:
        for (station_id, _, _), (seq, digest) in committed:
            self._heads[station_id] = (seq, digest)
        for station_id, _, _ in failed:
            self._heads.pop(station_id, None)


def heads_of(session: Session, stations: list[str]) -> Heads:
    """The last frame of each of ``stations`` that has one, ``{station: [seq, hash]}``."""
    out: Heads = {}
    for chunk in bound_chunks(stations):
        out.update(_heads(session, RawFrame.station_id.in_(chunk)))
    return out


def heads(session: Session) -> Heads:
    """Every station's last frame, ``{station: [seq, hash]}``."""
    return _heads(session, None)


def _heads(session: Session, which: ColumnElement[bool] | None) -> Heads:
    last = select(RawFrame.station_id, func.max(RawFrame.seq).label("seq"))
    if which is not None:
        last = last.where(which)
    newest = last.group_by(RawFrame.station_id).subquery()
    rows = session.execute(
        select(RawFrame.station_id, RawFrame.seq, RawFrame.hash).join(
            newest, (RawFrame.station_id == newest.c.station_id) & (RawFrame.seq == newest.c.seq)
        )
    )
    return {str(s): [int(q), str(h)] for s, q, h in rows}


def verify_chain(frames: Iterable[Frame], heads_: Mapping[str, list[Any]]) -> dict[str, list[Frame]]:
    """Frames grouped per station, each chain checked link by link from its first frame to its head."""
    by_station: dict[str, list[Frame]] = {}
    for f in frames:
        by_station.setdefault(f.station_id, []).append(f)
    for station_id, (head_seq, head_hash) in heads_.items():
        chain = by_station.get(station_id, [])
        prev = GENESIS
        for expected, f in enumerate(chain, start=1):
            if f.seq != expected:
                raise FrameChainError(
                    f"station {station_id}: frame {expected} is missing (next stored is {f.seq})"
                )
            if f.prev_hash != prev:
                raise FrameChainError(
                    f"station {station_id}: frame {f.seq} does not follow frame {f.seq - 1}"
                )
            if frame_hash(prev, station_id, f.seq, f.received_at, f.frame) != f.hash:
                raise FrameChainError(f"station {station_id}: frame {f.seq} was changed after it was stored")
            prev = f.hash
        if len(chain) != int(head_seq) or prev != head_hash:
            raise FrameChainError(
                f"station {station_id}: the chain ends at frame {len(chain)} ({prev[:12]}…), "
                f"not at the head {head_seq} ({str(head_hash)[:12]}…)"
            )
    for station_id in by_station.keys() - heads_.keys():
        del by_station[station_id]
    return by_station


def load_verified(session: Session, heads_: Mapping[str, list[Any]]) -> dict[str, list[Frame]]:
    """Every station's frames up to its head, verified (:class:`FrameChainError` otherwise)."""
    frames: list[Frame] = []
    for station_id, (head_seq, _) in sorted(heads_.items()):
        frames.extend(
            Frame(r.station_id, int(r.seq), r.received_at, r.frame, r.prev_hash, r.hash)
            for r in session.scalars(
                select(RawFrame)
                .where(RawFrame.station_id == station_id, RawFrame.seq <= int(head_seq))
                .order_by(RawFrame.seq)
            )
        )
    return verify_chain(frames, heads_)


def extends(old: Mapping[str, list[Any]], new: Mapping[str, list[Any]], session: Session) -> None:
    """``new`` heads continue the chains ``old`` heads ended: each old head is still the frame at its seq
    (:class:`FrameChainError` if a station's history was rewritten since)."""
    for station_id, (seq, digest) in old.items():
        stored = session.scalar(
            select(RawFrame.hash).where(RawFrame.station_id == station_id, RawFrame.seq == int(seq))
        )
        if stored != digest:
            raise FrameChainError(
                f"station {station_id}: frame {seq} is no longer the one a signed period was computed at"
            )
        if station_id not in new or int(new[station_id][0]) < int(seq):
            raise FrameChainError(f"station {station_id}: the heads go back behind frame {seq}")
