"""A chain and a database that no longer agree, put right: a chain file restored from a copy is rebuilt by
`v2g chain recover`; a database restored from a backup is brought forward from the chain by the next
settle. Each ends with the exact ledger it had, every entry claimed once, and reconcile OK."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.chain.client import Chain
from backend.chain.contracts import SettlementClient
from backend.db.models import Deployment, Period, PeriodEntry
from backend.db.session import session_factory
from tests.backend.conftest import command
from tests.backend.test_platform import anvils_of, block_of, claims_per_entry, named, ok, v2g

DAYS = ("2023-07-02", "2023-07-03")
EVS = "12"


def _ledger(cwd: Path) -> dict[str, tuple[int, int]]:
    """Every owner's and the settler's (balance, debt) on the chain, from the embedded chain's file."""
    sessions = session_factory(f"sqlite:///{cwd / 'v2g.sqlite'}", upgrade=False)
    with sessions() as session:
        addresses = sorted(set(session.scalars(select(PeriodEntry.address))))
        deployment = session.scalars(select(Deployment)).one()
    with Chain.eth_tester(cwd / ".v2g" / "chains" / "eth-tester.sqlite", readonly=True) as chain:
        settlement = SettlementClient.at(chain, deployment.settlement_address)
        settler = str((deployment.record or {})["settler"])
        return {a: (settlement.balance_of(a), settlement.debt_of(a)) for a in [*addresses, settler]}


def _copy(files: list[Path], to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, to / f.name)


def _restore(backup: Path, into: Path, pattern: str) -> None:
    for f in into.glob(pattern):
        f.unlink()
    for f in backup.iterdir():
        shutil.copy2(f, into / f.name)


def test_a_chain_file_restored_from_a_copy_is_rebuilt_by_chain_recover(here: Path) -> None:
    tmp_path = here
    chains = tmp_path / ".v2g" / "chains"
    command("settle", "--date", DAYS[0], "--evs", EVS)
    _copy(sorted(chains.glob("eth-tester.sqlite*")), tmp_path / "chain-copy")
    settled = command("settle", "--date", DAYS[1], "--evs", EVS)
    assert "reconciliation: OK" in settled
    before, head = _ledger(tmp_path), block_of(tmp_path)

    # the chain file is restored from the copy taken after the first day: the second day's escrow
    # top-up, proposal, finalisation and claims are not on it
    _restore(tmp_path / "chain-copy", chains, "eth-tester.sqlite*")
    assert block_of(tmp_path) < head
    assert "lost blocks" in named(v2g(tmp_path, "audit", "reconcile"), "ChainMismatchError")

    recovered = command("chain", "recover")
    assert "period(s) settled again: 20230703" in recovered, recovered
    assert recovered.strip().endswith("reconciliation: OK"), recovered
    # the same money where it was: every owner's balance and debt, the aggregator's float
    assert _ledger(tmp_path) == before
    assert command("audit", "reconcile").strip().endswith("OK")
    proof = command("audit", "proof", "--period", "20230703", "--entry", "0")
    assert "valid; contract leaf matches" in proof
    counts = claims_per_entry(tmp_path / "v2g.sqlite")  # both days: each entry claimed once
    sessions = session_factory(f"sqlite:///{tmp_path / 'v2g.sqlite'}", upgrade=False)
    with sessions() as session:
        entries = list(session.scalars(select(PeriodEntry)))
    assert sum(counts.values()) == len(entries) == len({(e.period_id, e.entry_id) for e in entries})

    # recovering a chain that lacks nothing sends nothing
    head = block_of(tmp_path)
    again = command("chain", "recover")
    assert "0 sent again; period(s) settled again: none" in again and block_of(tmp_path) == head


def test_a_database_restored_behind_the_chain_is_brought_forward_without_paying_twice(here: Path) -> None:
    tmp_path = here
    # a backup of the database taken while the period was at `signed` (the settle killed after storing
    # the period the metering service signed, before its escrow top-up and proposal)
    killed = v2g(tmp_path, "settle", "--date", DAYS[0], "--evs", EVS, env={"V2G_CRASH_AT": "built"})
    assert killed.returncode != 0
    _copy(sorted(tmp_path.glob("v2g.sqlite*")), tmp_path / "db-backup")
    assert "reconciliation: OK" in command("settle", "--date", DAYS[0], "--evs", EVS)
    before, head = _ledger(tmp_path), block_of(tmp_path)

    _restore(tmp_path / "db-backup", tmp_path, "v2g.sqlite*")
    sessions = session_factory(f"sqlite:///{tmp_path / 'v2g.sqlite'}", upgrade=False)
    with sessions() as session:
        assert session.get_one(Period, 20230702).status == "signed"

    # the proposal, finalisation and claims are taken from the chain: nothing is sent, nothing paid twice
    resumed = command("settle", "--date", DAYS[0], "--evs", EVS)
    assert "reconciliation: OK" in resumed, resumed
    assert block_of(tmp_path) == head
    assert _ledger(tmp_path) == before
    with sessions() as session:
        period = session.get_one(Period, 20230702)
        assert period.status == "claimed" and period.challenge_ends is not None
        assert all(e.claimed for e in session.scalars(select(PeriodEntry)))
    assert set(claims_per_entry(tmp_path / "v2g.sqlite").values()) == {1}


@pytest.mark.slow  # 25 s; the same replay as the embedded chain's above, on a node process
def test_an_anvil_that_lost_its_last_blocks_is_rebuilt_by_chain_recover(tmp_path: Path) -> None:
    state = tmp_path / ".v2g" / "chains" / "anvil"
    ok(v2g(tmp_path, "settle", "--date", DAYS[0], "--evs", EVS, "--chain", "anvil"))
    shutil.copytree(state, tmp_path / "anvil-copy")
    ok(v2g(tmp_path, "settle", "--date", DAYS[1], "--evs", EVS))  # the database's chain: anvil
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "anvil-copy", state)  # anvil restarts without the second day's blocks
    assert "lost blocks" in named(v2g(tmp_path, "audit", "reconcile"), "ChainMismatchError")
    recovered = ok(v2g(tmp_path, "chain", "recover"))
    assert "period(s) settled again: 20230703" in recovered, recovered
    assert recovered.strip().endswith("reconciliation: OK"), recovered
    assert ok(v2g(tmp_path, "audit", "reconcile")).strip().endswith("OK")
    assert anvils_of(str(tmp_path)) == []
