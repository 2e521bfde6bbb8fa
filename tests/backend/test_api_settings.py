"""An owner's settings of a vehicle through the API: set by its owner (or an operator), refused for
anyone else's vehicle, validated by name, read back as stored."""

from __future__ import annotations

from typing import Any

from tests.backend.conftest import SCHEDULE, Api


def call(api: Api, method: str, path: str, who: str, body: object = None) -> tuple[int, Any]:
    response = api.client.request(method, path, json=body, headers=api.headers(who))
    return response.status_code, response.json() if response.content else None


def test_an_owner_sets_a_vehicles_departure_soc_and_v2g(api: Api) -> None:
    # before any: the defaults
    code, body = call(api, "GET", "/vehicles/ev0/settings", "alice")
    assert code == 200 and (body["v2g"], body["target_soc"], body["usual_departure"]) == (True, None, None)

    wanted = {
        "usual_departure": "07:30",
        "time_zone": "Europe/Amsterdam",
        "next_departure": "2023-07-03T06:15:00+02:00",
        "target_soc": 0.8,
        "min_soc": 0.3,
        "v2g": False,
    }
    code, body = call(api, "PUT", "/vehicles/ev0/settings", "alice", wanted)
    assert code == 200, body
    assert body["next_departure"] == "2023-07-03T04:15:00Z" and body["v2g"] is False
    assert {k: body[k] for k in ("usual_departure", "time_zone", "target_soc", "min_soc")} == {
        k: wanted[k] for k in ("usual_departure", "time_zone", "target_soc", "min_soc")
    }
    assert call(api, "GET", "/vehicles/ev0/settings", "alice")[1] == body
    # an operator may set them too; another owner may not, nor see them
    assert call(api, "PUT", "/vehicles/ev0/settings", "operator", {"target_soc": 0.9})[0] == 200
    kept = call(api, "GET", "/vehicles/ev0/settings", "alice")[1]
    assert (kept["v2g"], kept["target_soc"], kept["min_soc"]) == (False, 0.9, 0.3)  # what was left out stays
    # a target below the minimum already stored is refused, though the request names only the target
    refused = call(api, "PUT", "/vehicles/ev0/settings", "alice", {"target_soc": 0.2})
    assert refused[1]["error"] == "InvalidSettingsError"
    assert call(api, "PUT", "/vehicles/ev0/settings", "bob", {"v2g": True})[0] == 403
    assert call(api, "GET", "/vehicles/ev0/settings", "bob")[0] == 403
    assert call(api, "GET", "/vehicles/nothing/settings", "operator")[1]["error"] == "NotFoundError"


def test_settings_that_cannot_hold_are_refused_by_name_and_change_nothing(api: Api) -> None:
    assert call(api, "PUT", "/vehicles/ev1/settings", "bob", {"target_soc": 0.7, "v2g": False})[0] == 200
    before = call(api, "GET", "/vehicles/ev1/settings", "bob")[1]
    for bad, error in (
        ({"target_soc": 0.5, "min_soc": 0.6}, "InvalidSettingsError"),
        ({"usual_departure": "25:00"}, "RequestValidationError"),
        ({"time_zone": "Mars/Olympus_Mons"}, "InvalidSettingsError"),
        ({"time_zone": "../../etc/passwd"}, "InvalidSettingsError"),
        ({"target_soc": float("nan")}, None),
        ({"target_soc": 1.5}, "RequestValidationError"),
        ({"v2g": "yes"}, "RequestValidationError"),
        ({"colour": "red"}, "RequestValidationError"),
        ({"next_departure": "tomorrow"}, "RequestValidationError"),
    ):
        headers = {**api.headers("bob"), "Content-Type": "application/json"}
        response = api.client.put("/vehicles/ev1/settings", content=_json(bad), headers=headers)
        assert response.status_code in (400, 422), (bad, response.text)
        if error is not None:
            assert response.json()["error"] == error, (bad, response.text)
    assert call(api, "GET", "/vehicles/ev1/settings", "bob")[1] == before


def _json(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body)  # NaN as the literal NaN: refused before validation


def test_metrics_for_prometheus_count_what_the_database_holds(api: Api) -> None:
    job = api.post("/schedules", {**SCHEDULE, "v2g": True})
    done = api.wait(job)  # type: ignore[arg-type]
    api.wait(api.post("/periods", {"schedule_id": done["result"]["schedule_id"]}))  # type: ignore[arg-type,index]
    response = api.client.get("/metrics", headers=api.headers("auditor"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'v2g_periods{status="claimed"} 1.0' in text
    assert 'v2g_periods{status="disputed"} 0.0' in text  # every state a series, before it happens
    assert 'v2g_field_refusals_total{kind="RegisterBackwardsError"} 0.0' in text
    assert 'v2g_jobs{kind="settle",status="succeeded"} 1.0' in text
    gas = [line for line in text.splitlines() if line.startswith('v2g_gas_used_total{kind="propose"}')]
    assert gas and float(gas[0].split(" ")[1]) > 20_000
    assert "v2g_stations_connected" not in text  # no CSMS in this process
    assert api.client.get("/metrics", headers=api.headers("alice")).status_code == 403
    assert api.client.get("/metrics").status_code == 401
