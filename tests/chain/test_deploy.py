"""Deployment: roles granted, record written; re-running against it changes nothing."""

from __future__ import annotations

from pathlib import Path

from backend.chain.client import Chain
from backend.chain.contracts import SettlementClient
from backend.chain.deploy import Actors, DeploymentRecord, deploy


def test_deploy_writes_record_and_rerun_changes_nothing(tmp_path: Path) -> None:
    chain = Chain.eth_tester()
    record_path = tmp_path / "deployments" / "local.json"
    first = deploy(chain, liveness_s=120, record_path=record_path)
    actors = Actors.of(chain)
    settlement = SettlementClient.at(chain, first.settlement)
    for role, account in (
        ("SETTLER_ROLE", actors.settler),
        ("AUDITOR_ROLE", actors.auditor),
        ("PAUSER_ROLE", actors.admin),
    ):
        assert chain.call(settlement.contract.functions.hasRole(settlement.role(role), account.address))
    assert settlement.meter() == actors.meter.address == first.meter
    assert DeploymentRecord.from_json(record_path.read_text()) == first
    assert first.chain_id == chain.w3.eth.chain_id and set(first.artifact_hashes) == {
        "TestStablecoin",
        "V2GSettlement",
    }
    block = chain.w3.eth.block_number
    again = deploy(chain, liveness_s=120, record_path=record_path)
    assert again == first
    assert chain.w3.eth.block_number == block  # no transaction at all


def test_deploy_rerun_leaves_a_revoked_role_revoked_unless_asked_to_repair(tmp_path: Path) -> None:
    chain = Chain.eth_tester()
    record_path = tmp_path / "local.json"
    first = deploy(chain, record_path=record_path)
    actors = Actors.of(chain)
    settlement = SettlementClient.at(chain, first.settlement)
    settlement.renounce_role(actors.auditor, "AUDITOR_ROLE")  # a deliberate change
    block = chain.w3.eth.block_number
    assert deploy(chain, record_path=record_path) == first
    assert chain.w3.eth.block_number == block  # nothing sent: the revocation stands
    assert not settlement.has_role("AUDITOR_ROLE", actors.auditor.address)
    assert deploy(chain, record_path=record_path, repair=True) == first
    assert chain.w3.eth.block_number == block + 1  # exactly one transaction: the grant is scheduled
    assert not settlement.has_role("AUDITOR_ROLE", actors.auditor.address)  # a grant waits a notice
    assert deploy(chain, record_path=record_path, repair=True) == first  # not due yet: nothing sent
    assert chain.w3.eth.block_number == block + 1
    chain.advance_time(first.notice_s + 2)
    assert deploy(chain, record_path=record_path, repair=True) == first
    assert settlement.has_role("AUDITOR_ROLE", actors.auditor.address)


def test_deploy_rerun_leaves_a_rotated_meter_key_unless_asked_to_repair(tmp_path: Path) -> None:
    chain = Chain.eth_tester()
    record_path = tmp_path / "local.json"
    first = deploy(chain, record_path=record_path)
    actors = Actors.of(chain)
    settlement = SettlementClient.at(chain, first.settlement)
    rotated = chain.accounts[9].address
    settlement.set_meter(actors.admin, rotated)  # rotated by hand: scheduled, accepted after the notice
    chain.advance_time(first.notice_s)
    settlement.accept_meter(actors.admin)
    block = chain.w3.eth.block_number
    assert deploy(chain, record_path=record_path) == first
    assert chain.w3.eth.block_number == block and settlement.meter() == rotated
    assert deploy(chain, record_path=record_path, repair=True) == first
    assert chain.w3.eth.block_number == block + 1  # the recorded key scheduled, not set
    assert settlement.meter() == rotated
    assert settlement.pending_meter()[0] == actors.meter.address


def test_deploy_on_another_chain_ignores_a_foreign_record(tmp_path: Path) -> None:
    record_path = tmp_path / "local.json"
    first = deploy(Chain.eth_tester(), record_path=record_path)
    second_chain = Chain.eth_tester()
    # a fresh chain with the same id but no code at the recorded address: deploy anew
    fresh = deploy(second_chain, record_path=record_path)
    assert second_chain.w3.eth.get_code(second_chain.w3.to_checksum_address(fresh.settlement))
    assert fresh.settlement == first.settlement  # same deployer, same nonce: same address, new code
