"""Bad input, one test per class: each gets its documented 4xx and error name, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from sqlalchemy import func, select

from backend.api.errors import ECHO_CHARS
from backend.db.models import DrEventRow, Owner, PlugSession, PricePoint, SiteRow, Vehicle
from tests.backend.conftest import SCHEDULE, Api, make_api

SESSION = {
    "id": "n1",
    "vehicle_id": "ev0",
    "arrival": "2023-07-04T01:00:00Z",
    "departure": "2023-07-04T02:00:00Z",
    "arrival_kwh": 1,
    "target_kwh": 2,
}
VEHICLE = {"id": "evn", "owner_id": "alice", "battery_kwh": 40, "charge_kw": 7}
DR_EVENT = {"id": "drn", "start": "2030-01-01T00:00:00Z", "duration_s": 900, "import_limit_kw": 5}
PRICES = {"prices": [{"utc": "2030-01-01T00:00:00Z", "eur_mwh": 1}]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One seeded app for the tests that change nothing (each checks that it did not)."""
    yield from make_api(tmp_path_factory.mktemp("errors"))


def stored(api: Api) -> tuple[int, ...]:
    with api.state.sessions() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Owner, Vehicle, PlugSession, PricePoint, DrEventRow)
        )


def refused(api: Api, method: str, path: str, status: int, error: str, **kwargs: Any) -> dict[str, Any]:
    """Send, expect ``status`` with ``{"error": error, ...}``, and nothing stored changed."""
    before = stored(api)
    headers = {**api.headers("operator"), **kwargs.pop("headers", {})}
    response = api.client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, (method, path, response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert stored(api) == before
    return body


def raw(text: str) -> dict[str, Any]:
    return {"content": text, "headers": {"Content-Type": "application/json"}}


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_non_finite_numbers_get_an_encodable_422(api: Api, value: str) -> None:
    """Python's JSON parser reads these as floats; they are refused and echoed as strings, so the 422
    itself can always be encoded (it used to be a 500)."""
    vehicle = json.dumps(VEHICLE).replace('"battery_kwh": 40', f'"battery_kwh": {value}')
    body = refused(api, "POST", "/vehicles", 422, "RequestValidationError", **raw(vehicle))
    issue = body["detail"][0]
    assert issue["loc"] == ["body", "battery_kwh"]
    assert issue["input"] in ("NaN", "Infinity", "-Infinity")
    prices = f'{{"prices": [{{"utc": "2030-01-01T00:00:00Z", "eur_mwh": {value}}}]}}'
    refused(api, "POST", "/prices", 422, "RequestValidationError", **raw(prices))
    session = json.dumps(SESSION).replace('"target_kwh": 2', f'"target_kwh": {value}')
    refused(api, "POST", "/sessions", 422, "RequestValidationError", **raw(session))


@pytest.mark.parametrize(
    "query",
    [
        "offset=9223372036854775808",
        "offset=9007199254740992",
        "offset=-1",
        "limit=0",
        "limit=10001",
        "limit=1e3",
        "offset=" + "9" * 5000,
    ],
)
def test_paging_is_bounded(api: Api, query: str) -> None:
    """An offset past 2^53 - 1 used to reach SQLite and overflow (500)."""
    for path in ("/sessions", "/owners", "/vehicles", "/dr-events", "/periods", "/periods/1/entries"):
        body = refused(api, "GET", f"{path}?{query}", 422, "RequestValidationError")
        assert body["detail"][0]["loc"][0] == "query"
        assert len(json.dumps(body)) < 2_000
    refused(api, "GET", "/jobs/9223372036854775808", 422, "RequestValidationError")


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T22:00:00-05:00",
        "1999-12-31T23:00:00Z",
        "2100-01-01T00:00:00Z",
        "2023-07-02T00:00:00",
        "2023-02-30T00:00:00Z",
        "2023-07-02 00:00:00Z",
        "2023-07-02T00:00:00.1234567Z",
        1688256000,
        None,
    ],
)
def test_timestamps_outside_the_documented_range_or_form_get_422(api: Api, stamp: object) -> None:
    """Dates at the calendar's edges used to overflow when converted to UTC (500). Timestamps are RFC 3339
    with an offset and a year 2000-2099 as written, on sessions, prices, DR events and schedules."""
    for path, body, field in (
        ("/sessions", SESSION, "arrival"),
        ("/sessions", SESSION, "departure"),
        ("/prices", None, "utc"),
        ("/dr-events", DR_EVENT, "start"),
        ("/schedules", SCHEDULE, "start"),
    ):
        sent = {"prices": [{"utc": stamp, "eur_mwh": 1}]} if body is None else {**body, field: stamp}
        response = refused(api, "POST", path, 422, "RequestValidationError", json=sent)
        assert response["detail"][0]["loc"][-1] == field


@pytest.mark.parametrize(
    ("path", "body", "field", "value"),
    [
        ("/vehicles", VEHICLE, "battery_kwh", False),
        ("/vehicles", VEHICLE, "charge_kw", True),
        ("/vehicles", VEHICLE, "charge_kw", "7"),
        ("/sessions", SESSION, "arrival_kwh", False),
        ("/dr-events", DR_EVENT, "duration_s", True),
        ("/dr-events", DR_EVENT, "duration_s", "900"),
        ("/dr-events", DR_EVENT, "duration_s", 900.5),
        ("/schedules", SCHEDULE, "intervals", "96"),
        ("/schedules", SCHEDULE, "interval_minutes", True),
        ("/schedules", SCHEDULE, "v2g", 1),
        ("/schedules", SCHEDULE, "v2g", "true"),
        ("/periods", {"schedule_id": 1}, "schedule_id", False),
        ("/periods/1/claims", {"entry_id": 0}, "entry_id", False),
        ("/escrow/float", {"amount": "5"}, "amount", 5),
    ],
)
def test_booleans_and_strings_are_not_numbers(
    api: Api, path: str, body: dict[str, Any], field: str, value: object
) -> None:
    """``false`` used to be accepted as 0. Numbers, integers, booleans and strings are of their JSON type."""
    response = refused(api, "POST", path, 422, "RequestValidationError", json={**body, field: value})
    assert response["detail"][0]["loc"] == ["body", field]


def test_integral_floats_are_integers(api: Api) -> None:
    """JSON Schema's ``integer`` includes 900.0: what the document calls valid is accepted."""
    response = api.client.post(
        "/dr-events",
        json={**DR_EVENT, "id": "dr-float", "duration_s": 900.0},
        headers=api.headers("operator"),
    )
    assert response.status_code == 201, response.text
    assert response.json()["duration_s"] == 900


def test_a_dr_event_for_an_unknown_site_gets_422_and_is_not_stored(api: Api) -> None:
    body = refused(
        api, "POST", "/dr-events", 422, "UnknownSiteError", json={**DR_EVENT, "site_id": "nowhere"}
    )
    assert body["detail"][0]["msg"] == "site_id nowhere: no such site (v2g sites import)"
    with api.state.sessions.begin() as db:
        db.add(SiteRow(id="depot", import_limit_kw=100.0, export_limit_kw=50.0))
    response = api.client.post(
        "/dr-events", json={**DR_EVENT, "id": "dr-site", "site_id": "depot"}, headers=api.headers("operator")
    )
    assert response.status_code == 201, response.text
    assert response.json()["site_id"] == "depot"
    with api.state.sessions() as db:
        row = db.get(DrEventRow, "dr-site")
        assert row is not None and row.site_id == "depot"


def test_a_body_that_is_not_json_gets_400(api: Api) -> None:
    deep, huge = "[" * 200_000 + "]" * 200_000, '{"id": ' + "1" * 5_000 + "}"  # recursion, int digits
    for text in ("{not json", '{"id": "x",', "\x00", '{"a": 1}{"b": 2}', deep, huge):
        body = refused(api, "POST", "/owners", 400, "MalformedBodyError", **raw(text))
        assert len(json.dumps(body)) < 500


def test_a_body_nested_too_deep_gets_400_and_the_server_survives(api: Api) -> None:
    """py-evm raises Python's recursion limit to 100,000: parsing 200,000 nested arrays overflowed the C
    stack and killed the server (a segmentation fault). Bodies nest at most 32 deep."""
    for depth in (33, 200_000, 500_000):
        body = refused(api, "POST", "/sessions", 400, "MalformedBodyError", **raw("[" * depth + "]" * depth))
        assert "deeper than 32" in body["detail"]
    nested = json.dumps({**SESSION, "id": {"a": [[[[[[[[[[1]]]]]]]]]]}})  # 12 deep: read, then refused
    refused(api, "POST", "/sessions", 422, "RequestValidationError", **raw(nested))
    assert api.client.get("/health").status_code == 200


def test_a_body_over_the_limit_gets_413_before_it_is_read(api: Api) -> None:
    big = json.dumps({**VEHICLE, "id": "x" * (2 * 1024 * 1024)})
    refused(api, "POST", "/vehicles", 413, "RequestTooLargeError", **raw(big))

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"id": "'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"}'

    json_type = {"Content-Type": "application/json"}
    refused(api, "POST", "/owners", 413, "RequestTooLargeError", content=chunks(), headers=json_type)


def test_a_long_invalid_id_is_not_echoed_back_whole(api: Api) -> None:
    long_id = "!" * 900_000
    body = refused(api, "POST", "/sessions", 422, "RequestValidationError", json={**SESSION, "id": long_id})
    text = json.dumps(body)
    assert len(text) < 2_000, len(text)
    echoed = body["detail"][0]["input"]
    assert echoed.startswith("!" * ECHO_CHARS) and "900000 characters" in echoed
    body = refused(api, "POST", "/owners", 422, "RequestValidationError", json={"id": "a", "x" * 10_000: 1})
    assert len(json.dumps(body)) < 2_000
    body = refused(api, "GET", "/vehicles/" + "v" * 5_000, 422, "RequestValidationError")
    assert len(json.dumps(body)) < 2_000


def test_ownership_is_checked_before_existence(api: Api) -> None:
    """An owner key gets the same 403 for another owner's data whether it exists or not."""
    alice = api.headers("alice")
    for existing, unknown in (
        ("/audit/statements/bob", "/audit/statements/nobody-here"),
        ("/escrow/balances/bob", "/escrow/balances/nobody-here"),
        ("/vehicles/ev1", "/vehicles/no-such-vehicle"),
        ("/sessions/s1", "/sessions/no-such-session"),
    ):
        answers = [api.client.get(path, headers=alice) for path in (existing, unknown)]
        assert [r.status_code for r in answers] == [403, 403], [r.text for r in answers]
        assert answers[0].json()["error"] == answers[1].json()["error"] == "ForbiddenError"
        assert answers[0].json()["detail"] == answers[1].json()["detail"]
    for path in ("/audit/proofs/1/0", "/audit/proofs/99999999/0"):
        response = api.client.get(path, headers=alice)
        assert (response.status_code, response.json()["error"]) == (403, "ForbiddenError")
    response = api.client.post("/periods/99999999/claims", json={"entry_id": 0}, headers=alice)
    assert (response.status_code, response.json()["error"]) == (403, "ForbiddenError")
    # the owner's own data, and the operator's 404 for what does not exist
    assert api.client.get("/audit/statements/alice", headers=alice).status_code == 200
    assert api.client.get("/sessions/s0", headers=alice).status_code == 200
    response = api.client.get("/audit/statements/nobody-here", headers=api.headers("operator"))
    assert (response.status_code, response.json()["error"]) == (404, "NotFoundError")


def test_addresses_are_checked(api: Api) -> None:
    lower = "0x52908400098527886e0f7030069857d2e4169ee7"
    checksummed = "0x52908400098527886E0F7030069857D2E4169EE7"  # the EIP-55 test vector
    wrong = "0x52908400098527886E0F7030069857D2E4169Ee7"  # one letter's case changed
    refused(api, "POST", "/owners", 422, "InvalidAddressError", json={"id": "c1", "address": wrong})
    refused(api, "POST", "/owners", 422, "InvalidAddressError", json={"id": "c1", "address": "0x" + "0" * 40})
    record = api.state.record
    for system in (
        record.settler,
        record.admin,
        record.meter,
        record.auditor,
        record.token,
        record.settlement,
    ):
        refused(
            api, "POST", "/owners", 409, "SystemAddressError", json={"id": "c1", "address": system.lower()}
        )
    refused(api, "POST", "/owners", 422, "RequestValidationError", json={"id": "c1", "address": "0x1234"})
    created = api.client.post("/owners", json={"id": "c1", "address": lower}, headers=api.headers("operator"))
    assert created.status_code == 201 and created.json()["address"] == checksummed
    refused(api, "POST", "/owners", 409, "AddressInUseError", json={"id": "c2", "address": checksummed})
    refused(api, "POST", "/owners", 409, "AlreadyExistsError", json={"id": "c1", "address": "0x" + "d4" * 20})


def test_an_unsupported_method_gets_405_with_every_allowed_method(api: Api) -> None:
    body = refused(api, "PUT", "/sessions", 405, "MethodNotAllowedError")
    assert body["detail"]
    response = api.client.request("PATCH", "/sessions/s0", headers=api.headers("operator"))
    assert response.headers["allow"] == "DELETE, GET"
    refused(api, "GET", "/no/such/route", 404, "NotFoundError")


def test_missing_or_unknown_keys_get_401_with_a_name(api: Api) -> None:
    for headers, name in (({}, "MissingApiKeyError"), ({"X-API-Key": "v2g_nope"}, "UnknownApiKeyError")):
        response = api.client.get("/owners", headers=headers)
        assert (response.status_code, response.json()["error"]) == (401, name)
        assert response.headers["www-authenticate"] == "ApiKey"
    response = api.client.post(
        "/owners", json={"id": "z", "address": "0x" + "e5" * 20}, headers=api.headers("bob")
    )
    assert (response.status_code, response.json()["error"]) == (403, "ForbiddenError")


def walk(node: object, path: str = "") -> Iterator[tuple[str, str, object]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def test_openapi_bounds_are_json_schema_and_every_status_is_documented(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    leaked = [(p, k) for p, k, _ in walk(doc) if k in ("gt", "ge", "lt", "le", "_names")]
    assert not leaked, leaked
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            expected = {"413", "500"}
            if operation.get("security"):
                expected |= {"401", "403"}
            if "requestBody" in operation:
                expected |= {"400", "409", "422"}
            if "{" in path:
                expected |= {"404", "422"}
            assert expected <= statuses, (method, path, sorted(expected - statuses))
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["allOf"] == [{"$ref": "#/components/schemas/ErrorPublic"}], (method, path)

    def validator(name: str) -> Any:
        root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        return jsonschema_rs.Draft202012Validator(root, validate_formats=True)

    # a client validating against the document accepts valid requests and refuses what the API refuses
    vehicle = validator("VehicleCreate")
    assert vehicle.is_valid(VEHICLE)
    for bad in ({"battery_kwh": 0}, {"charge_kw": 1000.5}, {"soc_min": -0.1}, {"battery_kwh": False}):
        assert not vehicle.is_valid({**VEHICLE, **bad}), bad
    session = validator("SessionCreate")
    assert session.is_valid(SESSION)
    assert not session.is_valid({**SESSION, "arrival": "0001-01-01T00:00:00+01:00"})
    assert validator("ScheduleCreate").is_valid({**SCHEDULE, "interval_minutes": 15.0})
    assert not validator("ScheduleCreate").is_valid({**SCHEDULE, "interval_minutes": 7})
    assert validator("ErrorPublic").is_valid({"error": "NotFoundError", "detail": "no owner x"})


def test_every_response_of_a_bad_request_matches_the_document(tmp_path: Path) -> None:
    """The error bodies above are what the document says (``error`` names included)."""
    for api in make_api(tmp_path):
        doc = api.client.get("/openapi.json").json()
        responses = doc["paths"]["/sessions"]["post"]["responses"]
        root = {**responses["409"]["content"]["application/json"]["schema"], "components": doc["components"]}
        conflict = jsonschema_rs.Draft202012Validator(root)
        overlap = {
            **SESSION,
            "id": "o1",
            "arrival": "2023-07-02T07:00:00Z",
            "departure": "2023-07-02T08:00:00Z",
        }
        response = api.client.post("/sessions", json=overlap, headers=api.headers("operator"))
        assert response.status_code == 409 and response.json()["error"] == "OverlappingSessionsError"
        assert conflict.is_valid(response.json())
        assert not conflict.is_valid({"error": "SomethingUndocumented", "detail": "x"})


def test_a_chain_that_falls_behind_the_database_while_serving_gets_503(api: Api) -> None:
    """The chain is checked again while the server runs: once the database holds a transaction the chain
    does not (a chain that lost its last blocks), every route that shows chain-derived state answers 503
    ChainMismatchError instead of the database's "claimed"; routes of the database alone still answer."""
    from datetime import UTC, datetime

    from backend.db.models import Deployment, Period, Submission

    api.state.chain_check_every_s = 0.0
    operator = api.headers("operator")
    assert api.client.get("/periods", headers=operator).status_code == 200
    head = api.state.chain.w3.eth.block_number
    with api.state.sessions.begin() as session:
        deployment = session.scalars(select(Deployment)).one()
        day = datetime(2023, 7, 2, tzinfo=UTC)
        session.add(
            Period(
                id=20230702,
                deployment_id=deployment.id,
                starts_at=day,
                ends_at=day,
                status="claimed",
                root="0x" + "11" * 32,
                total_credit=0,
                total_debit=0,
                entry_count=0,
            )
        )
        session.flush()
        session.add(
            Submission(
                period_id=20230702,
                kind="propose",
                sender="0x" + "22" * 20,
                nonce=0,
                tx_hash="0x" + "33" * 32,
                raw_tx="0x",
                status="mined",
                block_number=head + 5,
            )
        )
    for path in (
        "/periods",
        "/periods/20230702",
        "/audit/reconciliation",
        "/audit/statements/alice",
        "/escrow/balances/alice",
    ):
        answer = api.client.get(path, headers=operator)
        assert (answer.status_code, answer.json()["error"]) == (503, "ChainMismatchError"), (
            path,
            answer.text,
        )
        assert "the chain lost blocks" in answer.json()["detail"]
    assert api.client.get("/owners", headers=operator).status_code == 200
    health = api.client.get("/health").json()
    assert health["status"] == "degraded" and "lost blocks" in health["problems"][0]
