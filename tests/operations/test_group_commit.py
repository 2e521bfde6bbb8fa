"""The field writer's group commit: a refused write undoes only itself; a record written without its
savepoint goes in with the batch, or fails the batch with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Owner
from backend.db.session import session_factory
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


def test_a_write_without_its_savepoint_that_fails_fails_its_batch(tmp_path: Path) -> None:
    sessions = session_factory(f"sqlite:///{tmp_path / 'w.sqlite'}")
    writer = GroupCommit(sessions)

    def broken(session: Session) -> None:
        raise RuntimeError("the record could not be written")

    outcomes = one_batch(writer, [(lambda s: s.add(owner(1)), True), (broken, False)])
    # nobody's writes stand, and everybody is told: as when the commit itself fails
    assert [str(o) for o in outcomes] == ["the record could not be written"] * 2
    with sessions() as db:
        assert list(db.scalars(select(Owner.id))) == []
