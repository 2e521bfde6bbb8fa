"""The portal's period page shows a metered day's energy to auditors: the conservation equation and each
refusal by name (owners see only their entries)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend.app.settle import SettlePolicy, settle_metered
from backend.db.models import IdTokenRow, Station
from backend.metering import frames
from tests.backend.conftest import DAY, Api, make_api
from tests.backend.test_api_energy import _event

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path)


def _sign_in(api: Api, who: str) -> None:
    api.client.cookies.clear()
    token = CSRF.search(api.client.get("/").text)
    assert token
    answer = api.client.post(
        "/sign-in", data={"api_key": api.keys[who], "csrf": token.group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


def test_a_metered_period_shows_where_its_energy_went(api: Api) -> None:
    with api.state.sessions.begin() as db:
        db.add(Station(id="cs1", ocpp_version="2.0.1", evses=1, max_power_kw=11.0, boots=0))
        db.add(IdTokenRow(token="card-ev0", vehicle_id="ev0"))
        db.flush()
        for seq, (kind, minutes, register) in enumerate(
            (("Started", 0, 0), ("Updated", 60, 11_000), ("Ended", 61, 511_000))
        ):
            frames.append(
                db, "cs1", _event(kind, seq, minutes, register), DAY + timedelta(hours=8, minutes=minutes)
            )
    _, period, status = settle_metered(
        api.state.platform, 20230702, SettlePolicy(fee_bps=100), now=DAY + timedelta(days=1)
    )
    assert status == "claimed" and period.entry_count == 1

    _sign_in(api, "auditor")
    page = api.client.get("/portal/periods/20230702")
    assert page.status_code == 200, page.text
    assert (
        "20230702: metered 511,000 Wh = settled 11,000 + adjusted 0 + refused 500,000 + pending 0"
        in page.text
    )
    assert "<strong>balances</strong>" in page.text
    refusals = page.text[page.text.index('data-testid="refusals"') :]
    assert "cs1" in refusals and "500,000" in refusals and "ImplausibleEnergyError" in refusals

    _sign_in(api, "alice")
    own = api.client.get("/portal/periods/20230702")
    assert own.status_code == 200 and 'data-testid="energy-equation"' not in own.text
