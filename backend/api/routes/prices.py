from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import OperatorDep, StateDep
from backend.api.openapi import documented
from backend.api.schemas import PricesImport, PricesImported
from backend.app.prices import store_prices

router = APIRouter(prefix="/prices", tags=["prices"])


@router.post(
    "",
    response_model=PricesImported,
    status_code=201,
    responses=documented({422: ["DuplicateTimestampError", "MalformedTimestampError"]}),
)
def import_prices(body: PricesImport, state: StateDep, _: OperatorDep) -> PricesImported:
    """Import hourly day-ahead prices (UTC start of hour, EUR/MWh). Negative prices are kept; a duplicate
    or non-hourly timestamp refuses the whole import; existing hours are replaced."""
    result = store_prices(state.sessions, [(p.utc, p.eur_mwh) for p in body.prices], "request")
    return PricesImported(imported=result.stored, first=result.first, last=result.last)
