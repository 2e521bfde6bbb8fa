"""GET /audit/energy: the day's conservation through the API, from raw frames as the CSMS stores them."""

from __future__ import annotations

import json
from datetime import timedelta

from backend.db.models import IdTokenRow, Station
from backend.metering import frames
from tests.backend.conftest import DAY, Api
from tests.operations.hostile import as_schema_owner


def _event(kind: str, seq: int, minutes: int, register: int) -> str:
    at = (DAY + timedelta(hours=8, minutes=minutes)).isoformat().replace("+00:00", "Z")
    payload = {
        "eventType": kind,
        "timestamp": at,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq,
        "transactionInfo": {"transactionId": "t1"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": at, "sampledValue": [{"value": register}]}],
        **({"idToken": {"idToken": "card-ev0", "type": "ISO14443"}} if kind == "Started" else {}),
    }
    return json.dumps([2, f"m{seq}", "TransactionEvent", payload])


def test_energy_balances_with_the_forged_jump_refused_by_name(api: Api) -> None:
    with api.state.sessions.begin() as db:
        db.add(Station(id="cs1", ocpp_version="2.0.1", evses=1, max_power_kw=11.0, boots=0))
        db.add(IdTokenRow(token="card-ev0", vehicle_id="ev0"))
        db.flush()
        for seq, (kind, minutes, register) in enumerate(
            (("Started", 0, 0), ("Updated", 60, 11_000), ("Updated", 61, 511_000))
        ):
            frames.append(
                db, "cs1", _event(kind, seq, minutes, register), DAY + timedelta(hours=8, minutes=minutes)
            )
    response = api.client.get("/audit/energy", params={"date": "2023-07-02"}, headers=api.headers("auditor"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["metered_wh"], body["refused_wh"], body["pending_wh"], body["settled_wh"]) == (
        511_000,
        500_000,
        11_000,
        0,
    )
    assert body["refused_by_reason"] == {"ImplausibleEnergyError": 500_000}
    [refusal] = body["refusals"]
    assert (refusal["station_id"], refusal["transaction_id"], refusal["wh"]) == ("cs1", "t1", 500_000)
    assert body["balances"] is True and body["unsigned_wh"] == 0

    # owners do not read the audit; a date that is not one is a named 422
    assert (
        api.client.get(
            "/audit/energy", params={"date": "2023-07-02"}, headers=api.headers("alice")
        ).status_code
        == 403
    )
    for date in ("2023-02-30", "9999-12-31", "1969-12-31"):  # no such day; no end to it; before any chain
        bad = api.client.get("/audit/energy", params={"date": date}, headers=api.headers("auditor"))
        assert bad.status_code == 422 and bad.json()["error"] == "InvalidDateError", date

    # a raw frame edited in the database: 409 FrameChainError, nothing computed over it
    with api.state.sessions.begin() as db:
        as_schema_owner(db, "UPDATE raw_frames SET frame = replace(frame, '11000', '21000') WHERE seq = 2")
    broken = api.client.get("/audit/energy", params={"date": "2023-07-02"}, headers=api.headers("auditor"))
    assert broken.status_code == 409 and broken.json()["error"] == "FrameChainError"


def test_a_metered_day_is_settled_through_the_api(api: Api) -> None:
    """POST /metered-periods: the day's verified frames signed by a metering service of its own (started
    for the job on the local chain), settled, and the day's equation in the job's result."""
    with api.state.sessions.begin() as db:
        db.add(Station(id="cs1", ocpp_version="2.0.1", evses=1, max_power_kw=11.0, boots=0))
        db.add(IdTokenRow(token="card-ev0", vehicle_id="ev0"))
        db.flush()
        for seq, (kind, minutes, register) in enumerate(
            (("Started", 0, 0), ("Updated", 60, 11_000), ("Updated", 61, 511_000), ("Ended", 120, 511_000))
        ):
            frames.append(
                db, "cs1", _event(kind, seq, minutes, register), DAY + timedelta(hours=8, minutes=minutes)
            )
    operator = api.headers("operator")
    # refused before any job: not a day of the calendar; refused as the job's named error: a day that has
    # not ended
    bad = api.client.post("/metered-periods", json={"date": "2023-02-30"}, headers=operator)
    assert (bad.status_code, bad.json()["error"]) == (422, "InvalidDateError")
    future = api.client.post("/metered-periods", json={"date": "2999-01-01"}, headers=operator).json()
    api.state.runner.wait(int(future["id"]))
    failed = api.client.get(f"/jobs/{future['id']}", headers=operator).json()
    assert failed["status"] == "failed" and failed["error"].startswith("DayNotEndedError: period 29990101")
    assert (
        api.client.post(
            "/metered-periods", json={"date": "2023-07-02"}, headers=api.headers("alice")
        ).status_code
        == 403
    )

    job = api.wait(api.post("/metered-periods", {"date": "2023-07-02", "fee_bps": 100}))  # type: ignore[arg-type]
    result = job["result"]
    assert isinstance(result, dict)
    assert (result["period_id"], result["status"], result["entries"], result["balances"]) == (
        20230702,
        "claimed",
        1,
        True,
    )
    assert result["energy"] == (
        "20230702: metered 511,000 Wh = settled 11,000 + adjusted 0 + refused 500,000 + pending 0"
    )
    body = api.client.get(
        "/audit/energy", params={"date": "2023-07-02"}, headers=api.headers("auditor")
    ).json()
    assert (body["settled_wh"], body["pending_wh"], body["balances"]) == (11_000, 0, True)
    # again: the period is resumed as built, nothing paid twice
    again = api.wait(api.post("/metered-periods", {"date": "2023-07-02", "fee_bps": 100}))  # type: ignore[arg-type]
    assert again["result"]["status"] == "claimed"  # type: ignore[index]
    entry = api.client.get("/periods/20230702/entries", headers=operator).json()
    assert len(entry) == 1 and entry[0]["claimed"] is True


def test_the_api_settles_a_schedule_at_the_prices_it_was_planned_with(api: Api) -> None:
    """Discharge is paid at sell = buy − the spread the schedule was planned with (as the CLI does), not
    at the buy price."""
    from sqlalchemy import select

    from backend.db.models import PricePoint, SettledTradeRow
    from backend.settlement.tariff import eur_mwh_to_base_per_kwh
    from tests.backend.conftest import SCHEDULE

    spread = 12.5
    job = api.wait(api.post("/schedules", {**SCHEDULE, "sell_spread_eur_mwh": spread}))  # type: ignore[arg-type]
    api.wait(api.post("/periods", {"schedule_id": job["result"]["schedule_id"]}))  # type: ignore[arg-type,index]
    with api.state.sessions() as session:
        hourly = {p.utc: p.eur_mwh for p in session.scalars(select(PricePoint))}
        rows = list(session.scalars(select(SettledTradeRow)))
    grid = [r for r in rows if r.grid_wh > 0]
    assert {r.direction for r in grid} == {"charge", "discharge"}
    for r in grid:
        buy = hourly[r.interval_start.replace(minute=0)]
        expected = buy - spread if r.direction == "discharge" else buy
        assert r.grid_price == eur_mwh_to_base_per_kwh(expected), (r.direction, r.interval_start)
