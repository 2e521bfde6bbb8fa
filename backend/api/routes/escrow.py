from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from backend.api.deps import AnyRoleDep, OperatorDep, PathName, SessionDep, StateDep, check_owner, not_found
from backend.api.openapi import documented
from backend.api.schemas import BalancePublic, CreditPublic, DepositCreate, FloatCreate
from backend.app.escrow import fund_account
from backend.chain.contracts import SettlementClient
from backend.db.models import Owner
from backend.operations.credit import credit_gate

router = APIRouter(prefix="/escrow", tags=["escrow"])


def _fund(state: StateDep, account: str, amount: int) -> str:
    return fund_account(state.platform, account, amount)


@router.post("/float", response_model=BalancePublic, status_code=201, responses=documented({409: None}))
def fund_float(body: FloatCreate, state: StateDep, _: OperatorDep) -> BalancePublic:
    """Add to the aggregator's float, from which finalisation reserves each period's credits."""
    with state.chain_lock:
        _fund(state, state.actors.settler.address, int(body.amount))
        settlement = SettlementClient.at(state.chain, state.record.settlement)
        account = state.actors.settler.address
        return BalancePublic(
            account=account,
            balance=str(settlement.balance_of(account)),
            debt=str(settlement.debt_of(account)),
        )


@router.post(
    "/deposits",
    response_model=BalancePublic,
    status_code=201,
    responses=documented({404: ["NotFoundError"], 409: None}),
)
def deposit(body: DepositCreate, state: StateDep, session: SessionDep, _: OperatorDep) -> BalancePublic:
    """Top up an owner's escrow (repays any debt first)."""
    owner = session.get(Owner, body.owner_id)
    if owner is None:
        raise not_found(f"owner {body.owner_id}")
    with state.chain_lock:
        _fund(state, owner.address, int(body.amount))
        settlement = SettlementClient.at(state.chain, state.record.settlement)
        return BalancePublic(
            account=owner.address,
            balance=str(settlement.balance_of(owner.address)),
            debt=str(settlement.debt_of(owner.address)),
        )


@router.get("/balances/{owner_id}", response_model=BalancePublic)
def balance(owner_id: PathName, state: StateDep, session: SessionDep, principal: AnyRoleDep) -> BalancePublic:
    """An owner's escrow balance and debt; an owner key gets 403 for any other owner id, stored or not."""
    check_owner(principal, owner_id, "balance")
    owner = session.get(Owner, owner_id)
    if owner is None:
        raise not_found(f"owner {owner_id}")
    with state.chain_lock:
        settlement = SettlementClient.at(state.chain, state.record.settlement)
        return BalancePublic(
            account=owner.address,
            balance=str(settlement.balance_of(owner.address)),
            debt=str(settlement.debt_of(owner.address)),
        )


@router.get("/credit/{owner_id}", response_model=CreditPublic, responses=documented({404: ["NotFoundError"]}))
def credit(owner_id: PathName, state: StateDep, session: SessionDep, principal: AnyRoleDep) -> CreditPublic:
    """What an owner may charge against: balance, the amount under withdrawal notice (and when the notice
    runs out and expires), debt, credits the aggregator owes, the exposure of its open sessions and what is
    free. An owner key gets 403 for any other owner id."""
    check_owner(principal, owner_id, "credit")
    if session.get(Owner, owner_id) is None:
        raise not_found(f"owner {owner_id}")
    standing = credit_gate(state.platform, state.settings.fee_bps).check(
        owner_id=owner_id, at=datetime.now(UTC)
    )
    escrow = standing.escrow

    def when(at: int | None) -> datetime | None:
        return None if at is None else datetime.fromtimestamp(at, UTC)

    return CreditPublic(
        owner_id=owner_id,
        account=standing.address,
        balance=str(escrow.balance),
        held_for_withdrawal=str(escrow.held),
        notice_available_at=when(escrow.notice_available_at),
        notice_expires_at=when(escrow.notice_expires_at),
        debt=str(escrow.debt),
        owed_by_aggregator=str(escrow.owed),
        open_exposure=str(standing.open_exposure),
        free=str(standing.free),
        price_per_kwh_max=None if standing.price_per_kwh is None else str(standing.price_per_kwh),
    )
