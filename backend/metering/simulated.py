"""Simulated registers: how a simulated schedule reaches the meter (``v2g settle``, ``v2g demo``, the
API's settlement of a stored schedule, on a local chain only).

The settler never signs a period root. A simulated schedule is handed to the metering service as the
registers a meter on each session would have shown, not as a plan: per session, the cumulative import
and export register (whole Wh, from 0) at the interval boundaries where it changed. The metering service
derives each interval's energy from the registers itself (a register that runs backwards is refused by
name), prices it with the tariff sent along, builds the period, signs it only when it is the root it was
asked to sign, and records the signature labelled ``simulated`` with the hash of the registers.

Wire form (JSON)::

    {"stamps": [ISO interval starts], "end": ISO,
     "tariff": {"buy": [base units per kWh], "sell": [...], "fee_bps": int},
     "sessions": [{"owner", "vehicle_id", "session_id", "readings": [[k, import_wh, export_wh], ...]}]}

``readings[i] = [k, imp, exp]``: the registers at boundary ``k`` (the start of interval ``k``; ``k = n``
is ``end``), boundaries increasing, registers starting at 0 Wh. Energy is read only between readings at
both ends of one interval (``k - 1`` and ``k``): a register that advances across a gap of unlisted
boundaries cannot be placed in an interval and is refused, never spread. Times carry their UTC offset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from backend.settlement.tariff import Tariff
from scheduler.schedule import Direction, Trade


class SimulatedRegisterError(ValueError):
    """Simulated registers the meter cannot read: malformed, unknown interval, or a register that runs
    backwards."""


def _stamp(at: datetime) -> str:
    return at.isoformat()


def registers_of(
    trades: Sequence[Trade], stamps: Sequence[datetime], end: datetime, tariff: Tariff
) -> dict[str, Any]:
    """The registers a meter per session would show for ``trades`` (the settler's side)."""
    index = {t: k for k, t in enumerate(stamps)}
    per: dict[str, dict[str, Any]] = {}
    steps: dict[str, dict[int, list[int]]] = {}
    for trade in trades:
        if trade.interval_start not in index:
            raise SimulatedRegisterError(
                f"trade at {trade.interval_start.isoformat()}: not an interval start"
            )
        per.setdefault(
            trade.session_id,
            {"owner": trade.owner, "vehicle_id": trade.vehicle_id, "session_id": trade.session_id},
        )
        delta = steps.setdefault(trade.session_id, {}).setdefault(index[trade.interval_start], [0, 0])
        delta[0 if trade.direction is Direction.CHARGE else 1] += trade.energy_wh
    sessions = []
    for session_id in sorted(per):
        imp = exp = 0
        readings: list[list[int]] = []
        for k in sorted(steps[session_id]):
            d_imp, d_exp = steps[session_id][k]
            if not readings or readings[-1][0] != k:
                readings.append([k, imp, exp])  # the register before the interval
            imp, exp = imp + d_imp, exp + d_exp
            readings.append([k + 1, imp, exp])
        sessions.append({**per[session_id], "readings": readings})
    return {
        "stamps": [_stamp(t) for t in stamps],
        "end": _stamp(end),
        "tariff": {
            "buy": [tariff.buy_per_kwh[t] for t in stamps],
            "sell": [tariff.sell_per_kwh[t] for t in stamps],
            "fee_bps": tariff.fee_bps,
        },
        "sessions": sessions,
    }


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimulatedRegisterError(f"{what}: {value!r} is not a whole number")
    return value


def read(payload: Mapping[str, Any]) -> tuple[list[Trade], Tariff, datetime, datetime]:
    """The trades and tariff the registers give (the meter's side): (trades, tariff, start, end)."""
    try:
        stamps = [datetime.fromisoformat(s) for s in payload["stamps"]]
        end = datetime.fromisoformat(payload["end"])
        prices = payload["tariff"]
        buy = [_int(p, "buy price") for p in prices["buy"]]
        sell = [_int(p, "sell price") for p in prices["sell"]]
        fee_bps = _int(prices["fee_bps"], "fee_bps")
        sessions = list(payload["sessions"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SimulatedRegisterError):
            raise
        raise SimulatedRegisterError(f"simulated registers: {type(exc).__name__}: {exc}") from None
    if any(t.tzinfo is None for t in (*stamps, end)):
        raise SimulatedRegisterError("simulated registers: times need their UTC offset")
    if not stamps or len(buy) != len(stamps) or len(sell) != len(stamps):
        raise SimulatedRegisterError("simulated registers: one buy and one sell price per interval")
    if any(b <= a for a, b in zip([*stamps, end], [*stamps, end][1:], strict=False)):
        raise SimulatedRegisterError("simulated registers: interval starts must increase up to the end")
    n = len(stamps)
    trades: list[Trade] = []
    seen: set[str] = set()
    for s in sessions:
        try:
            owner, vehicle, session_id = str(s["owner"]), str(s["vehicle_id"]), str(s["session_id"])
            readings = [
                (_int(r[0], "boundary"), _int(r[1], "import"), _int(r[2], "export")) for r in s["readings"]
            ]
        except (KeyError, TypeError, IndexError) as exc:
            raise SimulatedRegisterError(f"simulated registers: {type(exc).__name__}: {exc}") from None
        if session_id in seen:
            raise SimulatedRegisterError(f"session {session_id}: registers given twice")
        seen.add(session_id)
        last_k, imp, exp = -1, 0, 0
        for k, r_imp, r_exp in readings:
            if not 0 <= k <= n or k <= last_k:
                raise SimulatedRegisterError(
                    f"session {session_id}: boundary {k} out of order or outside 0..{n}"
                )
            if r_imp < imp or r_exp < exp:
                raise SimulatedRegisterError(
                    f"session {session_id}: a register runs backwards at boundary {k} "
                    f"({imp}/{exp} Wh, then {r_imp}/{r_exp} Wh)"
                )
            if k > 0 and (r_imp > imp or r_exp > exp):
                if k - 1 != last_k:
                    raise SimulatedRegisterError(
                        f"session {session_id}: energy between boundaries {max(last_k, 0)} and {k} is not "
                        "in one interval (a register reading is needed at each end)"
                    )
                for direction, wh in ((Direction.CHARGE, r_imp - imp), (Direction.DISCHARGE, r_exp - exp)):
                    if wh > 0:
                        trades.append(Trade(owner, vehicle, session_id, stamps[k - 1], direction, wh))
            elif k == 0 and (r_imp or r_exp):
                raise SimulatedRegisterError(f"session {session_id}: registers start at 0 Wh")
            last_k, imp, exp = k, r_imp, r_exp
    tariff = Tariff(dict(zip(stamps, buy, strict=True)), dict(zip(stamps, sell, strict=True)), fee_bps)
    return trades, tariff, stamps[0], end


def digest(payload: Mapping[str, Any]) -> str:
    """The SHA-256 of the registers' canonical JSON (recorded with the meter's signature)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
