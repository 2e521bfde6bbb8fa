from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import AnyRoleDep, OperatorDep, PathName, SessionDep, StateDep, check_owner, not_found
from backend.api.openapi import documented
from backend.api.schemas import BalancePublic, DepositCreate, FloatCreate
from backend.chain.contracts import SettlementClient, TokenClient
from backend.db.models import Owner

router = APIRouter(prefix="/escrow", tags=["escrow"])


def _fund(state: StateDep, account: str, amount: int) -> str:
    """Pay ``amount`` into ``account``'s ledger balance from the admin (a fleet manager's top-up).

    On local chains the test token is minted first; on a real chain the admin must hold the tokens."""
    settlement = SettlementClient.at(state.chain, state.record.settlement)
    token = TokenClient.at(state.chain, state.record.token)
    admin = state.actors.admin
    if state.chain.kind in ("eth-tester", "anvil"):
        token.mint(admin, admin.address, amount)
    token.approve(admin, settlement.address, amount)
    receipt = settlement.deposit_for(admin, account, amount)
    return "0x" + bytes(receipt["transactionHash"]).hex()


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
