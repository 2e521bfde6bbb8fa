"""A metered period recomputed from a raw-frame export alone.

``v2g audit frames --period P --out FILE`` writes one JSON document (format ``v2g-settle/period-frames/1``):
the period, chain id and contract, the fee and the metering policy, the period's raw-frame heads and
those of the period the metering service signed before it with the days it had signed, the registry
(stations' EVSEs, rated power and meter keys; idTokens; vehicles with owner and battery), the owners'
addresses, the hourly prices of the days the period prices, and every station's frames up to the heads.
:func:`recompute` checks every hash chain against the heads, replays the frames (station signatures
re-verified from the raw signed payloads), composes the day and its adjustments, prices them and builds
the Merkle tree: the root must be the one on chain. Nothing of the database is trusted but what the
export states, and each of those is checkable on its own (the heads, the keys, the prices).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Owner, Period, PricePoint
from backend.metering import frames as raw
from backend.metering.period import (
    MeteredPeriodError,
    compose,
    day_of,
    interval_stamps,
    signed_before,
    signed_policy,
    tariff_from,
)
from backend.metering.replay import MeterPolicy, Registry, replay
from backend.operations.metered import trades_of
from backend.settlement.period import build_period
from backend.settlement.tariff import settle_trades

FORMAT = "v2g-settle/period-frames/1"


class ExportError(MeteredPeriodError):
    """The period cannot be exported (not a metered period, ...) or the export is not one."""


@dataclass(frozen=True)
class Recomputed:
    period_id: int
    frames: int
    root: str
    total_credit: int
    total_debit: int
    entries: int


def export_period(
    session: Session,
    period_id: int,
    out: Path,
    fee_bps: int | None = None,
    policy: MeterPolicy | None = None,
) -> int:
    """``fee_bps`` and ``policy`` default to those the metering service recorded when it signed the period
    (else 100 and the default policy)."""
    period = session.get(Period, period_id)
    if period is None or period.frame_heads is None:
        raise ExportError(f"period {period_id} is not a metered period of this database")
    signed_fee, signed_rules = signed_policy(session, period_id) or (100, MeterPolicy())
    fee_bps = signed_fee if fee_bps is None else fee_bps
    policy = signed_rules if policy is None else policy
    from backend.db.models import Deployment

    deployment = session.get_one(Deployment, period.deployment_id)
    heads = dict(period.frame_heads)
    before = signed_before(session, period_id)
    frames = raw.load_verified(session, heads)
    registry = Registry.load(session)
    ledger = replay(frames, registry, policy)
    days = {period_id} | {day_of(k[2]) for k in ledger.accepted()} & set(before.days)
    stamps = interval_stamps(sorted(days))
    hours = {t.replace(minute=0) for t in stamps}
    prices = {
        p.utc.isoformat(): p.eur_mwh
        for p in session.scalars(select(PricePoint).where(PricePoint.utc.in_(sorted(hours))))
    }
    document: dict[str, Any] = {
        "format": FORMAT,
        "period_id": period_id,
        "chain_id": deployment.chain_id,
        "contract": deployment.settlement_address,
        "fee_bps": fee_bps,
        "policy": (policy or MeterPolicy()).to_json(),
        "heads": heads,
        "previous_heads": before.heads,
        "signed_days": sorted(before.days),
        "registry": registry.to_json(),
        "owners": {o.id: o.address for o in session.scalars(select(Owner))},
        "prices": dict(sorted(prices.items())),
        "frames": [
            {
                "station_id": f.station_id,
                "seq": f.seq,
                "received_at": raw.stamp(f.received_at),
                "frame": f.frame,
                "prev_hash": f.prev_hash,
                "hash": f.hash,
            }
            for station in sorted(frames)
            for f in frames[station]
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, separators=(",", ":"), ensure_ascii=False))
    return len(document["frames"])


def recompute(document: dict[str, Any]) -> Recomputed:
    if document.get("format") != FORMAT:
        raise ExportError(f"not a {FORMAT} export")
    period_id = int(document["period_id"])
    frames = [
        raw.Frame(
            str(f["station_id"]),
            int(f["seq"]),
            datetime.fromisoformat(f["received_at"]),
            str(f["frame"]),
            str(f["prev_hash"]),
            str(f["hash"]),
        )
        for f in document["frames"]
    ]
    heads = document["heads"]
    chains = raw.verify_chain(frames, heads)
    registry = Registry.from_json(document["registry"])
    policy = MeterPolicy.from_json(document["policy"])
    ledger = replay(chains, registry, policy)
    previous = None
    if document["previous_heads"] is not None:
        prev_heads = document["previous_heads"]
        truncated = {
            station: [f for f in chains.get(station, []) if f.seq <= int(seq)]
            for station, (seq, _) in prev_heads.items()
        }
        for station, (seq, digest) in prev_heads.items():
            chain = truncated[station]
            if len(chain) != int(seq) or (chain and chain[-1].hash != digest):
                raise raw.FrameChainError(f"station {station}: the previous heads are not in the frames")
        previous = replay(truncated, registry, policy)
    intervals, adjustments = compose(period_id, ledger, previous, frozenset(document["signed_days"]))
    days = [period_id, *sorted({day_of(m.interval_start) for m in adjustments})]
    prices = {datetime.fromisoformat(k): float(v) for k, v in document["prices"].items()}
    tariff = tariff_from(prices, interval_stamps(days), int(document["fee_bps"]))
    built = build_period(
        period_id,
        settle_trades(trades_of(intervals) + trades_of(adjustments), tariff),
        dict(document["owners"]),
        chain_id=int(document["chain_id"]),
        contract=str(document["contract"]),
    )
    return Recomputed(
        period_id,
        len(frames),
        "0x" + built.root.hex(),
        built.total_credit,
        built.total_debit,
        len(built.entries),
    )


def recompute_file(path: Path, period_id: int) -> Recomputed:
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise ExportError(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, dict) or int(document.get("period_id", -1)) != period_id:
        raise ExportError(f"{path}: not an export of period {period_id}")
    return recompute(document)
