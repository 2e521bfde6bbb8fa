"""The real app on the embedded chain and a temporary SQLite file, with one key per role."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from backend.api.app import create_app
from backend.api.deps import AppState
from backend.api.security import Role, create_api_key
from backend.cli import app as cli
from backend.config import Settings
from scheduler.datasets import load_prices

DAY = datetime(2023, 7, 2, tzinfo=UTC)


@dataclass
class Api:
    client: httpx.Client  # a TestClient, or an httpx.Client on a served app
    state: AppState
    keys: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[who]}

    def post(self, path: str, body: object, who: str = "operator") -> object:
        response = self.client.post(path, json=body, headers=self.headers(who))
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()

    def wait(self, job: dict[str, object]) -> dict[str, object]:
        self.state.runner.wait(int(job["id"]))  # type: ignore[call-overload]
        response = self.client.get(f"/jobs/{job['id']}", headers=self.headers("operator"))
        body: dict[str, object] = response.json()
        assert body["status"] == "succeeded", body
        return body


def seed(api: Api, n_vehicles: int = 4) -> None:
    """Two owners, ``n_vehicles`` vehicles (half V2G), one plug-in each, a day of real prices."""
    for o in ("alice", "bob"):
        api.post("/owners", {"id": o, "address": "0x" + (("a1" if o == "alice" else "b0") * 20)})
    for i in range(n_vehicles):
        owner = "alice" if i % 2 == 0 else "bob"
        api.post(
            "/vehicles",
            {
                "id": f"ev{i}",
                "owner_id": owner,
                "battery_kwh": 60,
                "charge_kw": 11,
                "discharge_kw": 11 if i < n_vehicles // 2 else 0,
                "soc_min": 0.1,
            },
        )
        api.post(
            "/sessions",
            {
                "id": f"s{i}",
                "vehicle_id": f"ev{i}",
                "arrival": (DAY + timedelta(hours=6 + i)).isoformat(),
                "departure": (DAY + timedelta(hours=20)).isoformat(),
                "arrival_kwh": 20,
                "target_kwh": 40,
            },
        )
    api.post("/escrow/float", {"amount": str(1_000 * 10**6)})
    for o in ("alice", "bob"):
        api.post("/escrow/deposits", {"owner_id": o, "amount": str(50 * 10**6)})
    prices = load_prices().window(DAY, DAY + timedelta(days=1))
    hours = [(DAY + timedelta(hours=h)).isoformat() for h in range(len(prices))]
    api.post(
        "/prices", {"prices": [{"utc": t, "eur_mwh": float(p)} for t, p in zip(hours, prices, strict=True)]}
    )


def make_api(tmp_path: Path, **settings: object) -> Generator[Api, None, None]:
    config = Settings.model_validate(
        {"database_url": f"sqlite:///{tmp_path / 'api.sqlite'}", "chain": "eth-tester", **settings}
    )
    app = create_app(config)
    with TestClient(app) as client:
        state: AppState = app.state.v2g
        with state.sessions.begin() as session:
            keys = {
                "operator": create_api_key(session, Role.OPERATOR),
                "auditor": create_api_key(session, Role.AUDITOR),
            }
        api = Api(client, state, keys)
        seed(api)
        with state.sessions.begin() as session:
            api.keys["alice"] = create_api_key(session, Role.OWNER, owner_id="alice")
            api.keys["bob"] = create_api_key(session, Role.OWNER, owner_id="bob")
        yield api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path)


SCHEDULE = {"start": DAY.isoformat(), "intervals": 96, "import_limit_kw": 30, "export_limit_kw": 30}


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn server on a free loopback port, in a thread of this process; stopped
    (lifespan shut down, thread joined) on exit. Yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def settings_for(tmp_path: Path, **settings: object) -> Settings:
    return Settings.model_validate(
        {"database_url": f"sqlite:///{tmp_path / 'api.sqlite'}", "chain": "eth-tester", **settings}
    )


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Commands run in this process (no interpreter start per command), in ``tmp_path`` as a new user's
    working directory: its ``v2g.sqlite`` and ``.v2g`` data directory."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("V2G_")]:
        monkeypatch.delenv(name)
    return tmp_path


def command(*args: str, code: int = 0) -> str:
    """``v2g ARGS`` in this process; its stdout (``code``: the exit code it must end with)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output + (result.stderr if code == 0 else "")
    return result.stdout if code == 0 else result.stderr
