from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from backend.api.deps import SessionDep, StateDep
from backend.api.schemas import HealthPublic

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", response_model=HealthPublic)
def health(state: StateDep, session: SessionDep) -> HealthPublic:
    """The truth about the platform: "ok" only when the database answers, the chain answers, and the
    chain is the one the database settles on (same chain id and history, the deployed code, every block
    the database recorded). Otherwise "degraded", with each problem named in ``problems``."""
    session.execute(text("SELECT 1"))
    problems: list[str] = []
    block: int | None = None
    chain_id: int | None = None
    platform = state.platform
    with state.chain_lock:
        try:
            block = state.chain.w3.eth.block_number
            chain_id = state.chain.w3.eth.chain_id
            mismatch = platform.check(strict=False)
        except Exception as exc:  # the chain does not answer: that is the answer
            mismatch = None
            problems.append(f"ChainUnreachableError: {type(exc).__name__}: {str(exc)[:200]}")
    if mismatch is not None:
        problems.append(f"ChainMismatchError: {mismatch}")
    elif platform.stored is None and not problems:
        problems.append("NoDeploymentError: the database holds no deployment")
    stored = platform.stored
    return HealthPublic(
        status="degraded" if problems else "ok",
        chain=state.chain.kind,
        chain_id=chain_id,
        block=block,
        settlement=stored.record.settlement if stored is not None else None,
        database="ok",
        problems=problems,
    )
