"""The real app through httpx: the whole flow, the role matrix, and bad input refused with nothing changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from backend.db.models import PlugSession, Vehicle
from tests.backend.conftest import SCHEDULE, Api, make_api


def run_day(api: Api) -> tuple[int, int]:
    job = api.wait(api.post("/schedules", SCHEDULE))  # type: ignore[arg-type]
    schedule_id = int(job["result"]["schedule_id"])  # type: ignore[index]
    settled = api.wait(api.post("/periods", {"schedule_id": schedule_id, "fee_bps": 100}))  # type: ignore[arg-type]
    return schedule_id, int(settled["result"]["period_id"])  # type: ignore[index]


def test_full_flow_schedule_settle_statement_reconcile_proof(api: Api) -> None:
    schedule_id, period_id = run_day(api)
    c, op = api.client, api.headers("operator")
    schedule = c.get(f"/schedules/{schedule_id}", headers=op).json()
    assert schedule["status"] == "optimal" and schedule["kpis"]["shortfall_kwh"] == 0
    trades = c.get(f"/schedules/{schedule_id}/trades", headers=op).json()
    assert trades and all(isinstance(t["energy_wh"], int) and t["energy_wh"] > 0 for t in trades)
    period = c.get(f"/periods/{period_id}", headers=op).json()
    assert period["status"] == "claimed" and isinstance(period["total_credit"], str)
    entries = c.get(f"/periods/{period_id}/entries", headers=op).json()
    assert {e["owner_id"] for e in entries} == {"alice", "bob"} and all(e["claimed"] for e in entries)
    statement = c.get("/audit/statements/alice", headers=api.headers("alice")).json()
    assert statement["lines"][0]["period_id"] == period_id and isinstance(statement["total_amount"], str)
    assert c.get("/audit/reconciliation", headers=api.headers("auditor")).json()["ok"] is True
    proof = c.get(f"/audit/proofs/{period_id}/0", headers=api.headers("auditor")).json()
    assert proof["valid"] and proof["contract_leaf_matches"]
    health = c.get("/health", headers=op).json()
    assert health["status"] == "ok" and health["chain"] == "eth-tester"


def test_owner_sees_only_own_trades_and_entries(api: Api) -> None:
    schedule_id, period_id = run_day(api)
    c = api.client
    trades = c.get(f"/schedules/{schedule_id}/trades", headers=api.headers("alice")).json()
    assert trades and {t["owner_id"] for t in trades} == {"alice"}
    entries = c.get(f"/periods/{period_id}/entries", headers=api.headers("bob")).json()
    assert [e["owner_id"] for e in entries] == ["bob"]
    assert [v["owner_id"] for v in c.get("/vehicles", headers=api.headers("bob")).json()] == ["bob", "bob"]


def role_matrix(period_id: int, schedule_id: int) -> list[tuple[str, str, Any, dict[str, int]]]:
    """(method, path, body, expected status per role); every role that must be refused gets 403."""
    forbidden = {"alice": 403, "auditor": 403}
    return [
        ("POST", "/owners", {"id": "carol", "address": "0x" + "c3" * 20}, {"operator": 201, **forbidden}),
        (
            "POST",
            "/vehicles",
            {"id": "evx", "owner_id": "alice", "battery_kwh": 40, "charge_kw": 7},
            {"operator": 201, **forbidden},
        ),
        (
            "POST",
            "/sessions",
            {
                "id": "sx",
                "vehicle_id": "ev0",
                "arrival": "2023-07-03T01:00:00Z",
                "departure": "2023-07-03T02:00:00Z",
                "arrival_kwh": 1,
                "target_kwh": 2,
            },
            {"operator": 201, **forbidden},
        ),
        (
            "POST",
            "/prices",
            {"prices": [{"utc": "2030-01-01T00:00:00Z", "eur_mwh": 1}]},
            {"operator": 201, **forbidden},
        ),
        (
            "POST",
            "/dr-events",
            {"id": "dr9", "start": "2030-01-01T00:00:00Z", "duration_s": 900, "import_limit_kw": 5},
            {"operator": 201, **forbidden},
        ),
        ("GET", "/dr-events", None, {"operator": 200, **forbidden}),
        ("GET", "/vehicles", None, {"operator": 200, "alice": 200, "auditor": 403}),
        ("GET", "/vehicles/ev1", None, {"operator": 200, "alice": 403, "auditor": 403}),
        ("GET", f"/schedules/{schedule_id}/trades", None, {"operator": 200, "alice": 200, "auditor": 403}),
        ("GET", "/audit/statements/bob", None, {"operator": 200, "alice": 403, "auditor": 200}),
        ("GET", "/audit/statements/alice", None, {"operator": 200, "alice": 200, "auditor": 200}),
        ("GET", "/audit/reconciliation", None, {"operator": 200, "alice": 403, "auditor": 200}),
        ("GET", f"/periods/{period_id}", None, {"operator": 200, "alice": 200, "auditor": 200}),
        ("GET", "/jobs/1", None, {"operator": 200, **forbidden}),
        ("POST", "/escrow/float", {"amount": "5"}, {"operator": 201, **forbidden}),
        ("POST", "/escrow/deposits", {"owner_id": "bob", "amount": "5"}, {"operator": 201, **forbidden}),
        ("GET", "/escrow/balances/bob", None, {"operator": 200, "alice": 403, "auditor": 200}),
        ("POST", f"/periods/{period_id}/claims", {"entry_id": 1}, {"alice": 403, "auditor": 403}),
    ]


def test_role_matrix_refuses_what_each_role_must_not_do(api: Api) -> None:
    schedule_id, period_id = run_day(api)
    for method, path, body, expected in role_matrix(period_id, schedule_id):
        for who, status in expected.items():
            response = api.client.request(method, path, json=body, headers=api.headers(who))
            assert response.status_code == status, (who, method, path, response.status_code, response.text)
        for headers in ({}, {"X-API-Key": "v2g_not-a-key"}):
            response = api.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.status_code)


def counts(api: Api) -> tuple[int, int]:
    with api.state.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Vehicle)) or 0,
            session.scalar(select(func.count()).select_from(PlugSession)) or 0,
        )


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/sessions", "{not json", 400, "MalformedBodyError"),
        (
            "/sessions",
            {
                "id": "n1",
                "vehicle_id": "ev0",
                "arrival": "2023-07-04T01:00:00Z",
                "departure": "2023-07-04T02:00:00Z",
                "arrival_kwh": -1,
                "target_kwh": 2,
            },
            422,
            None,
        ),
        (
            "/sessions",
            {
                "id": "n2",
                "vehicle_id": "ghost",
                "arrival": "2023-07-04T01:00:00Z",
                "departure": "2023-07-04T02:00:00Z",
                "arrival_kwh": 1,
                "target_kwh": 2,
            },
            422,
            "UnknownVehicleError",
        ),
        (
            "/sessions",
            {
                "id": "n3",
                "vehicle_id": "ev0",
                "arrival": "2023-07-04T05:00:00Z",
                "departure": "2023-07-04T02:00:00Z",
                "arrival_kwh": 1,
                "target_kwh": 2,
            },
            422,
            "DepartureBeforeArrivalError",
        ),
        (
            "/sessions",
            {
                "id": "n4",
                "vehicle_id": "ev0",
                "arrival": "2023-07-04T01:00:00Z",
                "departure": "2023-07-04T02:00:00Z",
                "arrival_kwh": 1,
                "target_kwh": 500,
            },
            422,
            "TargetAboveCapacityError",
        ),
        (
            "/sessions",
            {
                "id": "n5",
                "vehicle_id": "ev0",
                "arrival": "2023-07-02T07:00:00Z",
                "departure": "2023-07-02T08:00:00Z",
                "arrival_kwh": 1,
                "target_kwh": 2,
            },
            409,
            "OverlappingSessionsError",
        ),
        (
            "/vehicles",
            {
                "id": "bad",
                "owner_id": "alice",
                "battery_kwh": 40,
                "charge_kw": 7,
                "soc_min": 0.9,
                "soc_max": 0.5,
            },
            422,
            "InvalidParameterError",
        ),
        ("/schedules", {**SCHEDULE, "start": "2023-07-02T00:07:00Z"}, 422, "MisalignedIntervalError"),
        ("/schedules", {**SCHEDULE, "start": "2031-01-01T00:00:00Z"}, 422, "MisalignedIntervalError"),
        (
            "/prices",
            {
                "prices": [
                    {"utc": "2030-01-01T00:00:00Z", "eur_mwh": 1},
                    {"utc": "2030-01-01T00:00:00Z", "eur_mwh": 2},
                ]
            },
            422,
            "DuplicateTimestampError",
        ),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    api: Api, path: str, body: Any, status: int, error: str | None
) -> None:
    before = counts(api)
    if isinstance(body, str):
        response = api.client.post(
            path, content=body, headers={**api.headers("operator"), "Content-Type": "application/json"}
        )
    else:
        response = api.client.post(path, json=body, headers=api.headers("operator"))
    assert response.status_code == status, response.text
    if error is not None:
        assert response.json()["error"] == error
        if status == 422:
            assert response.json()["detail"][0]["type"] == error
    assert counts(api) == before


def test_an_absurdly_large_fleet_is_refused_before_any_job(tmp_path: Path) -> None:
    for api in make_api(tmp_path, max_fleet=3):
        response = api.client.post("/schedules", json=SCHEDULE, headers=api.headers("operator"))
        assert response.status_code == 422
        assert response.json()["error"] == "InvalidParameterError"
        assert "limit of 3" in response.json()["detail"][0]["msg"]
        with api.state.sessions() as session:
            from backend.db.models import Job

            assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_a_restart_loses_no_job_result_and_reruns_interrupted_jobs(tmp_path: Path) -> None:
    from backend.db.models import Job

    gen = make_api(tmp_path)
    api = next(gen)
    done = api.wait(api.post("/schedules", SCHEDULE))  # type: ignore[arg-type]
    with api.state.sessions.begin() as session:  # a job the previous process was running when it died
        session.add(
            Job(
                kind="schedule",
                params={
                    **SCHEDULE,
                    "v2g": False,
                    "interval_minutes": 15,
                    "degradation_eur_kwh": 0.02,
                    "sell_spread_eur_mwh": 0.0,
                    "mip_gap": 1e-4,
                },
                status="running",
            )
        )
    operator = api.keys["operator"]
    gen.close()  # server stops

    from fastapi.testclient import TestClient

    from backend.api.app import create_app
    from backend.config import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'api.sqlite'}", chain="eth-tester"))
    with TestClient(app) as client:
        state = app.state.v2g
        response = client.get(f"/jobs/{done['id']}", headers={"X-API-Key": operator})
        assert response.json()["status"] == "succeeded" and response.json()["result"] == done["result"]
        interrupted = int(str(done["id"])) + 1
        state.runner.wait(interrupted, timeout=120)
        rerun = client.get(f"/jobs/{interrupted}", headers={"X-API-Key": operator}).json()
        assert rerun["status"] == "succeeded" and rerun["result"]["schedule_id"] > 0
