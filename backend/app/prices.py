"""Day-ahead prices into the database: one use case for `v2g prices import FILE`, ``POST /prices`` and the
service's import job (a file dropped in ``V2G_PRICES_DROP_DIR``, or the ENTSO-E transparency platform's
API when ``V2G_ENTSOE_TOKEN`` is set).

A file is the platform's CSV (``utc,eur_mwh``) or an ENTSO-E day-ahead price document (A44
``Publication_MarketDocument``, XML), read with ``entsoe-py``'s own parser: both curve types (A01, every
position; A03, a position only where the price changes) and every resolution. The planner prices hours:
a document at 15 or 30 minutes is averaged to hours (every hour whole, or the hour is missing), and the
import says so."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import PricePoint
from scheduler.datasets import load_prices
from scheduler.errors import DataFileError, DuplicateTimestampError, MalformedTimestampError


class NoPricesInDocumentError(DataFileError):
    """An ENTSO-E document without day-ahead prices (an acknowledgement, another document type)."""


@dataclass(frozen=True)
class PriceFile:
    """The hourly prices a file gives (UTC start of hour, EUR/MWh), and what a reader should know."""

    points: list[tuple[datetime, float]]
    #: runs of hours missing inside the file's span: (first missing hour, hours)
    gaps: list[tuple[datetime, int]] = field(default_factory=list)
    #: e.g. "ENTSO-E A44, PT15M averaged to hours"
    note: str = ""


def _entsoe_points(path: Path, text: str) -> PriceFile:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bs4's XML-as-HTML notice inside entsoe-py
        from entsoe.parsers import parse_prices

        try:
            series = parse_prices(text)  # type: ignore[no-untyped-call]
        except (AttributeError, ValueError, TypeError) as exc:
            raise NoPricesInDocumentError(
                path, None, f"not an ENTSO-E day-ahead price document ({exc})"
            ) from None
    hourly = series.get("60min")
    note = "ENTSO-E A44, hourly"
    if hourly is None or hourly.empty:
        for key, per_hour in (("15min", 4), ("30min", 2)):
            finer = series.get(key)
            if finer is not None and not finer.empty:
                finer = finer[~finer.index.duplicated(keep="last")]
                groups = finer.groupby(finer.index.floor("h"))
                whole = groups.count() == per_hour
                hourly = groups.mean()[whole]
                note = f"ENTSO-E A44, PT{key[:2]}M averaged to hours"
                break
    if hourly is None or hourly.empty:
        raise NoPricesInDocumentError(path, None, "no day-ahead prices in the document")
    hourly = hourly[~hourly.index.duplicated(keep="last")].sort_index()
    index = pd.DatetimeIndex(hourly.index).tz_convert("UTC")
    points = [(t.to_pydatetime(), float(v)) for t, v in zip(index, hourly.to_numpy(), strict=True)]
    expected = pd.date_range(index[0], index[-1], freq="h")
    missing = expected.difference(index)
    gaps: list[tuple[datetime, int]] = []
    for t in missing:
        if gaps and gaps[-1][0] + pd.Timedelta(hours=gaps[-1][1]) == t:
            gaps[-1] = (gaps[-1][0], gaps[-1][1] + 1)
        else:
            gaps.append((t.to_pydatetime(), 1))
    return PriceFile(points, gaps, note)


def read_price_file(path: Path) -> PriceFile:
    """The hourly prices of a CSV (``utc,eur_mwh``) or an ENTSO-E XML document; a malformed file is a
    named :class:`DataFileError` (its line where there is one), never a partial read."""
    head = path.read_bytes()[:512].lstrip()
    if head.startswith(b"<"):
        return _entsoe_points(path, path.read_text(encoding="utf-8"))
    prices = load_prices(path, gap_policy="skip")
    stamps = pd.DatetimeIndex(prices.eur_mwh.index).to_pydatetime()
    points = list(zip(stamps, (float(p) for p in prices.eur_mwh.to_numpy()), strict=True))
    return PriceFile(points, [(g.start.to_pydatetime(), g.hours) for g in prices.gaps], "CSV")


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
