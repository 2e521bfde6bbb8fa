"""Day-ahead prices into the database: one use case for `v2g prices import FILE` and ``POST /prices``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import PricePoint
from scheduler.errors import DuplicateTimestampError, MalformedTimestampError


@dataclass(frozen=True)
class PricesStored:
    stored: int
    replaced: int
    first: datetime
    last: datetime


def store_prices(
    sessions: sessionmaker[Session], points: Sequence[tuple[datetime, float]], source: str
) -> PricesStored:
    """Store hourly prices (UTC start of hour, EUR/MWh; negative prices kept), replacing the hours already
    stored. A timestamp that is not the start of an hour, or an hour twice, refuses the whole import by
    name (``source`` and the point's line), and nothing is written."""
    seen: set[datetime] = set()
    rows = []
    for i, (when, price) in enumerate(points):
        utc = when.astimezone(UTC)
        if utc.minute or utc.second or utc.microsecond:
            raise MalformedTimestampError(source, i + 1, f"{utc.isoformat()} is not the start of an hour")
        if utc in seen:
            raise DuplicateTimestampError(source, i + 1, f"hour {utc.isoformat()} appears twice")
        seen.add(utc)
        rows.append((utc, float(price)))
    if not rows:
        raise MalformedTimestampError(source, 1, "no prices")
    with sessions.begin() as session:
        existing = {
            p.utc: p
            for p in session.scalars(select(PricePoint).where(PricePoint.utc.in_([u for u, _ in rows])))
        }
        for utc, price in rows:
            if utc in existing:
                existing[utc].eur_mwh = price
            else:
                session.add(PricePoint(utc=utc, eur_mwh=price))
    return PricesStored(len(rows), len(existing), min(u for u, _ in rows), max(u for u, _ in rows))


def hourly_prices(session: Session, start: datetime, end: datetime) -> pd.Series:
    """The stored hourly prices from the hour holding ``start`` up to ``end`` (EUR/MWh, UTC index)."""
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    rows = list(
        session.scalars(
            select(PricePoint)
            .where(PricePoint.utc >= first_hour, PricePoint.utc < end)
            .order_by(PricePoint.utc)
        )
    )
    return pd.Series([r.eur_mwh for r in rows], index=pd.DatetimeIndex([r.utc for r in rows]), dtype=float)
