"""The portal over plain HTTP: sign-in and its cookie, CSRF, redirects that stay on the site, a deleted key
signing its sessions out, the read-only JSON-RPC endpoint, the session secret kept out of source, and the
vendored browser scripts identical to the pinned npm packages."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from backend.api.security import Role, create_api_key, hash_key
from backend.db.models import ApiKey, MeterReading, OcppTransaction, Station
from backend.portal import rpc as rpc_module
from backend.portal.session import COOKIE, SECRET_FILE, session_secret
from tests.portal.conftest import REPO, Portal
from tests.threads import held_elsewhere

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def client(portal: Portal) -> httpx.Client:
    return httpx.Client(base_url=portal.url, timeout=60, follow_redirects=False)


@contextmanager
def signed_in(portal: Portal, key: str) -> Iterator[httpx.Client]:
    with client(portal) as c:
        form = c.get("/")
        token = CSRF.search(form.text)
        assert token, form.text
        response = c.post("/sign-in", data={"api_key": key, "csrf": token.group(1)})
        assert response.status_code == 303, response.text
        yield c


def test_sign_in_cookie_is_signed_httponly_and_strict(portal: Portal) -> None:
    with client(portal) as c:
        form = c.get("/")
        assert form.status_code == 200 and 'name="api_key"' in form.text
        cookie = form.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "script-src 'self'" in form.headers["content-security-policy"]
        token = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
        wrong = c.post("/sign-in", data={"api_key": "v2g_not-a-key", "csrf": token})
        assert wrong.status_code == 401 and "Unknown API key" in wrong.text
        ok = c.post("/sign-in", data={"api_key": portal.keys["auditor"], "csrf": token})
        assert ok.status_code == 303 and ok.headers["location"] == "/portal/auditor"
        assert portal.keys["auditor"] not in ok.headers["set-cookie"]  # the key never goes into the cookie
        # a forged cookie (the payload edited, signature kept) is no session
        value = c.cookies[COOKIE]
        c.cookies.set(COOKIE, "x" + value[1:])
        assert c.get("/portal/auditor").status_code == 303


def test_sign_in_without_the_forms_token_or_from_another_site_is_refused(portal: Portal) -> None:
    with client(portal) as c:
        token = CSRF.search(c.get("/").text).group(1)  # type: ignore[union-attr]
        assert c.post("/sign-in", data={"api_key": portal.keys["operator"]}).status_code == 400
        assert (
            c.post("/sign-in", data={"api_key": portal.keys["operator"], "csrf": "forged"}).status_code == 400
        )
        cross = c.post(
            "/sign-in",
            data={"api_key": portal.keys["operator"], "csrf": token},
            headers={"Origin": "http://evil.example"},
        )
        assert cross.status_code == 400
    with client(portal) as fresh:  # no cookie at all: no token to match
        assert (
            fresh.post("/sign-in", data={"api_key": portal.keys["operator"], "csrf": token}).status_code
            == 400
        )


def test_pages_need_a_sign_in_and_redirects_stay_on_the_site(portal: Portal) -> None:
    with client(portal) as c:
        response = c.get("/portal/operator?schedule=1")
        assert response.status_code == 303
        assert response.headers["location"] == "/?next=%2Fportal%2Foperator%3Fschedule%3D1"
        token = CSRF.search(c.get("/").text).group(1)  # type: ignore[union-attr]
        back = c.post(
            "/sign-in", data={"api_key": portal.keys["operator"], "csrf": token, "next": "/portal/auditor"}
        )
        assert back.headers["location"] == "/portal/auditor"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        with client(portal) as c:
            token = CSRF.search(c.get("/").text).group(1)  # type: ignore[union-attr]
            r = c.post("/sign-in", data={"api_key": portal.keys["operator"], "csrf": token, "next": evil})
            assert r.headers["location"] == "/portal/operator", evil


def test_operator_form_needs_its_token_and_sign_out_ends_the_session(portal: Portal) -> None:
    with signed_in(portal, portal.keys["operator"]) as c:
        page = c.get("/portal/operator")
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        path = f"/portal/periods/{portal.period_id}/settle"
        assert c.post(path).status_code == 403
        assert c.post(path, data={"csrf": "forged"}).status_code == 403
        advanced = c.post(path, data={"csrf": token})
        assert advanced.status_code == 303 and advanced.headers["location"] == "/portal/operator#jobs"
        # a sign-out without the form's token says why, and signs no one out
        refused = c.post("/sign-out", data={"csrf": "forged"})
        assert refused.status_code == 403 and "Not signed out" in refused.text
        assert c.get("/portal/operator").status_code == 200
        copied = c.cookies[COOKIE]
        assert c.post("/sign-out", data={"csrf": token}).status_code == 303
        assert c.get("/portal/operator").status_code == 303  # signed out
    # the cookie as it was before signing out, replayed: the sign-in ended on the server
    with client(portal) as replay:
        replay.cookies.set(COOKIE, copied)
        assert replay.get("/portal/operator").status_code == 303


def test_a_deleted_key_signs_its_sessions_out(portal: Portal) -> None:
    with portal.state.sessions.begin() as session:
        key = create_api_key(session, Role.OWNER, owner_id="alice", label="to delete")
    with signed_in(portal, key) as c:
        assert c.get("/portal/owners/alice").status_code == 200
        with portal.state.sessions.begin() as session:
            session.execute(delete(ApiKey).where(ApiKey.key_hash == hash_key(key)))
        assert c.get("/portal/owners/alice").status_code == 303


def test_the_session_secret_is_kept_in_the_data_directory_not_in_source(portal: Portal) -> None:
    path = portal.data_dir / SECRET_FILE
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 48
    assert session_secret(None, portal.data_dir) == secret  # a restart keeps its sessions
    assert session_secret("s" * 40, portal.data_dir) == "s" * 40  # V2G_SESSION_SECRET wins


def rpc(c: httpx.Client, method: str, params: list[Any]) -> dict[str, Any]:
    body: dict[str, Any] = c.post(
        "/rpc", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    ).json()
    return body


def test_rpc_answers_reads_and_refuses_anything_that_writes(portal: Portal) -> None:
    with client(portal) as c:
        assert int(rpc(c, "eth_chainId", [])["result"], 16) == portal.chain_id
        head = int(rpc(c, "eth_blockNumber", [])["result"], 16)
        block = rpc(c, "eth_getBlockByNumber", [hex(head), False])["result"]
        assert int(block["number"], 16) == head and re.fullmatch(r"0x[0-9a-f]{64}", block["hash"])
        assert len(rpc(c, "eth_getCode", [portal.contract, "latest"])["result"]) > 100
        logs = rpc(c, "eth_getLogs", [{"address": portal.contract, "fromBlock": "0x0", "toBlock": hex(head)}])
        assert logs["result"] and all(log["address"] == portal.contract for log in logs["result"])
        for method, params in (
            ("eth_sendRawTransaction", ["0x00"]),
            ("eth_sendTransaction", [{"to": portal.contract}]),
            ("eth_sign", [portal.contract, "0x00"]),
            ("evm_mine", []),
            ("evm_increaseTime", [10]),
            ("anvil_setBalance", [portal.contract, "0x1"]),
        ):
            error = rpc(c, method, params)["error"]
            assert error["code"] == -32601 and "read-only" in error["message"], method
        assert (
            rpc(c, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": hex(10_000)}])["error"]["code"] == -32005
        )
        assert rpc(c, "eth_getBlockByNumber", ["latest", True])["error"]["code"] == -32602
        batch = c.post(
            "/rpc", json=[{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(3)]
        ).json()
        assert [b["id"] for b in batch] == [0, 1, 2]
        too_many = [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(21)]
        assert c.post("/rpc", json=too_many).json()["error"]["code"] == -32600
        assert c.post("/rpc", content=b"{not json").json()["error"]["code"] == -32700
        assert int(rpc(c, "eth_blockNumber", [])["result"], 16) == head  # nothing was mined


def test_rpc_names_a_busy_chain_instead_of_waiting_out_a_settlement(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc_module, "RPC_WAIT_S", 0.2)
    with held_elsewhere(portal.state.chain_lock), client(portal) as c:
        error = rpc(c, "eth_chainId", [])["error"]
        assert error["code"] == -32000 and error["message"].startswith("ChainBusy:")
        started = time.monotonic()
        batch = c.post(
            "/rpc", json=[{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(20)]
        ).json()
        assert [b["error"]["message"][:9] for b in batch] == ["ChainBusy"] * 20
        assert time.monotonic() - started < 2.0  # one wait for the batch, not one per request
    with client(portal) as c:
        assert int(rpc(c, "eth_chainId", [])["result"], 16) == portal.chain_id


def test_portal_routes_are_not_in_the_apis_openapi(portal: Portal) -> None:
    with client(portal) as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/portal", "/rpc", "/sign-"))] and "/" not in paths


@pytest.mark.skipif(not (REPO / "node_modules" / ".bin" / "esbuild").exists(), reason="npm ci not run")
def test_vendored_scripts_are_the_pinned_npm_packages() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/vendor_portal_assets.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["stale"] == []


def test_a_session_the_meter_reported_shows_its_metered_energy_beside_the_settled(portal: Portal) -> None:
    start = datetime(2023, 7, 2, 10, tzinfo=UTC)
    with portal.state.sessions.begin() as session:
        session.add(Station(id="st-portal", ocpp_version="2.1", can_discharge=True))
        session.flush()
        session.add(
            OcppTransaction(
                station_id="st-portal",
                transaction_id="tx-portal",
                evse_id=1,
                vehicle_id="ev2",
                plug_session_id="s2",
                started_at=start,
            )
        )
        session.add_all(
            MeterReading(
                station_id="st-portal",
                transaction_id="tx-portal",
                seq_no=i,
                measured_at=start + timedelta(hours=i),
                received_at=start + timedelta(hours=i),
                import_wh=11_000 * i,
                export_wh=0,
            )
            for i in range(2)
        )
    with signed_in(portal, portal.keys["alice"]) as c:
        page = c.get("/portal/owners/alice/sessions/s2").text
        assert "Metered charge" in page and 'title="2,750 Wh"' in page  # 11 kWh over 4 intervals
        assert "Metered charge" not in c.get("/portal/owners/alice/sessions/s0").text
        csv_rows = c.get("/portal/owners/alice/trades.csv").text.splitlines()
        assert csv_rows[0].split(",")[6:8] == ["metered_import_wh", "metered_export_wh"]
        assert any(r.startswith("s2,") and ",2750,0," in r for r in csv_rows)


def test_operator_page_shows_stations_online_once_live_operations_registered_them(portal: Portal) -> None:
    with portal.state.sessions.begin() as session:
        session.add(Station(id="st-live", ocpp_version="2.0.1", last_seen=datetime.now(UTC), boots=1))
    with signed_in(portal, portal.keys["operator"]) as c:
        page = c.get("/portal/operator").text
    assert re.search(r"<strong>1 of \d+ stations online</strong>", page), page
    assert "st-live" in page and "✔ online" in page


def test_bad_addresses_answer_a_portal_page_with_the_errors_name_and_the_api_keeps_json(
    portal: Portal,
) -> None:
    with signed_in(portal, portal.keys["auditor"]) as c:
        bad = c.get("/portal/verify", params={"period": "", "entry": ""})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
        assert "RequestValidationError: period:" in bad.text and 'href="/"' in bad.text
        unknown = c.get("/portal/no-such-page")
        assert unknown.status_code == 404 and "NotFoundError: /portal/no-such-page" in unknown.text
        browsing = c.get("/no-such-page", headers={"Accept": "text/html,application/xhtml+xml"})
        assert browsing.status_code == 404 and browsing.headers["content-type"].startswith("text/html")
    with client(portal) as api:  # a program asking the API still gets its documented JSON
        missing = api.get("/no-such-route", headers={"X-API-Key": portal.keys["auditor"]})
        assert missing.status_code == 404 and missing.json()["error"] == "NotFoundError"
        invalid = api.get("/jobs", params={"limit": "many"}, headers={"X-API-Key": portal.keys["operator"]})
        assert invalid.status_code == 422 and invalid.json()["error"] == "RequestValidationError"


def test_operators_reach_every_owners_pages_from_their_own(portal: Portal) -> None:
    with signed_in(portal, portal.keys["operator"]) as c:
        operator = c.get("/portal/operator").text
        for owner in ("alice", "bob"):
            assert f'<a href="/portal/owners/{owner}">{owner}</a>' in operator
            assert c.get(f"/portal/owners/{owner}").status_code == 200
        period = c.get(f"/portal/periods/{portal.period_id}").text
        assert '<a href="/portal/owners/alice">alice</a>' in period


def test_an_owner_sees_a_live_charge_without_a_booking_before_it_is_settled(portal: Portal) -> None:
    """A car that plugs in without a booking (live operations): its owner's page lists the transaction
    as the settlement will name it (station/transaction), with what the meter measured so far."""
    start = datetime(2023, 7, 2, 14, tzinfo=UTC)
    with portal.state.sessions.begin() as session:
        session.add(Station(id="st-walkin", ocpp_version="2.1", can_discharge=True))
        session.flush()
        session.add(
            OcppTransaction(
                station_id="st-walkin",
                transaction_id="tx-walkin",
                evse_id=1,
                vehicle_id="ev0",
                started_at=start,
            )
        )
        session.add_all(
            MeterReading(
                station_id="st-walkin",
                transaction_id="tx-walkin",
                seq_no=i,
                measured_at=start + timedelta(minutes=15 * i),
                received_at=start + timedelta(minutes=15 * i),
                import_wh=5_000 + 2_750 * i,
                export_wh=0,
            )
            for i in range(3)
        )
    with signed_in(portal, portal.keys["alice"]) as c:
        home = c.get("/portal/owners/alice").text
        assert "st-walkin/tx-walkin</a>" in home and 'title="5,500 Wh"' in home
        detail = c.get("/portal/owners/alice/sessions/st-walkin/tx-walkin")
        assert detail.status_code == 200 and "Metered charge" in detail.text
    with signed_in(portal, portal.keys["bob"]) as c:  # and nobody else's page
        assert "st-walkin" not in c.get("/portal/owners/bob").text


def test_a_claimed_period_says_its_challenge_window_is_closed(portal: Portal) -> None:
    with signed_in(portal, portal.keys["auditor"]) as c:
        page = c.get("/portal/auditor").text
    row = page[page.index(f'<a href="/portal/periods/{portal.period_id}">') :]
    row = row[: row.index("</tr>")]
    assert "claimed" in row and "<td>closed" in row and "chain time" in row and "open until" not in row


def test_an_owner_sees_their_other_sign_ins_and_ends_one(portal: Portal) -> None:
    with signed_in(portal, portal.keys["bob"]) as phone, signed_in(portal, portal.keys["bob"]) as laptop:
        listing = laptop.get("/portal/sign-ins").text
        handles = re.findall(r"<code>([0-9a-f]{16})</code>", listing)
        assert len(handles) >= 2 and listing.count("(this one)") == 1
        mine = re.search(r"<code>([0-9a-f]{16})</code> <strong>\(this one\)</strong>", listing)
        assert mine is not None
        other = next(h for h in handles if h != mine.group(1))
        token = CSRF.search(listing).group(1)  # type: ignore[union-attr]
        assert laptop.post(f"/portal/sign-ins/{other}/end", data={"csrf": "forged"}).status_code == 403
        ended = laptop.post(f"/portal/sign-ins/{other}/end", data={"csrf": token})
        assert ended.status_code == 303 and ended.headers["location"] == "/portal/sign-ins"
        # the phone's sign-in (the other one) is over; the laptop's goes on
        assert phone.get("/portal/owners/bob").status_code == 303
        assert laptop.get("/portal/owners/bob").status_code == 200
        assert laptop.post(f"/portal/sign-ins/{other}/end", data={"csrf": token}).status_code == 404
    with signed_in(portal, portal.keys["alice"]) as alice:  # another owner's sign-ins are not listed
        assert all(h not in alice.get("/portal/sign-ins").text for h in handles)


def test_the_readme_publishes_the_scripts_integrity_hashes() -> None:
    from backend.portal.routes import OWN_SCRIPTS, VENDOR, integrity

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in OWN_SCRIPTS + VENDOR:
        path = "/portal/static/" + ("vendor/" if name in VENDOR else "") + name
        assert f"| `{path}` | `{integrity(name)}` |" in readme, f"README: update the hash of {path}"


def test_the_session_page_shows_the_plan_against_the_owners_settings(portal: Portal) -> None:
    from backend.app.vehicles import update_settings
    from backend.db.models import Vehicle

    def promises(c: httpx.Client) -> list[str]:
        page = c.get("/portal/owners/alice/sessions/s0").text
        table = page[page.index('data-testid="promises"') :]
        table = table[: table.index("</table>")]
        return [" ".join(re.sub(r"<[^>]+>", " ", r).split()) for r in table.split("<tr>")[2:]]

    def word(**changes: object) -> None:
        with portal.state.sessions.begin() as db:
            update_settings(db, db.get_one(Vehicle, "ev0"), changes)

    try:
        word(target_soc=1.0, min_soc=0.2, v2g=True)
        with signed_in(portal, portal.keys["alice"]) as c:
            rows = promises(c)
            assert rows[0].startswith("full to 100 %") and rows[0].endswith(
                "✖ no"
            )  # planned for 40 of 60 kWh
            # the plan (made before these settings) gave back down to the car's own 10 %
            assert rows[1] == "keep at least 20 % lowest 10 % ✖ no"
            assert rows[2].startswith("V2G allowed")
            word(target_soc=0.5, min_soc=0.1)
            rows = promises(c)
            assert rows[0].startswith("full to 50 %") and rows[0].endswith("✔ yes")
            assert rows[1] == "keep at least 10 % lowest 10 % ✔ yes"
    finally:
        with portal.state.sessions.begin() as db:
            from backend.db.models import VehicleSettings

            db.query(VehicleSettings).filter(VehicleSettings.vehicle_id == "ev0").delete()
