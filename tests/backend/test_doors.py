"""One day through two doors: `v2g settle` and the API (``POST /schedules`` then ``POST /periods``)
settle the same fleet to the same ledger, with a non-zero sell spread, the fee and the claim batch of the
same settings (``V2G_FEE_BPS``, ``V2G_CLAIM_BATCH``, ``V2G_DATABASE_URL``) reaching both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from backend.api.app import create_app
from backend.api.deps import AppState
from backend.api.security import Role, create_api_key
from backend.cli import app as cli
from backend.config import Settings
from backend.db.models import Period, PeriodEntry, Submission
from backend.platform import Platform
from backend.settlement.pipeline import local_owner_accounts
from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem

DAY = "2023-07-02"
EVS, SEED, SPREAD, FEE, BATCH = 12, 0, 25.0, 50, 3


def _ledger(platform: Platform) -> dict[str, Any]:
    """What an owner and an auditor see of the day: the period, its entries, every owner's statement."""
    with platform.sessions() as session:
        period = session.scalars(select(Period)).one()
        entries = sorted(
            (e.owner_id, e.address, e.amount, e.claimed)
            for e in session.scalars(select(PeriodEntry).where(PeriodEntry.period_id == period.id))
        )
        batches = len(list(session.scalars(select(Submission).where(Submission.kind == "claim_batch"))))
        header = (period.id, period.status, period.root, period.total_credit, period.total_debit)
    statements = {
        owner: [
            (
                line.period_id,
                line.charged_wh,
                line.discharged_wh,
                line.fees,
                line.amount,
                line.paid,
                line.debt_added,
            )
            for line in platform.statement(owner).lines
        ]
        for owner, *_ in entries
    }
    return {"period": header, "entries": entries, "batches": batches, "statements": statements}


def test_a_day_settles_to_the_same_ledger_through_the_cli_and_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("V2G_FEE_BPS", str(FEE))
    monkeypatch.setenv("V2G_CLAIM_BATCH", str(BATCH))

    # the command line: no --db, --fee-bps or batch option, only the settings
    monkeypatch.setenv("V2G_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite'}")
    monkeypatch.setenv("V2G_DATA_DIR", str(tmp_path / "cli-data"))
    args = ["settle", "--date", DAY, "--evs", str(EVS), "--seed", str(SEED), "--sell-spread", str(SPREAD)]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    with Platform.open(
        f"sqlite:///{tmp_path / 'cli.sqlite'}", "eth-tester", data_dir=tmp_path / "cli-data"
    ) as platform:
        by_cli = _ledger(platform)

    # the API: the same fleet, prices and spread stored through its routes, scheduled and settled
    monkeypatch.setenv("V2G_DATABASE_URL", f"sqlite:///{tmp_path / 'api.sqlite'}")
    monkeypatch.setenv("V2G_DATA_DIR", str(tmp_path / "api-data"))
    monkeypatch.setenv("V2G_CHAIN", "eth-tester")
    problem = fleet_problem(DAY, load_prices().eur_mwh, FleetConfig(n_evs=EVS), seed=SEED)
    application = create_app(Settings())
    with TestClient(application) as client:
        state: AppState = application.state.v2g
        with state.sessions.begin() as session:
            headers = {"X-API-Key": create_api_key(session, Role.OPERATOR)}

        def post(path: str, body: object) -> Any:
            response = client.post(path, json=body, headers=headers)
            assert response.status_code < 300, (path, response.text)
            return response.json()

        def wait(job: dict[str, Any]) -> dict[str, Any]:
            state.runner.wait(int(job["id"]))
            body: dict[str, Any] = client.get(f"/jobs/{job['id']}", headers=headers).json()
            assert body["status"] == "succeeded", body
            return body

        # the owners the command line registers by itself on a local chain, registered by the operator
        owners = sorted({v.owner for v in problem.vehicles})
        for owner, account in local_owner_accounts(owners).items():
            post("/owners", {"id": owner, "address": str(account.address)})
        for v in problem.vehicles:
            post(
                "/vehicles",
                {
                    "id": v.id,
                    "owner_id": v.owner,
                    "battery_kwh": v.battery_kwh,
                    "charge_kw": v.charge_kw,
                    "discharge_kw": v.discharge_kw,
                    "soc_min": v.soc_min,
                    "soc_max": v.soc_max,
                    "eta_charge": v.eta_charge,
                    "eta_discharge": v.eta_discharge,
                },
            )
        for s in problem.sessions:
            post(
                "/sessions",
                {
                    "id": s.id,
                    "vehicle_id": s.vehicle_id,
                    "arrival": s.arrival.isoformat(),
                    "departure": s.departure.isoformat(),
                    "arrival_kwh": s.arrival_kwh,
                    "target_kwh": s.target_kwh,
                },
            )
        start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
        hourly = load_prices().window(start, start + timedelta(days=1))
        post(
            "/prices",
            {
                "prices": [
                    {"utc": (start + timedelta(hours=h)).isoformat(), "eur_mwh": float(p)}
                    for h, p in enumerate(hourly)
                ]
            },
        )
        limit = FleetConfig().site_kw_per_ev * EVS
        scheduled = wait(
            post(
                "/schedules",
                {
                    "start": start.isoformat(),
                    "intervals": problem.horizon.intervals,
                    "import_limit_kw": limit,
                    "export_limit_kw": limit,
                    "degradation_eur_kwh": problem.degradation_eur_kwh,
                    "sell_spread_eur_mwh": SPREAD,
                },
            )
        )
        wait(post("/periods", {"schedule_id": scheduled["result"]["schedule_id"]}))
        by_api = _ledger(state.platform)

    assert by_api == by_cli
    # the day has energy both ways, a fee, and its claims went out in batches of V2G_CLAIM_BATCH
    entries = by_cli["entries"]
    assert any(amount > 0 for _, _, amount, _ in entries) and any(amount < 0 for _, _, amount, _ in entries)
    assert by_cli["period"][1] == "claimed" and all(claimed for *_, claimed in entries)
    assert by_cli["batches"] == -(-len(entries) // BATCH)
    assert all(lines and lines[0][3] > 0 for lines in by_cli["statements"].values())
