"""Deploy the token and the settlement contract with their roles, and record the deployment.

Accounts by position in :attr:`Chain.accounts`: 0 admin and pauser, 1 settler (the
aggregator's ledger account), 2 auditor, 3 meter (the key that signs period
roots). Re-running against a recorded deployment whose code is on chain changes
nothing (missing roles are granted, a meter key that differs is set, nothing is
redeployed).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from backend.chain.client import Chain
from backend.chain.compiler import ARTIFACTS_DIR
from backend.chain.contracts import SettlementClient, TokenClient

logger = logging.getLogger(__name__)

ROLES = ("SETTLER_ROLE", "AUDITOR_ROLE", "PAUSER_ROLE")


@dataclass(frozen=True)
class DeploymentRecord:
    chain_id: int
    token: str
    settlement: str
    block_number: int
    liveness_s: int
    admin: str
    settler: str
    auditor: str
    meter: str
    artifact_hashes: dict[str, str]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DeploymentRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Actors:
    admin: LocalAccount
    settler: LocalAccount
    auditor: LocalAccount
    meter: LocalAccount

    @classmethod
    def of(cls, chain: Chain) -> Actors:
        if len(chain.accounts) < 4:
            raise ValueError("need four keys: admin, settler, auditor, meter (see backend/chain/deploy.py)")
        admin, settler, auditor, meter = chain.accounts[:4]
        return cls(admin, settler, auditor, meter)


def artifact_hashes() -> dict[str, str]:
    return {
        p.stem: "0x" + hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(ARTIFACTS_DIR.glob("*.json"))
        if p.stem in ("TestStablecoin", "V2GSettlement")
    }


def _grant_missing_roles(settlement: SettlementClient, actors: Actors) -> int:
    granted = 0
    holders = {
        "SETTLER_ROLE": actors.settler,
        "AUDITOR_ROLE": actors.auditor,
        "PAUSER_ROLE": actors.admin,
    }
    for role in ROLES:
        account = holders[role].address
        if not settlement.chain.call(settlement.contract.functions.hasRole(settlement.role(role), account)):
            settlement.grant_role(actors.admin, role, account)
            granted += 1
    if settlement.meter() != actors.meter.address:
        settlement.set_meter(actors.admin, actors.meter.address)
        granted += 1
    return granted


def deploy(
    chain: Chain,
    *,
    liveness_s: int = 3600,
    token_address: str | None = None,
    record_path: Path | None = None,
) -> DeploymentRecord:
    """Deploy (or confirm) token + settlement with roles; write the record to ``record_path`` if given."""
    actors = Actors.of(chain)
    chain_id = chain.w3.eth.chain_id
    if record_path is not None and record_path.exists():
        record = DeploymentRecord.from_json(record_path.read_text())
        if record.chain_id == chain_id and chain.w3.eth.get_code(record.settlement):  # type: ignore[arg-type]
            granted = _grant_missing_roles(SettlementClient.at(chain, record.settlement), actors)
            logger.info(
                "deployment at %s already on chain %d (%d role(s) or meter key set)",
                record.settlement,
                chain_id,
                granted,
            )
            return record
    if token_address is None:
        token_address = TokenClient.deploy(chain, actors.admin).address
    settlement, receipt = SettlementClient.deploy(
        chain,
        actors.admin,
        token_address,
        actors.admin.address,
        actors.settler.address,
        actors.meter.address,
        liveness_s,
    )
    _grant_missing_roles(settlement, actors)
    record = DeploymentRecord(
        chain_id=chain_id,
        token=token_address,
        settlement=settlement.address,
        block_number=int(receipt["blockNumber"]),
        liveness_s=liveness_s,
        admin=actors.admin.address,
        settler=actors.settler.address,
        auditor=actors.auditor.address,
        meter=actors.meter.address,
        artifact_hashes=artifact_hashes(),
    )
    if record_path is not None:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(record.to_json())
    logger.info(
        "deployed settlement %s and token %s on chain %d", settlement.address, token_address, chain_id
    )
    return record
