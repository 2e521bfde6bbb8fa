"""Dependencies: the app state, a database session, the caller's principal and role checks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.jobs import JobRunner
from backend.api.security import Role, hash_key
from backend.chain.client import Chain
from backend.chain.deploy import Actors, DeploymentRecord
from backend.config import Settings
from backend.db.models import ApiKey


@dataclass
class AppState:
    settings: Settings
    sessions: sessionmaker[Session]
    chain: Chain
    record: DeploymentRecord
    actors: Actors
    runner: JobRunner
    #: web3 providers and the embedded chain are not thread-safe: one user at a time.
    chain_lock: threading.RLock = field(default_factory=threading.RLock)


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
    if not key:
        raise HTTPException(
            status_code=401, detail="missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"}
        )
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None:
        raise HTTPException(status_code=401, detail="unknown API key", headers={"WWW-Authenticate": "ApiKey"})
    return Principal(Role(row.role), row.owner_id)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets only ``roles`` through (403 otherwise)."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status_code=403, detail=f"role {principal.role} may not do this")
        return principal

    return check


OperatorDep = Annotated[Principal, Depends(require(Role.OPERATOR))]
AuditReaderDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.AUDITOR))]
AnyRoleDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.AUDITOR, Role.OWNER))]
OwnerOrOperatorDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.OWNER))]


#: Integer ids in paths: within a signed 64-bit database integer.
PathId = Annotated[int, Path(ge=0, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=10_000)]
Offset = Annotated[int, Query(ge=0, le=2**62)]


class ApiError(Exception):
    """A refusal with a name, answered as ``{"error": name, "detail": ...}`` (422s in FastAPI's shape)."""

    def __init__(self, status: int, name: str, detail: str) -> None:
        self.status, self.name, self.detail = status, name, detail
        super().__init__(f"{name}: {detail}")
