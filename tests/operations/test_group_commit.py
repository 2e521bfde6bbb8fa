"""The field writer's group commit: a refused write undoes only itself; a record written without its
savepoint goes in with the batch, or fails the batch with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import MeterReading, Owner
from backend.db.session import session_factory
from backend.metering import frames
from backend.operations.field import GroupCommit


def owner(k: int) -> Owner:
    return Owner(id=f"o{k}", address="0x" + f"{k:040x}")


def one_batch(writer: GroupCommit, writes: list[tuple[Callable[[Session], Any], bool]]) -> list[Any]:
    """``writes`` (each with or without its savepoint) in one batch, the writer held busy meanwhile; their
    outcomes (a value or the exception raised to the caller)."""
    hold = threading.Event()

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(writer.run(lambda s: hold.wait(10)))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(writer.run(fn, savepoint=isolated)) for fn, isolated in writes]
        await asyncio.sleep(0.05)
        hold.set()
        await first
        return await asyncio.gather(*rest, return_exceptions=True)

    try:
        return asyncio.run(scenario())
    finally:
        writer.close()


def test_one_batch_keeps_the_good_writes_and_fails_the_refused_one(tmp_path: Path) -> None:
    sessions = session_factory(f"sqlite:///{tmp_path / 'w.sqlite'}")
    writer = GroupCommit(sessions)

    def refused(session: Session) -> None:
        session.add(owner(2))
        session.flush()
        raise ValueError("refused")

    outcomes = one_batch(
        writer,
        [
            (lambda s: s.add(owner(1)), True),
            (refused, True),
            (lambda s: s.add(owner(3)), False),
            (lambda s: s.add(owner(4)), True),
        ],
    )
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "ValueError", "NoneType", "NoneType"]
    assert writer.commits == 2
    with sessions() as db:
        assert sorted(db.scalars(select(Owner.id))) == ["o1", "o3", "o4"]


def test_a_write_without_its_savepoint_that_fails_is_written_again_alone_and_fails_alone(
    tmp_path: Path,
) -> None:
    sessions = session_factory(f"sqlite:///{tmp_path / 'w.sqlite'}")
    writer = GroupCommit(sessions)

    def broken(session: Session) -> None:
        raise RuntimeError("the record could not be written")

    outcomes = one_batch(
        writer, [(lambda s: s.add(owner(1)), True), (broken, False), (lambda s: s.add(owner(2)), False)]
    )
    # the batch as one fails; written again write by write, the broken one alone fails, by name
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "RuntimeError", "NoneType"]
    assert str(outcomes[1]) == "the record could not be written"
    assert writer.retried == 1
    with sessions() as db:
        assert sorted(db.scalars(select(Owner.id))) == ["o1", "o2"]


def test_a_batch_of_frames_is_one_chain_per_station_and_a_head_moved_elsewhere_is_read_again(
    tmp_path: Path,
) -> None:
    sessions = session_factory(f"sqlite:///{tmp_path / 'w.sqlite'}")
    writer = GroupCommit(sessions)
    chain = frames.FrameChain()
    at = datetime(2023, 9, 12, 8, tzinfo=UTC)
    hold = threading.Event()

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(writer.run(lambda s: hold.wait(10)))
        await asyncio.sleep(0.05)
        batch = [
            writer.add(chain, (station, f'[2,"{station}{k}","Heartbeat",{{}}]', at + timedelta(seconds=k)))
            for k in range(3)
            for station in ("A", "B")
        ]
        await asyncio.sleep(0.05)
        hold.set()
        await first
        one = await asyncio.gather(*batch)
        # another process serves A meanwhile: the head kept here is one behind the database's
        with sessions.begin() as db:
            frames.append(db, "A", '[3,"x",{}]', at + timedelta(seconds=9))
        two = await writer.add(chain, ("A", '[2,"late","Heartbeat",{}]', at + timedelta(seconds=10)))
        return [*one, two]

    try:
        results = asyncio.run(scenario())
    finally:
        writer.close()
    assert [seq for seq, _ in results] == [1, 1, 2, 2, 3, 3, 5]
    assert writer.retried == 1  # the stale head broke (station_id, seq): written again, frame by frame
    with sessions() as db:
        heads = frames.heads(db)
        assert heads == {"A": [5, results[-1][1]], "B": [3, results[-2][1]]}
        verified = frames.load_verified(db, heads)  # every link checks
    assert [f.frame for f in verified["A"]][-2:] == ['[3,"x",{}]', '[2,"late","Heartbeat",{}]']


def test_in_order_samples_of_a_batch_are_stored_as_the_one_message_path_stores_them(tmp_path: Path) -> None:
    """The batched fast path writes exactly the rows the one-message path writes."""
    from backend.db.models import OcppTransaction, Station
    from backend.operations.field import InOrderSamples, Sample

    def setup(url: str) -> Any:
        sessions = session_factory(url)
        with sessions.begin() as db:
            for sid in ("A", "B"):
                db.add(Station(id=sid, ocpp_version="2.1", evses=1))
                db.flush()
                db.add(
                    OcppTransaction(
                        station_id=sid, transaction_id=f"{sid}-tx", evse_id=1, started_at=at,
                        last_seq_no=0, last_import_wh=0, last_export_wh=0,
                    )
                )  # fmt: skip
        return sessions

    at = datetime(2023, 9, 12, 8, tzinfo=UTC)
    items = [
        (
            sid,
            f"{sid}-tx",
            1,
            [Sample(at + timedelta(seconds=10 * k), 100 * k + j, j, None) for k in (1, 2)],
            at,
        )
        for j, sid in enumerate(("A", "B"))
    ]
    together, alone = setup(f"sqlite:///{tmp_path / 'a.sqlite'}"), setup(f"sqlite:///{tmp_path / 'b.sqlite'}")
    with together.begin() as db:
        InOrderSamples().write(db, items)
    with alone.begin() as db:
        for item in items:
            InOrderSamples().write_one(db, item)

    def dump(sessions: Any) -> Any:
        with sessions() as db:
            readings = db.execute(
                select(
                    MeterReading.station_id, MeterReading.seq_no, MeterReading.sample,
                    MeterReading.measured_at, MeterReading.import_wh, MeterReading.export_wh,
                ).order_by(MeterReading.station_id, MeterReading.sample)
            ).all()  # fmt: skip
            tails = db.execute(
                select(
                    OcppTransaction.station_id, OcppTransaction.last_seq_no, OcppTransaction.last_measured_at,
                    OcppTransaction.last_import_wh, OcppTransaction.last_export_wh,
                ).order_by(OcppTransaction.station_id)
            ).all()  # fmt: skip
            seen = db.execute(select(Station.id, Station.last_seen).order_by(Station.id)).all()
        return readings, tails, seen

    readings, tails, seen = dump(together)
    assert (readings, tails, seen) == dump(alone)
    assert [(r.station_id, r.sample, r.import_wh, r.export_wh) for r in readings] == [
        ("A", 0, 100, 0), ("A", 1, 200, 0), ("B", 0, 101, 1), ("B", 1, 201, 1),
    ]  # fmt: skip
    assert [(t.station_id, t.last_seq_no, t.last_import_wh) for t in tails] == [("A", 1, 200), ("B", 1, 201)]
    assert [s.last_seen for s in seen] == [at, at]


def test_a_commit_that_fails_is_never_written_again_and_the_kept_heads_are_dropped(tmp_path: Path) -> None:
    """A transaction that fails itself (here its commit) may have been made (a connection lost during
    COMMIT): the batch fails as a whole, nothing is written a second time, and what a Batched kind keeps
    from earlier commits is read from the database again."""
    from sqlalchemy import event

    sessions = session_factory(f"sqlite:///{tmp_path / 'w.sqlite'}")
    writer = GroupCommit(sessions)
    chain = frames.FrameChain()
    at = datetime(2023, 9, 12, 8, tzinfo=UTC)
    breaking = {"on": False}
    kept: dict[str, Any] = {}

    def commit_fails(_: Session) -> None:
        if breaking["on"]:
            raise RuntimeError("connection lost during COMMIT")

    event.listen(sessions, "before_commit", commit_fails)
    hold = threading.Event()

    async def scenario() -> list[Any]:
        await writer.add(chain, ("A", '[2,"a1","Heartbeat",{}]', at))  # A's head kept: seq 1
        await writer.add(chain, ("B", '[2,"b1","Heartbeat",{}]', at))  # and B's
        breaking["on"] = True
        first = asyncio.ensure_future(writer.run(lambda s: hold.wait(10)))
        await asyncio.sleep(0.05)
        batch = [
            writer.add(chain, ("A", '[2,"a2","Heartbeat",{}]', at)),
            asyncio.ensure_future(writer.run(lambda s: s.add(owner(1)))),
        ]
        await asyncio.sleep(0.05)
        hold.set()
        outcomes = await asyncio.gather(first, *batch, return_exceptions=True)
        kept.update(chain._heads)
        breaking["on"] = False
        return [*outcomes, await writer.add(chain, ("A", '[2,"a3","Heartbeat",{}]', at))]

    try:
        outcomes = asyncio.run(scenario())
    finally:
        writer.close()
    assert [str(o) for o in outcomes[:3]] == ["connection lost during COMMIT"] * 3
    assert writer.retried == 0  # never written again
    assert kept == {}  # B's head too (not in the batch) is read from the database again
    assert outcomes[3][0] == 2  # the next frame follows the database's head, not a head kept
    with sessions() as db:
        assert list(db.scalars(select(Owner.id))) == []
        assert frames.heads(db)["A"][0] == 2
