from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import (
    AnyRoleDep,
    AuditReaderDep,
    PathId,
    PathName,
    SessionDep,
    StateDep,
    check_owner,
    forbidden,
    not_found,
)
from backend.api.schemas import (
    MismatchPublic,
    ProofPublic,
    ReconciliationPublic,
    StatementLinePublic,
    StatementPublic,
)
from backend.db.models import Owner, PeriodEntry
from backend.platform import EntryNotFoundError

router = APIRouter(prefix="/audit", tags=["audit"])


def _money(x: int | None) -> str | None:
    return None if x is None else str(x)


@router.get("/statements/{owner_id}", response_model=StatementPublic)
def statement(
    owner_id: PathName, state: StateDep, session: SessionDep, principal: AnyRoleDep
) -> StatementPublic:
    """An owner's statement: per period, energy, fees, amount, payment, proof. An owner key gets 403 for
    any other owner id, stored or not (ownership is checked before existence)."""
    check_owner(principal, owner_id, "statement")
    if session.get(Owner, owner_id) is None:
        raise not_found(f"owner {owner_id}")
    s = state.platform.statement(owner_id)
    return StatementPublic(
        owner_id=owner_id,
        address=s.address,
        total_amount=str(s.total_amount),
        lines=[
            StatementLinePublic(
                period_id=x.period_id,
                entry_id=x.entry_id,
                charged_wh=x.charged_wh,
                discharged_wh=x.discharged_wh,
                p2p_wh=x.p2p_wh,
                fees=str(x.fees),
                amount=str(x.amount),
                paid=_money(x.paid),
                debt_added=_money(x.debt_added),
                claim_tx=x.claim_tx,
                root=x.root,
                proof=list(x.proof),
            )
            for x in s.lines
        ],
    )


@router.get("/reconciliation", response_model=ReconciliationPublic)
def reconciliation(state: StateDep, session: SessionDep, _: AuditReaderDep) -> ReconciliationPublic:
    """Database vs chain; every mismatch named."""
    with state.chain_lock:
        report = state.platform.reconcile()
    return ReconciliationPublic(
        ok=report.ok,
        periods=report.periods,
        entries=report.entries,
        accounts=report.accounts,
        mismatches=[
            MismatchPublic(kind=m.kind, period_id=m.period_id, detail=m.detail) for m in report.mismatches
        ],
    )


@router.get("/proofs/{period_id}/{entry_id}", response_model=ProofPublic)
def proof(
    period_id: PathId, entry_id: PathId, state: StateDep, session: SessionDep, principal: AnyRoleDep
) -> ProofPublic:
    """Verify an entry's inclusion against the root the chain recorded."""
    entry = session.get(PeriodEntry, (period_id, entry_id))
    if entry is None:
        if principal.owner_id is not None:  # unknown and not-yours look the same to an owner key
            raise forbidden("entries")
        raise not_found(f"entry {entry_id} in period {period_id}")
    check_owner(principal, entry.owner_id, "entries")
    try:
        with state.chain_lock:
            result = state.platform.proof(period_id, entry_id)
    except EntryNotFoundError as exc:
        raise not_found(str(exc)) from exc
    return ProofPublic(
        valid=result.valid,
        leaf=result.leaf,
        root=result.root,
        proof=list(result.proof),
        contract_leaf_matches=result.contract_leaf_matches,
    )
