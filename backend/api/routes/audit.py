from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

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
from backend.api.errors import ApiError
from backend.api.openapi import documented
from backend.api.schemas import (
    EnergyBalancePublic,
    MismatchPublic,
    OverpaymentPublic,
    ProofPublic,
    ReconciliationPublic,
    RefusalPublic,
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


@router.get(
    "/energy",
    response_model=EnergyBalancePublic,
    responses=documented({409: ["FrameChainError"], 422: ["InvalidDateError"]}),
)
def energy(
    session: SessionDep,
    _: AuditReaderDep,
    date: Annotated[str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="The UTC day, YYYY-MM-DD.")],
    clock_tolerance_s: Annotated[
        float, Query(ge=1.0, le=30 * 86400.0, description="The metering service's clock tolerance.")
    ] = 900.0,
) -> EnergyBalancePublic:
    """Where every Wh the meters measured on a day went (`v2g audit energy`): a raw-frame chain that does
    not verify is a 409 ``FrameChainError``."""
    from backend.audit.energy import energy_balance
    from backend.metering.period import NotADayError, period_window
    from backend.metering.replay import MeterPolicy

    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise ApiError(422, "InvalidDateError", f"date {date}: not a day of the calendar") from None
    try:
        period_window(int(f"{day:%Y%m%d}"))
    except NotADayError as exc:  # before 1970, or 9999-12-31 (whose end no date holds)
        raise ApiError(422, "InvalidDateError", f"date {date}: {exc}") from None
    b = energy_balance(session, int(f"{day:%Y%m%d}"), MeterPolicy(clock_tolerance_s=clock_tolerance_s))
    return EnergyBalancePublic(
        day=day.isoformat(),
        metered_wh=b.metered_wh,
        settled_wh=b.settled_wh,
        adjusted_wh=b.adjusted_wh,
        refused_wh=b.refused_wh,
        pending_wh=b.pending_wh,
        unsigned_wh=b.unsigned_wh,
        refused_by_reason=b.refused_by_reason,
        refusals=[
            RefusalPublic(
                station_id=r.station_id,
                transaction_id=r.transaction_id,
                at=r.at,
                import_wh=r.import_wh,
                export_wh=r.export_wh,
                wh=r.wh,
                reason=r.reason,
                detail=r.detail,
            )
            for r in b.refusals
        ],
        overpaid=[
            OverpaymentPublic(
                session_id=o.session_id,
                interval_start=o.interval_start,
                direction=o.direction,
                paid_wh=o.paid_wh,
                metered_wh=o.metered_wh,
            )
            for o in b.overpaid
        ],
        balances=b.ok,
        equation=b.equation(),
    )
