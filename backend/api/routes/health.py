from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from backend.api.deps import SessionDep, StateDep
from backend.api.schemas import HealthPublic

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", response_model=HealthPublic)
def health(state: StateDep, session: SessionDep) -> HealthPublic:
    """Liveness: the database answers and the chain has the settlement contract."""
    session.execute(text("SELECT 1"))
    with state.chain_lock:
        block = state.chain.w3.eth.block_number
    return HealthPublic(
        status="ok",
        chain=state.chain.kind,
        chain_id=state.record.chain_id,
        block=block,
        settlement=state.record.settlement,
        database="ok",
    )
