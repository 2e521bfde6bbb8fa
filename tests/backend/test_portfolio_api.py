"""The portfolio over the API: an inline day scheduled as a job with its rounds as progress, the
hand-computed optimum, one session's intervals read back, bad tables refused with a named 422."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backend.conftest import Api, make_api

START = "2023-03-15T00:00:00Z"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, dask_workers=1, data_dir=str(tmp_path / "data"))


def two_homes(zone_kw: float) -> dict[str, Any]:
    """Two 10 kW EVs (η = 1) each needing 2.5 kWh in the first half hour, prices 10 then 100 EUR/MWh."""
    session = {
        "battery_kwh": 50,
        "charge_kw": 10,
        "eta_charge": 1,
        "eta_discharge": 1,
        "arrival": START,
        "departure": "2023-03-15T00:30:00Z",
        "arrival_kwh": 10,
        "target_kwh": 12.5,
    }
    return {
        "start": START,
        "intervals": 4,
        "nodes": [{"node": "Z", "import_limit_kw": zone_kw, "export_limit_kw": zone_kw}],
        "sites": [
            {"site": h, "kind": "home", "node": "Z", "import_limit_kw": 17, "export_limit_kw": 17}
            for h in ("H1", "H2")
        ],
        "sessions": [
            {"session": "s1", "vehicle": "v1", "owner": "o1", "site": "H1", **session},
            {"session": "s2", "vehicle": "v2", "owner": "o2", "site": "H2", **session},
        ],
        "prices_eur_mwh": [10, 100, 50, 50],
        "degradation_eur_kwh": 0,
    }


def _scheduled_as_a_job(api: Api) -> None:
    job = api.post("/portfolio/schedules", two_homes(zone_kw=12.0))
    assert isinstance(job, dict) and job["kind"] == "portfolio"
    done = api.wait(job)
    result = done["result"]
    assert isinstance(result, dict)
    # the zone lets 12 kW through in the cheap quarter hour: 3 kWh at 10 + 2 kWh at 100 EUR/MWh
    assert result["cost_eur"] == pytest.approx(0.23, abs=1e-6)
    assert result["violations"] == [] and result["evs"] == 2
    rows = api.client.get(f"/portfolio/schedules/{job['id']}/sessions/s1", headers=api.headers("operator"))
    assert rows.status_code == 200
    powers = [(r["charge_kw"], r["discharge_kw"]) for r in rows.json()]
    assert len(powers) == 2 and sum(p[0] for p in powers) == pytest.approx(10.0, abs=1e-4)
    missing = api.client.get(
        f"/portfolio/schedules/{job['id']}/sessions/nope", headers=api.headers("operator")
    )
    assert missing.status_code == 404 and missing.json()["error"] == "NotFoundError"


BAD_TABLES: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (lambda b: b["sites"][1].update(node="Y"), "PortfolioError"),
    (lambda b: b["sessions"][0].update(departure="2023-03-14T23:00:00Z"), "DepartureBeforeArrivalError"),
    (lambda b: b["sessions"][1].update(vehicle="v1"), "DuplicateIdError"),
    (lambda b: b["sessions"][0].update(target_kwh=40), "TargetUnreachableError"),
    (lambda b: b.update(prices_eur_mwh=[10, 100]), "MisalignedIntervalError"),
]


def test_a_portfolio_day_is_scheduled_as_a_job_and_bad_tables_are_refused_by_name(api: Api) -> None:
    for change, error in BAD_TABLES:  # one app for all (its start deploys the contracts)
        body = two_homes(zone_kw=12.0)
        change(body)
        response = api.client.post("/portfolio/schedules", json=body, headers=api.headers("operator"))
        assert response.status_code == 422, response.text
        assert response.json()["error"] == error
    owner = api.client.post("/portfolio/schedules", json=two_homes(12.0), headers=api.headers("alice"))
    assert owner.status_code == 403
    _scheduled_as_a_job(api)
