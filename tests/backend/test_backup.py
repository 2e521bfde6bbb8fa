"""`v2g backup` and `v2g restore`: a backup taken mid-settlement, everything lost, the backup restored,
and the day finished to the very ledger a run without the loss ends with."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select

from backend.db.models import Period, PeriodEntry
from backend.db.session import session_factory
from tests.backend.conftest import command
from tests.backend.test_platform import claims_per_entry, v2g
from tests.backend.test_recover import DAYS, EVS, _ledger


def _lose_everything(cwd: Path) -> None:
    for f in cwd.glob("v2g.sqlite*"):
        f.unlink()
    shutil.rmtree(cwd / ".v2g" / "chains")


def test_a_backup_taken_mid_settlement_restores_and_the_day_finishes_once(here: Path) -> None:
    tmp_path = here
    command("settle", "--date", DAYS[0], "--evs", EVS)
    command("backup", str(tmp_path / "after-day-1"))
    # the second day is killed after its proposal, and backed up as it stands
    killed = v2g(tmp_path, "settle", "--date", DAYS[1], "--evs", EVS, env={"V2G_CRASH_AT": "proposed"})
    assert killed.returncode != 0
    said = command("backup", str(tmp_path / "mid-day-2"))
    assert "sqlite database (2 period(s)), eth-tester chain" in said
    refused = command("backup", str(tmp_path / "mid-day-2"), code=2)
    assert refused.startswith("BackupError: ") and "never overwrites" in refused

    # the reference: the day finished without a loss
    command("settle", "--date", DAYS[1], "--evs", EVS)
    reference = _ledger(tmp_path)

    # an incomplete backup is refused before anything is touched
    shutil.copytree(tmp_path / "mid-day-2", tmp_path / "broken")
    (tmp_path / "broken" / "database.sqlite").unlink()
    refused = command("restore", str(tmp_path / "broken"), code=2)
    assert refused.startswith("BackupError: ") and "missing" in refused
    assert _ledger(tmp_path) == reference  # the database and the chain as they were

    # everything lost; the mid-day backup restored; the day finished again, to the same ledger
    _lose_everything(tmp_path)
    restored = command("restore", str(tmp_path / "mid-day-2"))
    assert restored.strip().endswith("reconciliation: OK"), restored
    sessions = session_factory(f"sqlite:///{tmp_path / 'v2g.sqlite'}", upgrade=False)
    with sessions() as session:
        assert session.get_one(Period, 20230703).status == "proposed"
    finished = command("settle", "--date", DAYS[1], "--evs", EVS)
    assert "reconciliation: OK" in finished
    assert _ledger(tmp_path) == reference
    with sessions() as session:
        entries = list(session.scalars(select(PeriodEntry)))
    assert all(e.claimed for e in entries)
    assert sum(claims_per_entry(tmp_path / "v2g.sqlite").values()) == len(entries)

    # the day-1 backup over all of it: day 2 is gone from both, and settles afresh
    _lose_everything(tmp_path)
    assert command("restore", str(tmp_path / "after-day-1")).strip().endswith("reconciliation: OK")
    with session_factory(f"sqlite:///{tmp_path / 'v2g.sqlite'}", upgrade=False)() as session:
        assert [p.id for p in session.scalars(select(Period))] == [20230702]  # (a new pool: a new file)
    command("settle", "--date", DAYS[1], "--evs", EVS)
    assert _ledger(tmp_path) == reference
