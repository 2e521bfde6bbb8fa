"""API keys (hashed at rest) and roles."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from sqlalchemy.orm import Session

from backend.db.models import ApiKey


class Role(StrEnum):
    OPERATOR = "operator"  # everything
    OWNER = "owner"  # only their own vehicles, trades, statements and claims
    AUDITOR = "auditor"  # read-only audit


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, role: Role, *, owner_id: str | None = None, label: str = "") -> str:
    """Store a new key's hash and return the key (shown once)."""
    if (role is Role.OWNER) != (owner_id is not None):
        raise ValueError("owner keys name their owner; other keys name none")
    key = "v2g_" + secrets.token_urlsafe(32)
    session.add(ApiKey(key_hash=hash_key(key), role=role.value, owner_id=owner_id, label=label))
    session.flush()
    return key
