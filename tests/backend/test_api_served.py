"""The app under a real uvicorn server (a thread of this process, stopped after each test): concurrent
plug-ins of one vehicle, and a 500 that leaves the keep-alive connection usable."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from backend.api.app import create_app
from backend.api.deps import AppState
from backend.api.security import Role, create_api_key
from backend.db.models import PlugSession
from tests.backend.conftest import served, settings_for

N = 20


@dataclass
class Served:
    app: FastAPI
    url: str
    state: AppState
    key: str


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    app = create_app(settings_for(tmp_path))

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("a bug in a route")

    with served(app) as url:
        state: AppState = app.state.v2g
        with state.sessions.begin() as session:
            key = create_api_key(session, Role.OPERATOR)
        with httpx.Client(base_url=url, headers={"X-API-Key": key}) as client:
            for path, body in (
                ("/owners", {"id": "alice", "address": "0x" + "a1" * 20}),
                ("/vehicles", {"id": "ev0", "owner_id": "alice", "battery_kwh": 60, "charge_kw": 11}),
            ):
                assert client.post(path, json=body).status_code == 201
        yield Served(app, url, state, key)


def test_concurrent_overlapping_plug_ins_store_exactly_one(server: Served) -> None:
    """20 requests at once, each on its own connection, for overlapping plug-ins of one vehicle: the
    database refuses all but one (409 OverlappingSessionsError), whatever the interleaving."""
    barrier = threading.Barrier(N)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def plug_in(i: int) -> None:
        body = {
            "id": f"race-{i}",
            "vehicle_id": "ev0",
            "arrival": f"2023-07-02T{i % 10:02d}:00:00Z",  # every pair overlaps 10:00-12:00
            "departure": f"2023-07-02T{12 + i % 10:02d}:00:00Z",
            "arrival_kwh": 10,
            "target_kwh": 20,
        }
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=60) as client:
            barrier.wait()
            response = client.post("/sessions", json=body)
        with lock:
            answers.append((response.status_code, response.json().get("error", "")))

    threads = [threading.Thread(target=plug_in, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert Counter(answers) == {(201, ""): 1, (409, "OverlappingSessionsError"): N - 1}, answers
    with server.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PlugSession)) == 1


def test_a_500_is_a_json_body_and_the_connection_stays_usable(server: Served) -> None:
    """Starlette re-raises after its 500, and uvicorn then closes the connection; the API's catch-all
    answers a documented 500 instead, and the next request on the same connection is answered."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        headers = {"X-API-Key": server.key}
        connection.request("GET", "/boom", headers=headers)
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 500
        assert body["error"] == "InternalServerError" and "logged as" in body["detail"]
        assert "a bug" not in body["detail"]  # the cause is logged, not told
        sock = connection.sock
        for path in ("/owners", "/boom", "/vehicles/ev0"):
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status in (200, 500)
        assert connection.sock is sock  # the same connection all along
    finally:
        connection.close()
