"""One running platform: the service layer under the command line and the API.

A :class:`Platform` is one database and the one chain it settles on. Both doors open it the same way
(:meth:`Platform.open`) and call the same operations on it (:meth:`Platform.statement`,
:meth:`Platform.proof`, :meth:`Platform.reconcile`, :func:`settle_date`), so the same question gets
the same answer through either.

**One deployment per database, found, not guessed.** The deployment (chain id, genesis hash, contract
addresses, the deploy block and its hash, the settlement contract's code hash, the role accounts) is
stored in the database when it is made and written to ``deployments/<chain id>/<contract>.json`` for
people and other tools. Every open checks it against the connected chain: another chain id, another
history (the deploy block's hash), other code at the address, or a chain that ends before the last
transaction the database recorded is :class:`ChainMismatchError`, saying which. A database holds one
deployment; a new chain needs a new database.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from backend.audit.indexer import EventIndexer
from backend.audit.statements import (
    InclusionResult,
    ReconciliationReport,
    Statement,
    owner_statement,
    reconcile,
    verify_inclusion,
)
from backend.chain.client import Chain, account_from_keystore
from backend.chain.contracts import SettlementClient
from backend.chain.deploy import Actors, DeploymentRecord, deploy
from backend.chain.embedded import ChainFileError
from backend.chain.node import open_chain
from backend.db.journal import DbJournal
from backend.db.models import Deployment, Owner, Period, Submission, SubmissionStatus
from backend.db.session import session_factory

logger = logging.getLogger(__name__)

ROLE_NAMES = ("admin", "settler", "auditor", "meter")


class PlatformError(Exception):
    """A named refusal of the service layer (the CLI prints it in one line, the API answers 4xx/503)."""


class ChainMismatchError(PlatformError):
    """The database was settled on another chain, or on this chain's lost or rewritten history."""


class ChainLocationError(PlatformError):
    """Two local chains could be the database's: the one recorded with its deployment and another in the
    data directory (a copied working directory)."""


class NoDeploymentError(PlatformError):
    """The database holds no deployment yet (nothing was settled with it)."""


class UnregisteredOwnerError(PlatformError):
    """Owners without an address in the owner registry, on a chain where addresses cannot be made up."""


class MissingKeysError(PlatformError):
    """A role's signing key is not configured for a chain that is not local."""


class MeterKeyOutsideMeterError(PlatformError):
    """The meter's key asked for outside the metering service, on a chain that is not local."""


class WrongSignerError(PlatformError):
    """A configured key is not the account the deployment gave that role."""


class UnknownOwnerError(PlatformError):
    """An owner id the database does not know."""


class EntryNotFoundError(PlatformError):
    """A period or entry the database does not hold."""


@dataclass(frozen=True)
class StoredDeployment:
    """The deployment as stored: the contract record plus what identifies its chain and history."""

    record: DeploymentRecord
    genesis_hash: str
    block_hash: str
    code_hash: str

    def to_json(self) -> str:
        return json.dumps({**asdict(self.record), **self._identity()}, indent=2, sort_keys=True) + "\n"

    def _identity(self) -> dict[str, str]:
        return {"genesis_hash": self.genesis_hash, "block_hash": self.block_hash, "code_hash": self.code_hash}


def _hash_hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


def identify(chain: Chain, record: DeploymentRecord) -> StoredDeployment:
    """Read from the chain what identifies ``record``'s deployment there."""
    w3 = chain.w3
    return StoredDeployment(
        record=record,
        genesis_hash=_hash_hex(w3.eth.get_block(0)["hash"]),
        block_hash=_hash_hex(w3.eth.get_block(record.block_number)["hash"]),
        code_hash=_hash_hex(keccak(bytes(w3.eth.get_code(record.settlement)))),  # type: ignore[arg-type]
    )


def _record_of(row: Deployment) -> DeploymentRecord:
    if row.record:
        fields = set(DeploymentRecord.__dataclass_fields__)
        return DeploymentRecord(**{k: v for k, v in row.record.items() if k in fields})
    # a deployment stored before records were kept (migration 0005): what the row itself holds
    return DeploymentRecord(
        chain_id=row.chain_id,
        token=row.token_address,
        settlement=row.settlement_address,
        block_number=row.block_number,
        liveness_s=0,
        admin="",
        settler="",
        auditor="",
        meter="",
        artifact_hashes=dict(row.artifact_hashes),
    )


#: Chain ids of the local chains, to say which ``--chain`` a database needs.
LOCAL_CHAIN_IDS = {131277322940537: "eth-tester", 31337: "anvil"}


def is_local(chain: Chain) -> bool:
    """A chain of dev keys and play money: the embedded chain, a managed anvil, or a node reached by URL
    whose chain id is a local chain's."""
    return chain.kind in ("eth-tester", "anvil") or int(chain.w3.eth.chain_id) in LOCAL_CHAIN_IDS


def _chain_hint(chain_id: int) -> str:
    name = LOCAL_CHAIN_IDS.get(chain_id)
    return f" (--chain {name})" if name else ""


def check_chain(
    chain: Chain, row: Deployment, last_block: int | None, last_mined: tuple[str, int] | None = None
) -> list[str]:
    """What does not match between the stored deployment ``row`` and ``chain`` (empty: all matches).
    ``last_mined``: the database's last mined transaction (hash, block): it must be on chain in that
    block, or the chain forked (or was restored) past it."""
    w3 = chain.w3
    problems: list[str] = []
    chain_id = w3.eth.chain_id
    if chain_id != row.chain_id:
        return [
            f"the database settles on chain id {row.chain_id}{_chain_hint(row.chain_id)}; "
            f"the connected chain has chain id {chain_id}"
        ]
    if row.genesis_hash is not None:
        genesis = _hash_hex(w3.eth.get_block(0)["hash"])
        if genesis != row.genesis_hash:
            return [
                f"the connected chain (genesis {genesis[:10]}…) is another chain than the database's "
                f"(genesis {row.genesis_hash[:10]}…): same chain id, different history"
            ]
    head = w3.eth.block_number
    if head < row.block_number:
        return [
            f"the chain ends at block {head}, before the deployment's block {row.block_number}: "
            "it was reset or replaced"
        ]
    if row.block_hash is not None:
        block_hash = _hash_hex(w3.eth.get_block(row.block_number)["hash"])
        if block_hash != row.block_hash:
            problems.append(
                f"block {row.block_number} is {block_hash[:10]}… on chain but {row.block_hash[:10]}… "
                "in the deployment record: the chain's history was rewritten"
            )
    code = bytes(w3.eth.get_code(row.settlement_address))  # type: ignore[arg-type]
    if not code:
        problems.append(f"no contract at {row.settlement_address} on this chain")
    elif row.code_hash is not None and _hash_hex(keccak(code)) != row.code_hash:
        problems.append(f"the code at {row.settlement_address} is not the deployed settlement contract")
    if last_block is not None and head < last_block:
        problems.append(
            f"the chain ends at block {head}, before block {last_block} where the database's last "
            "transaction was mined: the chain lost blocks"
        )
    elif last_mined is not None and is_local(chain):
        # a local chain (the embedded file, a managed anvil) never reorganises: the database's last
        # transaction missing means a fork or a file restored from a copy and grown since. A public
        # node may have moved it by a shallow reorg or pruned its index: there only fewer blocks count.
        tx_hash, block = last_mined
        if chain.receipt(tx_hash) is None:
            problems.append(
                f"the database's last transaction {tx_hash[:12]}… (mined in block {block}) is not on this "
                "chain: the chain's history differs from the database's (a fork, or a chain restored "
                "from a copy)"
            )
    return problems


def _holds_chain(spec: str, data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a chain of ``spec`` (the embedded chain's file, a managed anvil's state)."""
    from backend.chain.client import anvil_state_files
    from backend.chain.node import ANVIL_DIR, EMBEDDED_FILE

    if spec == "eth-tester":
        return (data_dir / EMBEDDED_FILE).exists()
    return bool(anvil_state_files(data_dir / ANVIL_DIR / "state.json"))


def recorded_chain(
    sessions: sessionmaker[Session], data_dir: Path, *, explicit: bool = False
) -> tuple[str, Path]:
    """The chain spec and data directory the database's deployment was made on (``eth-tester`` in
    ``data_dir`` when the database has no deployment, or one recorded before chains were).

    Where a local chain is found: the directory recorded with the deployment, unless ``data_dir`` holds a
    chain too and is given explicitly (``V2G_DATA_DIR``; its history is checked as always) or the
    recorded one holds none any more (a moved working directory). A copied one, where both hold a chain
    and nothing says which, is :class:`ChainLocationError`: it never writes the original's chain without
    a word."""
    with sessions() as session:
        row = session.scalars(select(Deployment).order_by(Deployment.id.desc())).first()
    where = (row.record or {}).get("chain") if row is not None else None
    if not where:
        return "eth-tester", data_dir
    spec = str(where["spec"])
    if spec == "eth-tester:memory":
        raise ChainMismatchError(
            "the database was settled on a throwaway chain that ended with its command: nothing on chain "
            "to check it against"
        )
    recorded = Path(where["data_dir"]) if where.get("data_dir") else None
    if recorded is None or spec not in ("eth-tester", "anvil"):
        return spec, recorded or data_dir
    if recorded.resolve() == data_dir.resolve() or not _holds_chain(spec, data_dir):
        return spec, recorded
    if explicit or not _holds_chain(spec, recorded):
        logger.info(
            "the chain recorded at %s is gone; using the one in %s (a moved directory)", recorded, data_dir
        )
        return spec, data_dir
    raise ChainLocationError(
        f"this database settles on the {spec} chain in {recorded}, and {data_dir.resolve()} holds another "
        "copy of a chain (a copied working directory?): set V2G_DATA_DIR to the one to settle on (its "
        "history is checked against the database)"
    )


def _env_key(role: str) -> LocalAccount | None:
    """``V2G_<ROLE>_KEY`` (a private key) or ``V2G_<ROLE>_KEYSTORE`` (a keystore file; its password in
    ``V2G_KEYSTORE_PASSWORD``)."""
    key = os.environ.get(f"V2G_{role.upper()}_KEY")
    if key:
        try:
            account: LocalAccount = Account.from_key(key)
        except ValueError as exc:
            raise MissingKeysError(f"V2G_{role.upper()}_KEY is not a private key ({exc})") from None
        return account
    keystore = os.environ.get(f"V2G_{role.upper()}_KEYSTORE")
    if keystore:
        return account_from_keystore(Path(keystore))
    return None


def load_actors(chain: Chain, needed: tuple[str, ...] = ROLE_NAMES) -> Actors:
    """The role keys: ``V2G_<ROLE>_KEY`` / ``V2G_<ROLE>_KEYSTORE`` from the environment, else the chain's
    accounts by position (admin, settler, auditor, meter: a local chain's dev keys, or
    ``V2G_PRIVATE_KEYS``). Roles in ``needed`` must have a key; the others fall back to a placeholder
    that cannot sign for this deployment."""
    # the meter's key is read only where it is asked for (the metering service, a local simulation):
    # a settler or an API whose environment happens to hold it never loads it
    wanted = [role for role in ROLE_NAMES if role != "meter" or "meter" in needed]
    keys: dict[str, LocalAccount | None] = dict.fromkeys(ROLE_NAMES)
    for position, role in enumerate(ROLE_NAMES):
        if role in wanted:
            keys[role] = _env_key(role) or (
                chain.accounts[position] if position < len(chain.accounts) else None
            )
    missing = [r for r in needed if keys[r] is None]
    if missing:
        raise MissingKeysError(
            "no signing key for "
            + ", ".join(missing)
            + " on this chain: set "
            + ", ".join(f"V2G_{r.upper()}_KEY" for r in missing)
            + " (or V2G_<ROLE>_KEYSTORE, or V2G_PRIVATE_KEYS in the order admin,settler,auditor,meter)"
        )
    unusable = Account.from_key(keccak(text="v2g-settle: no key for this role"))
    return Actors(**{r: keys[r] or unusable for r in ROLE_NAMES})


class MeterAddressOnly:
    """The meter's address without its key: all a deployment needs (the contract checks signatures
    against it). Anything that tries to sign with it is refused by name."""

    def __init__(self, address: str) -> None:
        self.address = Web3.to_checksum_address(address)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise MeterKeyOutsideMeterError(
            f"the meter key is the metering service's alone ({name} is not available outside it)"
        )


def meter_address_only(chain: Chain) -> LocalAccount:
    """The meter's address for a deployment: ``V2G_METER_ADDRESS``, else the address of the chain's fourth
    account (a local chain's dev meter, or the fourth of ``V2G_PRIVATE_KEYS``); ``V2G_METER_KEY`` is never
    read."""
    address = os.environ.get("V2G_METER_ADDRESS", "").strip()
    if not address:
        if len(chain.accounts) < 4:
            raise MissingKeysError(
                "no meter address on this chain: set V2G_METER_ADDRESS (the metering service's address; "
                "its key stays in the metering service)"
            )
        address = chain.accounts[3].address
    if not Web3.is_address(address):
        raise MissingKeysError(f"V2G_METER_ADDRESS {address!r} is not an address")
    return cast(LocalAccount, MeterAddressOnly(address))


@dataclass
class Platform:
    """One database and the chain it settles on, checked against each other."""

    database_url: str
    sessions: sessionmaker[Session]
    chain: Chain
    deployments_dir: Path = Path("deployments")
    stored: StoredDeployment | None = None
    #: Why the chain does not match the database (``None``: it matches, or nothing is deployed yet).
    mismatch: str | None = None
    _owns_chain: bool = field(default=False, repr=False)
    #: Where the chain is (``{"spec": ..., "data_dir": ...}``), stored with a new deployment so that
    #: later commands find the database's chain without being told.
    located: dict[str, str] = field(default_factory=dict)

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        database_url: str,
        chain: str | Chain | None,
        *,
        data_dir: Path = Path(".v2g"),
        deployments_dir: Path = Path("deployments"),
        write: bool = True,
        strict: bool = True,
        data_dir_explicit: bool = False,
    ) -> Platform:
        """Open the database and the chain (a spec such as ``eth-tester``, a connected chain that the
        caller keeps, or ``None``: the chain the database's deployment was made on, found from its
        record; ``eth-tester`` when it has none), find the deployment and check it against the chain.

        ``strict``: a mismatch raises :class:`ChainMismatchError`; otherwise it is kept in
        :attr:`mismatch` (the API starts and reports itself degraded). :meth:`close` closes a chain
        opened from a spec.
        """
        sessions = session_factory(database_url)
        if chain is None:
            chain, data_dir = recorded_chain(sessions, data_dir, explicit=data_dir_explicit)
        try:
            connected = open_chain(chain, data_dir, write=write) if isinstance(chain, str) else chain
        except ChainFileError as exc:  # read-only, and no embedded chain in this data directory
            with sessions() as session:
                row = session.scalars(select(Deployment).order_by(Deployment.id.desc())).first()
            if row is None:
                raise NoDeploymentError(f"{database_url}: nothing settled yet ({exc})") from None
            raise ChainMismatchError(
                f"the database settles on chain id {row.chain_id}{_chain_hint(row.chain_id)}, but {exc}"
            ) from None
        platform = cls(database_url, sessions, connected, deployments_dir, _owns_chain=isinstance(chain, str))
        if isinstance(chain, str):
            platform.located = {"spec": chain}
            if chain in ("eth-tester", "anvil"):
                platform.located["data_dir"] = str(data_dir.resolve())
        try:
            if connected.journal is None:  # what this process sends is journaled in this database
                connected.journal = DbJournal(sessions, int(connected.w3.eth.chain_id))
            platform.check(strict=strict)
        except BaseException:
            platform.close()
            raise
        return platform

    @classmethod
    @contextmanager
    def open(cls, database_url: str, chain: str | Chain | None, **options: Any) -> Iterator[Platform]:
        """:meth:`connect` as a context: the chain is closed (its lock released, a node started for it
        stopped) however the block ends."""
        platform = cls.connect(database_url, chain, **options)
        try:
            yield platform
        finally:
            platform.close()

    def close(self) -> None:
        if self._owns_chain:
            self.chain.close()
            self._owns_chain = False

    def check(self, *, strict: bool = True) -> str | None:
        """Find the deployment and check it against the chain; returns (and stores) the mismatch."""
        self.chain.w3.eth.chain_id  # noqa: B018 - the chain answers, or this raises (named by the doors)
        with self.sessions() as session:
            rows = list(session.scalars(select(Deployment).order_by(Deployment.id)))
            last_block = session.scalar(select(func.max(Submission.block_number)))
            last = session.execute(
                select(Submission.tx_hash, Submission.block_number)
                .where(Submission.block_number.is_not(None), Submission.status == SubmissionStatus.MINED)
                .order_by(Submission.block_number.desc(), Submission.id.desc())
                .limit(1)
            ).first()
            last_mined = (str(last[0]), int(last[1] or 0)) if last is not None else None
        if not rows:
            self.stored, self.mismatch = None, None
            return None
        row = rows[-1]
        if len(rows) > 1:
            logger.warning(
                "the database holds %d deployments; using the latest (%s)", len(rows), row.settlement_address
            )
        problems = check_chain(self.chain, row, last_block, last_mined)
        record = _record_of(row)
        self.stored = StoredDeployment(
            record, row.genesis_hash or "", row.block_hash or "", row.code_hash or ""
        )
        self.mismatch = "; ".join(problems) if problems else None
        if problems:
            if strict:
                raise ChainMismatchError("; ".join(problems))
        elif row.genesis_hash is None:  # a deployment stored before identities were kept: complete it
            self._store_identity(identify(self.chain, record))
        return self.mismatch

    # --- the deployment --------------------------------------------------------------------------

    @property
    def record(self) -> DeploymentRecord:
        if self.mismatch is not None:
            raise ChainMismatchError(self.mismatch)
        if self.stored is None:
            raise NoDeploymentError(f"{self.database_url}: no deployment in this database yet")
        return self.stored.record

    def ensure_deployment(
        self, *, liveness_s: int = 3600, token_address: str | None = None
    ) -> DeploymentRecord:
        """The database's deployment; made (contracts deployed, roles granted) when there is none, with
        the test token unless ``token_address`` names the ERC-20 to settle in."""
        if self.stored is not None:
            return self.record
        # the meter's address is all a deployment needs: its key stays in the metering service (on a
        # local chain too, where it is the fourth dev key)
        actors = replace(
            load_actors(self.chain, ("admin", "settler", "auditor")), meter=meter_address_only(self.chain)
        )
        self.chain.accounts[:4] = [actors.admin, actors.settler, actors.auditor, actors.meter]
        record = deploy(self.chain, liveness_s=liveness_s, token_address=token_address)
        stored = identify(self.chain, record)
        self._store_identity(stored, new=True)
        self.stored = stored
        return record

    def _store_identity(self, stored: StoredDeployment, *, new: bool = False) -> None:
        record = stored.record
        with self.sessions.begin() as session:
            row = session.scalar(
                select(Deployment).where(
                    Deployment.chain_id == record.chain_id, Deployment.settlement_address == record.settlement
                )
            )
            if row is None:
                row = Deployment(
                    chain_id=record.chain_id,
                    token_address=record.token,
                    settlement_address=record.settlement,
                    block_number=record.block_number,
                    artifact_hashes=record.artifact_hashes,
                )
                session.add(row)
            row.record = {**asdict(record), "chain": self.located or (row.record or {}).get("chain")}
            row.genesis_hash = stored.genesis_hash
            row.block_hash = stored.block_hash
            row.code_hash = stored.code_hash
        path = self.deployments_dir / str(record.chain_id) / f"{record.settlement}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(stored.to_json())
            tmp.replace(path)
        except OSError as exc:  # the database holds the record; the file is a copy for people
            logger.warning("deployment record not written to %s: %s", path, exc)
        if new:
            logger.info(
                "deployment of chain %d recorded in %s and %s", record.chain_id, self.database_url, path
            )

    # --- keys ------------------------------------------------------------------------------------

    def actors(self, needed: tuple[str, ...] = ("admin", "settler")) -> Actors:
        """Signing keys for the roles ``needed``, checked against the deployment's role accounts. Never the
        meter's: it is the metering service's alone, on every chain (:class:`MeterKeyOutsideMeterError`)."""
        if "meter" in needed:
            raise MeterKeyOutsideMeterError(
                "the meter key is loaded by the metering service alone (v2g meter serve, or the one a "
                "settlement starts on a local chain): a settler, the API and the CSMS never hold it"
            )
        actors = load_actors(self.chain, needed)
        if self.stored is not None:
            record = self.stored.record
            for role in needed:
                expected = getattr(record, role)
                have = getattr(actors, role).address
                if expected and expected != have:
                    raise WrongSignerError(
                        f"the {role} key configured ({have}) is not the deployment's {role} ({expected})"
                    )
        return actors

    # --- owners ----------------------------------------------------------------------------------

    def owner_addresses(
        self, owner_ids: list[str], *, make_local: Callable[[list[str]], Mapping[str, str]]
    ) -> dict[str, str]:
        """Addresses of ``owner_ids`` from the owner registry. On a local chain the missing ones get
        deterministic demo accounts (``make_local``) and are registered; elsewhere a missing owner is
        :class:`UnregisteredOwnerError`."""
        with self.sessions() as session:
            known = {o.id: o.address for o in session.scalars(select(Owner).where(Owner.id.in_(owner_ids)))}
        missing = [o for o in owner_ids if o not in known]
        if missing and self.chain.kind in ("eth-tester", "anvil"):
            made = dict(make_local(missing))
            with self.sessions.begin() as session:
                session.add_all(Owner(id=o, address=a) for o, a in made.items())
            known.update(made)
            missing = []
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise UnregisteredOwnerError(
                f"{len(missing)} owner(s) have no address in the owner registry ({shown}): register them "
                "first (v2g owners import FILE, or POST /owners)"
            )
        return {o: known[o] for o in owner_ids}

    # --- the audit, one implementation for every door -----------------------------------------

    def settlement(self) -> SettlementClient:
        client: SettlementClient = SettlementClient.at(self.chain, self.record.settlement)
        return client

    def sync_events(self) -> int:
        record = self.record
        return EventIndexer(self.sessions, self.chain, record.settlement, record.block_number).sync()

    def reconcile(self) -> ReconciliationReport:
        """Index new events, then compare the database with the chain, every mismatch named."""
        self.sync_events()
        settlement = self.settlement()
        aggregator = str(self.chain.call(settlement.contract.functions.aggregator()))
        with self.sessions() as session:
            return reconcile(session, settlement, aggregator)

    def statement(self, owner_id: str) -> Statement:
        """An owner's statement from the database (payments as indexed from the chain)."""
        record = self.record
        with self.sessions() as session:
            if session.get(Owner, owner_id) is None:
                raise UnknownOwnerError(f"no owner {owner_id} in {self.database_url}")
            return owner_statement(session, record.settlement, owner_id)

    def proof(self, period_id: int, entry_id: int, *, on_chain: bool = True) -> InclusionResult:
        """An entry's inclusion proof checked against the root the chain recorded (and, ``on_chain``,
        the leaf the contract computes)."""
        record = self.record
        root = self.proposed_root(period_id) if on_chain else None
        with self.sessions() as session:
            try:
                if on_chain and root is None:
                    raise KeyError(f"period {period_id} is not proposed on this chain")
                return verify_inclusion(
                    session,
                    period_id,
                    entry_id,
                    chain_id=record.chain_id,
                    contract=record.settlement,
                    settlement=self.settlement() if on_chain else None,
                    root=root,
                )
            except KeyError as exc:
                raise EntryNotFoundError(f"period {period_id} entry {entry_id}: {exc.args[0]}") from None

    def proposed_root(self, period_id: int) -> bytes | None:
        """The root of the period's last ``PeriodProposed`` log, read from the chain in the block where the
        database says its proposal was mined (one ``eth_getLogs``); ``None`` if there is none."""
        with self.sessions() as session:
            block = session.scalar(
                select(Submission.block_number)
                .where(
                    Submission.period_id == period_id,
                    Submission.kind == "propose",
                    Submission.status == SubmissionStatus.MINED,
                )
                .order_by(Submission.id.desc())
                .limit(1)
            )
        # the aggregator is the only proposer and its job stores every proposal it sends: without a
        # mined one the period is not proposed (no scan of the whole chain on an owner's request)
        return self._proposed_in(period_id, block, block) if block is not None else None

    def _proposed_in(self, period_id: int, first: int, last: int) -> bytes | None:
        from eth_utils.crypto import keccak

        contract = self.settlement().contract
        topic = keccak(text="PeriodProposed(uint64,bytes32,uint96,uint96,uint32,uint64)")
        wanted = period_id.to_bytes(32, "big")
        root = None
        for log in self.chain.logs(self.record.settlement, first, last):
            topics = [bytes(t) for t in log["topics"]]
            if len(topics) > 1 and topics[0] == topic and topics[1] == wanted:
                root = bytes(contract.events.PeriodProposed().process_log(log)["args"]["root"])
        return root

    def period_on_chain(self, period_id: int, step: int = 500) -> str:
        """The root the chain's last ``PeriodProposed`` event holds for a period, read from the chain's logs
        (not the database's copy of them); ``""`` if the period was never proposed."""
        record = self.record
        root = None
        latest = self.chain.w3.eth.block_number
        for start in range(record.block_number, latest + 1, step):
            root = self._proposed_in(period_id, start, min(start + step - 1, latest)) or root
        return "0x" + root.hex() if root is not None else ""

    def period(self, period_id: int) -> Period | None:
        with self.sessions() as session:
            return session.get(Period, period_id)
