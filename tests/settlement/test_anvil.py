"""The same pipeline on anvil (the npm binary, started on a free loopback port and stopped after)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.chain.client import Chain
from backend.chain.contracts import SettlementClient
from backend.chain.errors import ContractRevertError
from backend.db.models import PeriodStatus
from tests.settlement.conftest import Day, Setup, make_setup
from tests.settlement.test_job import PERIOD, settle

pytestmark = pytest.mark.anvil


@pytest.fixture
def anvil_setup(day: Day, tmp_path: Path) -> Iterator[Setup]:
    chain = Chain.anvil()
    try:
        yield make_setup(day, tmp_path / "v2g.sqlite", chain)
    finally:
        chain.close()
    assert chain._process is None


def test_settlement_end_to_end_on_anvil_with_a_crash_and_typed_errors(anvil_setup: Setup, day: Day) -> None:
    from backend.audit.indexer import EventIndexer
    from backend.audit.statements import reconcile
    from backend.settlement.job import SimulatedCrash

    setup = anvil_setup
    assert setup.chain.kind == "anvil" and setup.chain.w3.eth.chain_id == 31337
    with pytest.raises(SimulatedCrash):
        settle(setup, day, crash_at="claim_batch_sent", batch_size=4)
    assert settle(setup, day, batch_size=4) is PeriodStatus.CLAIMED
    EventIndexer(setup.sessions, setup.chain, setup.record.settlement, setup.record.block_number).sync()
    settlement = SettlementClient.at(setup.chain, setup.record.settlement)
    with setup.sessions() as session:
        report = reconcile(session, settlement, setup.actors.settler.address)
    assert report.ok, report.mismatches
    # anvil reports reverts as ContractCustomError: decoded to the same typed errors
    with pytest.raises(ContractRevertError) as caught:
        settlement.withdraw(setup.actors.auditor, 1)
    assert caught.value.name == "InsufficientBalance"
    assert caught.value.args_by_name == {
        "account": setup.actors.auditor.address,
        "available": 0,
        "requested": 1,
    }
    assert settlement.period_state(PERIOD).name == "FINALISED"
