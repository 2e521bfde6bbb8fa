from __future__ import annotations

from datetime import UTC

from fastapi import APIRouter
from sqlalchemy import select

from backend.api.deps import OperatorDep, SessionDep
from backend.api.openapi import documented
from backend.api.schemas import PricesImport, PricesImported
from backend.db.models import PricePoint
from scheduler.errors import DuplicateTimestampError, MalformedTimestampError

router = APIRouter(prefix="/prices", tags=["prices"])


@router.post(
    "",
    response_model=PricesImported,
    status_code=201,
    responses=documented({422: ["DuplicateTimestampError", "MalformedTimestampError"]}),
)
def import_prices(body: PricesImport, session: SessionDep, _: OperatorDep) -> PricesImported:
    """Import hourly day-ahead prices (UTC start of hour, EUR/MWh). Negative prices are kept; a duplicate
    or non-hourly timestamp refuses the whole import; existing hours are replaced."""
    seen: set[object] = set()
    rows = []
    for i, point in enumerate(body.prices):
        utc = point.utc.astimezone(UTC)
        if utc.minute or utc.second or utc.microsecond:
            raise MalformedTimestampError("request", i + 1, f"{utc.isoformat()} is not the start of an hour")
        if utc in seen:
            raise DuplicateTimestampError("request", i + 1, f"hour {utc.isoformat()} appears twice")
        seen.add(utc)
        rows.append((utc, point.eur_mwh))
    existing = {
        p.utc: p for p in session.scalars(select(PricePoint).where(PricePoint.utc.in_([u for u, _ in rows])))
    }
    for utc, price in rows:
        if utc in existing:
            existing[utc].eur_mwh = price
        else:
            session.add(PricePoint(utc=utc, eur_mwh=price))
    session.commit()
    return PricesImported(imported=len(rows), first=min(u for u, _ in rows), last=max(u for u, _ in rows))
