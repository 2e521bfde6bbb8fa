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


def hourly_points(series: pd.Series, what: str) -> PriceFile:
    """Hourly prices from a price series of any resolution (finer ones averaged over whole hours: an
    hour with a missing quarter is missing), the hours missing inside its span listed."""
    series = series.dropna()
    series = series[~series.index.duplicated(keep="last")].sort_index()
    index = pd.DatetimeIndex(series.index)
    series.index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    hour = pd.Timedelta(hours=1)
    step = pd.Series(series.index).diff().min() if len(series) > 1 else hour
    if step < hour:
        groups = series.groupby(series.index.floor("h"))
        hourly = groups.mean()[groups.count() == round(hour / step)]
        note = f"{what}, PT{int(step.total_seconds() // 60)}M averaged to hours"
    else:
        hourly, note = series, f"{what}, hourly"
    if hourly.empty:
        raise ValueError(f"{what}: no whole hour of prices")
    stamps = pd.DatetimeIndex(hourly.index)
    points = [(t.to_pydatetime(), float(v)) for t, v in zip(stamps, hourly.to_numpy(), strict=True)]
    gaps: list[tuple[datetime, int]] = []
    for t in pd.date_range(stamps[0], stamps[-1], freq="h").difference(stamps):
        if gaps and gaps[-1][0] + pd.Timedelta(hours=gaps[-1][1]) == t:
            gaps[-1] = (gaps[-1][0], gaps[-1][1] + 1)
        else:
            gaps.append((t.to_pydatetime(), 1))
    return PriceFile(points, gaps, note)


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
    for key in ("60min", "15min", "30min"):
        found = series.get(key)
        if found is not None and not found.empty:
            try:
                return hourly_points(found, "ENTSO-E A44")
            except ValueError as exc:
                raise NoPricesInDocumentError(path, None, str(exc)) from None
    raise NoPricesInDocumentError(path, None, "no day-ahead prices in the document")


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
