"""GET /escrow/credit/{owner}: what an owner may charge against, as the CSMS decides it."""

from __future__ import annotations

from datetime import timedelta

from backend.db.models import OcppTransaction, Station
from backend.settlement.tariff import eur_mwh_to_base_per_kwh, fee_of
from scheduler.datasets import load_prices
from tests.backend.conftest import DAY, Api


def test_an_owner_sees_balance_notice_exposure_and_what_is_free(api: Api) -> None:
    # today has no stored price: the exposure is bounded by the highest price stored (the seeded day)
    price = eur_mwh_to_base_per_kwh(float(load_prices().window(DAY, DAY + timedelta(days=1)).max()))
    response = api.client.get("/escrow/credit/alice", headers=api.headers("alice"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "owner_id": "alice",
        "account": "0xA1A1a1a1A1A1A1A1A1a1a1a1a1a1A1A1a1A1a1a1",
        "balance": "50000000",
        "held_for_withdrawal": "0",
        "notice_available_at": None,
        "notice_expires_at": None,
        "debt": "0",
        "owed_by_aggregator": "0",
        "open_exposure": "0",
        "free": "50000000",
        "price_per_kwh_max": str(price),
    }
    # an open charging transaction of alice's 60 kWh car: its whole battery at that price, plus the
    # server's fee (V2G_FEE_BPS: 100 basis points by default)
    with api.state.sessions.begin() as db:
        db.add(Station(id="cs1", ocpp_version="2.0.1", evses=1, boots=0))
        db.flush()
        db.add(
            OcppTransaction(
                station_id="cs1", transaction_id="t1", evse_id=1, vehicle_id="ev0", started_at=DAY
            )
        )
    body = api.client.get("/escrow/credit/alice", headers=api.headers("operator")).json()
    value = (60_000 * price + 500) // 1000
    exposure = value + fee_of(value, api.state.settings.fee_bps)
    assert api.state.settings.fee_bps == 100 and exposure > value
    assert (body["open_exposure"], body["free"]) == (str(exposure), str(50_000_000 - exposure))
    assert api.client.get("/escrow/credit/alice", headers=api.headers("bob")).status_code == 403
    missing = api.client.get("/escrow/credit/nobody", headers=api.headers("operator"))
    assert missing.status_code == 404 and "NotFoundError" in missing.text
