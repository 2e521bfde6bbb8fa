"""Dependencies: the app state, a database session, the caller's principal and role checks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.errors import ApiError
from backend.api.jobs import JobRunner
from backend.api.schemas import ID_PATTERN, MAX_ID
from backend.api.security import Role, hash_key
from backend.chain.client import Chain
from backend.chain.deploy import Actors, DeploymentRecord
from backend.config import Settings
from backend.db.models import ApiKey
from backend.metrics import Live
from backend.platform import ChainMismatchError, Platform

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    """The app's platform (database + chain, checked against each other), its jobs and its settings."""

    settings: Settings
    platform: Platform
    runner: JobRunner
    #: How often (seconds) a request that shows chain-derived state checks the chain again: a chain that
    #: lost blocks, forked or was replaced while the server runs is found within this time.
    chain_check_every_s: float = 2.0
    #: The live CSMS and operations loop where `v2g operate` serves this API (for ``/metrics``).
    live: Callable[[], Live | None] = field(default=lambda: None, repr=False)
    _checked_at: float = field(default=float("-inf"), repr=False)

    def consistent(self) -> None:
        """:class:`backend.platform.ChainMismatchError` (503) when the chain no longer matches the
        database (checked at most every :attr:`chain_check_every_s`)."""
        now = time.monotonic()
        # never wait for the chain behind a running settlement: while a job holds it, the last check stands
        if now - self._checked_at >= self.chain_check_every_s and self.chain_lock.acquire(blocking=False):
            try:
                self.platform.check(strict=False)
            except Exception as exc:  # the chain does not answer now: /health names it; the last check stands
                logger.warning("chain check failed: %s: %s", type(exc).__name__, exc)
            finally:
                self._checked_at = now
                self.chain_lock.release()
        if self.platform.mismatch is not None:
            raise ChainMismatchError(self.platform.mismatch)

    @property
    def chain_lock(self) -> threading.RLock:
        """web3 providers and the embedded chain are not thread-safe: one user at a time, shared with
        everything else in this process that uses the chain (the CSMS's credit checks)."""
        return self.platform.chain.lock

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.platform.sessions

    @property
    def chain(self) -> Chain:
        return self.platform.chain

    @property
    def record(self) -> DeploymentRecord:
        """The database's deployment; :class:`ChainMismatchError` (503) when the chain does not match."""
        return self.platform.record

    @property
    def actors(self) -> Actors:
        """The settler's key (and the admin's where the chain gives it); never the meter's."""
        return self.platform.actors(("settler",))

    def system_addresses(self) -> set[str]:
        """The deployment's own accounts and contracts: never an owner's address."""
        r, a = self.record, self.actors
        accounts = (a.admin, a.settler, a.auditor)
        return {r.admin, r.settler, r.auditor, r.meter, r.token, r.settlement, *(x.address for x in accounts)}


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.v2g
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (hashed at rest)")


@dataclass(frozen=True)
class Principal:
    role: Role
    owner_id: str | None

    def may_see_owner(self, owner_id: str) -> bool:
        return self.role is not Role.OWNER or self.owner_id == owner_id


def get_principal(session: SessionDep, key: Annotated[str | None, Security(api_key_header)]) -> Principal:
    challenge = {"WWW-Authenticate": "ApiKey"}
    if not key:
        raise ApiError(401, "MissingApiKeyError", "missing X-API-Key header", challenge)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None:
        raise ApiError(401, "UnknownApiKeyError", "unknown API key", challenge)
    return Principal(Role(row.role), row.owner_id)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets only ``roles`` through (403 otherwise)."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise ApiError(403, "ForbiddenError", f"role {principal.role} may not do this")
        return principal

    return check


OperatorDep = Annotated[Principal, Depends(require(Role.OPERATOR))]
AuditReaderDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.AUDITOR))]
AnyRoleDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.AUDITOR, Role.OWNER))]
OwnerOrOperatorDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.OWNER))]


def check_owner(principal: Principal, owner_id: str, what: str) -> None:
    """An owner key asking for another owner's data is refused before anything is looked up, so the
    answer (403) is the same whether that owner exists or not: owner ids cannot be enumerated."""
    if not principal.may_see_owner(owner_id):
        raise forbidden(what)


def forbidden(what: str) -> ApiError:
    return ApiError(403, "ForbiddenError", f"owners see only their own {what}")


def not_found(what: str) -> ApiError:
    return ApiError(404, "NotFoundError", f"no {what}")


#: Integer ids in paths: at most 2^53 - 1 (exact in every JSON parser, within a 64-bit column).
PathId = Annotated[int, Path(ge=0, le=MAX_ID)]
#: String ids in paths: the same rule as ids in bodies.
PathName = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
#: Paging: at most 10,000 rows a page; an offset a database integer can hold.
Limit = Annotated[int, Query(ge=1, le=10_000, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]


def chain_consistent(state: StateDep) -> None:
    """A route that shows chain-derived state (periods, claims, escrow, statements, proofs, the audit):
    503 ``ChainMismatchError`` when the chain no longer matches the database, never a stale answer."""
    state.consistent()
