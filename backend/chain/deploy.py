"""Deploy the token and the settlement contract with their roles, and record the deployment.

Accounts by position in :attr:`Chain.accounts`: 0 admin and pauser, 1 settler (the
aggregator's ledger account, the only proposer), 2 auditor, 3 meter (the key that signs period
roots). Re-running against a recorded deployment whose code is on chain sends nothing: a role
that was revoked or a meter key that was rotated since is a deliberate change, reported in the
log and left alone, unless ``repair=True`` asks to grant the recorded roles again and to schedule
the recorded meter key (effective one notice period later, see ``docs/security.md``).
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
from backend.chain.contracts import (
    DEFAULT_CLAIM_WINDOW_S,
    InitialRoles,
    SettlementClient,
    TokenClient,
    default_notice_s,
)

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
    #: withdrawal notice (also the delay of meter and admin changes) and claim window, in seconds
    notice_s: int = 0
    claim_window_s: int = 0

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


def _holders(actors: Actors) -> dict[str, str]:
    return {
        "SETTLER_ROLE": actors.settler.address,
        "AUDITOR_ROLE": actors.auditor.address,
        "PAUSER_ROLE": actors.admin.address,
    }


def _initial_roles(actors: Actors) -> InitialRoles:
    holders = _holders(actors)
    return InitialRoles(holders["SETTLER_ROLE"], holders["AUDITOR_ROLE"], holders["PAUSER_ROLE"])


def drift(settlement: SettlementClient, actors: Actors) -> list[str]:
    """How the deployment's roles and meter key differ from the actors' (empty when they agree)."""
    found = [
        f"{account} does not hold {role}"
        for role, account in _holders(actors).items()
        if not settlement.has_role(role, account)
    ]
    if settlement.meter() != actors.meter.address:
        found.append(f"meter key is {settlement.meter()}, not {actors.meter.address}")
    return found


def _grant_missing_roles(settlement: SettlementClient, actors: Actors, *, repair: bool = True) -> int:
    """Restore the roles the actors lack and schedule the actors' meter key if it differs; returns the
    number of transactions sent. A grant takes two steps a notice period apart (the contract's
    ``scheduleRoleGrant``, then ``grantRole``): a first run schedules it, a run after the notice grants it.
    With ``repair=False`` nothing is sent: the differences are logged (a revoked role or a rotated meter
    key is a deliberate change that a re-run must not undo)."""
    differences = drift(settlement, actors)
    if not differences:
        return 0
    if not repair:
        for difference in differences:
            logger.warning(
                "deployment %s: %s (left as it is; repair=True restores it)", settlement.address, difference
            )
        return 0
    sent = 0
    now = int(settlement.chain.w3.eth.get_block("latest")["timestamp"])
    for role, account in _holders(actors).items():
        if settlement.has_role(role, account):
            continue
        due = settlement.role_grant_at(role, account)
        if due and due <= now + 1:  # the next block is at least a second later
            settlement.grant_role(actors.admin, role, account)
        elif not due:
            settlement.schedule_role_grant(actors.admin, role, account)
            logger.warning(
                "deployment %s: %s for %s scheduled (a re-run grants it after the notice)",
                settlement.address,
                role,
                account,
            )
        else:
            continue
        sent += 1
    pending, _ = settlement.pending_meter()
    if settlement.meter() != actors.meter.address and pending != actors.meter.address:
        settlement.set_meter(actors.admin, actors.meter.address)  # effective one notice period later
        logger.warning("deployment %s: meter key %s scheduled", settlement.address, actors.meter.address)
        sent += 1
    return sent


def deploy(
    chain: Chain,
    *,
    liveness_s: int = 3600,
    token_address: str | None = None,
    record_path: Path | None = None,
    repair: bool = False,
) -> DeploymentRecord:
    """Deploy (or confirm) token + settlement with roles; write the record to ``record_path`` if given.

    A recorded deployment is confirmed without a transaction; roles or a meter key changed since are
    reported, and restored only with ``repair=True``."""
    actors = Actors.of(chain)
    chain_id = chain.w3.eth.chain_id
    if record_path is not None and record_path.exists():
        record = DeploymentRecord.from_json(record_path.read_text())
        if record.chain_id == chain_id and chain.w3.eth.get_code(record.settlement):  # type: ignore[arg-type]
            sent = _grant_missing_roles(SettlementClient.at(chain, record.settlement), actors, repair=repair)
            logger.info(
                "deployment at %s already on chain %d (%d role(s) or meter key restored)",
                record.settlement,
                chain_id,
                sent,
            )
            return record
    if token_address is None:
        token_address = TokenClient.deploy(chain, actors.admin).address
    notice_s = default_notice_s(liveness_s)
    settlement, receipt = SettlementClient.deploy(
        chain,
        actors.admin,
        token_address,
        actors.admin.address,
        actors.settler.address,
        actors.meter.address,
        liveness_s,
        roles=_initial_roles(actors),
        notice_s=notice_s,
        claim_window_s=DEFAULT_CLAIM_WINDOW_S,
    )
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
        notice_s=notice_s,
        claim_window_s=DEFAULT_CLAIM_WINDOW_S,
    )
    if record_path is not None:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(record.to_json())
    logger.info(
        "deployed settlement %s and token %s on chain %d", settlement.address, token_address, chain_id
    )
    return record
