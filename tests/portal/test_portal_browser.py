"""The portal in a real browser (Debian's Chromium through Playwright): each role's journey, the
verification of an entry against the chain in the browser (and a tampered one rejected), an owner kept
out of another owner's data, phone width, and a screenshot of every page (``out/portal-screenshots/``)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from backend.db.models import PeriodEntry
from tests.portal.conftest import REPO, Portal, shot, sign_in

EMBEDDED_CHAIN_ID = 131277322940537


def entry_of(portal: Portal, owner: str) -> PeriodEntry:
    with portal.state.sessions() as session:
        return session.scalars(
            select(PeriodEntry).where(
                PeriodEntry.period_id == portal.period_id, PeriodEntry.owner_id == owner
            )
        ).one()


def verified(page: Page, portal: Portal) -> str:
    result = page.locator("#verify-result")
    expect(result).to_have_attribute("data-outcome", re.compile("verified|failed"), timeout=30_000)
    return result.inner_text()


def test_owner_journey_statement_session_csv_and_verification(page: Page, portal: Portal) -> None:
    sign_in(page, portal, "alice")
    expect(page).to_have_url(portal.url + "/portal/owners/alice")
    expect(page.get_by_role("heading", name="alice", exact=True)).to_be_visible()
    # escrow read from the contract: EUR shown, base units on hover
    balance = page.get_by_test_id("escrow-balance").locator(".money")
    expect(balance).to_have_attribute("title", re.compile(r"base units"))
    # what a new session is authorised against (the CSMS's rule): free = balance - notice - exposure
    expect(page.get_by_test_id("escrow-free").locator(".money")).to_have_attribute(
        "title", re.compile(r"base units")
    )
    statement = page.get_by_test_id("statement")
    expect(statement).to_contain_text(str(portal.period_id))
    expect(statement).to_contain_text("claimed")
    expect(page.get_by_test_id("vehicles")).to_contain_text("ev0")
    expect(page.get_by_test_id("vehicles")).not_to_contain_text("ev1")  # bob's
    # times in the viewer's zone (Europe/Amsterdam), UTC on hover
    first_time = page.get_by_test_id("sessions").locator("time").first
    expect(first_time).to_have_attribute("title", re.compile(r"UTC$"))
    expect(first_time).to_contain_text(re.compile(r"CEST|GMT\+2"))
    shot(page, "owner-home")

    page.get_by_role("link", name="s0").click()
    expect(page.get_by_role("heading", name="Session s0")).to_be_visible()
    expect(page.locator("canvas#session-chart")).to_have_attribute("data-drawn", "true")
    rows = page.get_by_test_id("intervals").locator("tbody tr")
    assert rows.count() > 0
    expect(page.get_by_text("No meter readings are recorded for this session yet")).to_be_visible()
    expect(page.get_by_test_id("intervals")).to_contain_text("Charge (settled)")
    shot(page, "owner-session")

    csv = page.request.get(portal.url + "/portal/owners/alice/statement.csv")
    assert csv.ok and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text().splitlines()
    assert lines[0].startswith("owner_id,address,period_id") and f",{portal.period_id}," in lines[1]
    trades = page.request.get(portal.url + "/portal/owners/alice/trades.csv").text().splitlines()
    assert len(trades) > 1 and all(",s0," not in t or t.startswith("s0,") for t in trades[1:])

    page.goto(portal.url + "/portal/owners/alice")
    page.get_by_role("link", name=re.compile(r"^Verify entry")).click()
    text = verified(page, portal)
    assert f"Verified against chain id {EMBEDDED_CHAIN_ID}, contract {portal.contract}, block" in text, text
    assert "Entry claimed (from the contract)\nyes" in text
    shot(page, "owner-verify")


def test_owner_sees_no_other_owners_data(page: Page, portal: Portal) -> None:
    sign_in(page, portal, "alice")
    bob = entry_of(portal, "bob")
    for path in (
        "/portal/owners/bob",
        "/portal/owners/nobody",  # refused the same way: owner ids cannot be probed
        "/portal/owners/bob/sessions/s1",
        "/portal/owners/bob/statement.csv",
        f"/portal/verify?period={portal.period_id}&entry={bob.entry_id}",
        "/portal/operator",
        "/portal/auditor",
        "/portal/fragments/reconciliation",
    ):
        response = page.goto(portal.url + path)
        assert response is not None and response.status == 403, path
        assert bob.address.lower() not in page.content().lower(), path
    shot(page, "owner-refused")
    page.goto(f"{portal.url}/portal/periods/{portal.period_id}")
    entries = page.get_by_test_id("entries")
    expect(entries.locator("tbody tr")).to_have_count(1)
    assert bob.address.lower() not in page.content().lower()
    shot(page, "owner-period")


def test_tampered_entry_or_proof_is_rejected_by_the_page(page: Page, portal: Portal) -> None:
    sign_in(page, portal, "auditor")
    entry = entry_of(portal, "alice")
    page.goto(f"{portal.url}/portal/verify?period={portal.period_id}&entry={entry.entry_id}")
    assert verified(page, portal).startswith("✔ Verified against")

    # the amount raised by one base unit: the leaf, and so the root, no longer match the chain's
    page.get_by_label(re.compile("^Amount")).fill(str(entry.amount + 1))
    page.get_by_role("button", name="Verify in this browser").click()
    text = verified(page, portal)
    assert text.startswith("✖ Not verified against"), text
    assert "is not the committed root" in text
    assert "StandardMerkleTree.verify(committed root, entry, proof) is false" in text
    shot(page, "verify-tampered-amount")

    # the right amount, one proof hash altered
    page.get_by_label(re.compile("^Amount")).fill(str(entry.amount))
    proof = page.get_by_label(re.compile("^Proof"))
    first = entry.proof[0]
    proof.fill("\n".join(["0x" + ("0" if first[2] != "0" else "1") + first[3:], *entry.proof[1:]]))
    page.get_by_role("button", name="Verify in this browser").click()
    text = verified(page, portal)
    assert text.startswith("✖ Not verified") and "is not the committed root" in text, text
    shot(page, "verify-tampered-proof")

    # the right entry checked against a contract that is not the settlement contract
    proof.fill("\n".join(entry.proof))
    page.get_by_label("Settlement contract").fill(portal.state.record.token)
    page.get_by_role("button", name="Verify in this browser").click()
    text = verified(page, portal)
    assert "no PeriodProposed log for period" in text, text


def test_operator_journey_plan_periods_reconciliation_jobs(page: Page, portal: Portal) -> None:
    sign_in(page, portal, "operator")
    expect(page).to_have_url(portal.url + "/portal/operator")
    expect(page.locator("canvas#plan-chart")).to_have_attribute("data-drawn", "true")
    table = page.get_by_test_id("plan-table")
    expect(table.locator("tbody tr")).to_have_count(96)
    assert "30.0" in (table.text_content() or "")  # the site's import limit, in the table as in the chart
    expect(page.get_by_test_id("reconciliation")).to_have_attribute("data-ok", "true", timeout=30_000)
    periods = page.get_by_test_id("periods")
    expect(periods).to_contain_text(str(portal.period_id))
    expect(periods).to_contain_text("claimed")
    expect(page.get_by_test_id("jobs")).to_contain_text("settle")
    shot(page, "operator")
    page.get_by_role("link", name=str(portal.period_id)).first.click()
    expect(page.get_by_test_id("entries").locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id("entries")).to_contain_text("bob")
    shot(page, "operator-period")
    page.goto(portal.url + "/portal/owners/bob")  # operators see every owner
    expect(page.get_by_test_id("statement")).to_contain_text(str(portal.period_id))


def test_auditor_journey_periods_totals_disputes_reconciliation_proof(page: Page, portal: Portal) -> None:
    sign_in(page, portal, "auditor")
    expect(page).to_have_url(portal.url + "/portal/auditor")
    expect(page.get_by_test_id("periods")).to_contain_text(str(portal.period_id))
    expect(page.get_by_test_id("no-disputes")).to_be_visible()
    expect(page.get_by_test_id("reconciliation")).to_have_attribute("data-ok", "true", timeout=30_000)
    expect(page.get_by_role("button", name="Advance")).to_have_count(0)  # read-only
    shot(page, "auditor")
    page.get_by_role("textbox", name="Period").fill(str(portal.period_id))
    page.get_by_role("textbox", name="Entry").fill("1")
    page.get_by_role("button", name="Open and verify").click()
    assert verified(page, portal).startswith("✔ Verified against")
    shot(page, "auditor-verify")
    for path in ("/portal/operator", "/portal/owners/alice"):
        response = page.goto(portal.url + path)
        assert response is not None and response.status == 403, path


def test_phone_width_sign_in_and_owner_page(browser: Browser, portal: Portal) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, timezone_id="UTC")
    try:
        page = context.new_page()
        page.goto(portal.url + "/")
        shot(page, "sign-in-phone")
        sign_in(page, portal, "bob")
        expect(page.get_by_test_id("statement")).to_be_visible()
        # the page itself never scrolls sideways: wide tables scroll inside their own box
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(page, "owner-home-phone")
    finally:
        context.close()


def test_owner_sets_a_vehicles_departure_charge_and_v2g_and_a_refusal_is_named(
    page: Page, portal: Portal
) -> None:
    from backend.db.models import VehicleSettings

    def stored() -> tuple[object, ...] | None:
        with portal.state.sessions() as session:
            s = session.get(VehicleSettings, "ev0")
            return None if s is None else (s.usual_departure, s.time_zone, s.target_soc, s.min_soc, s.v2g)

    sign_in(page, portal, "alice")
    page.get_by_test_id("vehicles").get_by_role("row", name=re.compile("ev0")).get_by_role("link").click()
    expect(page.get_by_role("heading", name="Settings of ev0")).to_be_visible()
    from backend.portal.queries import v2g_earned

    with portal.state.sessions() as session:
        _amount, _energy, sessions = v2g_earned(session, "ev0")
    said = page.get_by_test_id("v2g-earned")
    if sessions:  # what V2G earned this car so far, before its owner chooses
        expect(said).to_contain_text(f"over {sessions} session")
    else:
        expect(said).to_contain_text("No energy given back by this car has been settled yet")
    page.get_by_label("Usually leaves at (local time)").fill("07:30")
    page.get_by_label("Next departure, if not the usual time (local time)").fill("2023-07-03T06:15")
    page.get_by_label("Full to (%)").fill("80")
    page.get_by_label("Always keep at least (%)").fill("30")
    page.get_by_label("May give energy back to the grid (V2G)").uncheck()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("settings-saved")).to_be_visible()
    expect(page.get_by_label("Full to (%)")).to_have_value("80")
    expect(page.get_by_label("May give energy back to the grid (V2G)")).not_to_be_checked()
    assert stored() == ("07:30", "Europe/Amsterdam", 0.8, 0.3, False)
    with portal.state.sessions() as session:
        nxt = session.get_one(VehicleSettings, "ev0").next_departure
    assert nxt is not None and nxt.isoformat() == "2023-07-03T04:15:00+00:00"  # 06:15 in Amsterdam's summer
    shot(page, "owner-vehicle-settings")

    # a minimum above the target: refused by name on the form, with what was typed; nothing stored
    page.get_by_label("Full to (%)").fill("50")
    page.get_by_label("Always keep at least (%)").fill("60")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("settings-error")).to_contain_text("InvalidSettingsError")
    expect(page.get_by_test_id("settings-error")).to_contain_text("min_soc 0.6 is above target_soc 0.5")
    expect(page.get_by_label("Always keep at least (%)")).to_have_value("60")
    assert stored() == ("07:30", "Europe/Amsterdam", 0.8, 0.3, False)

    # another owner's vehicle is not this owner's to set
    refused = page.goto(portal.url + "/portal/owners/bob/vehicles/ev1/settings")
    assert refused is not None and refused.status == 403


def every_page(portal: Portal) -> dict[str | None, list[str]]:
    """Every page of every role (None: signed out), as the browser checks visit them."""
    entry = entry_of(portal, "alice")
    verify = f"/portal/verify?period={portal.period_id}&entry={entry.entry_id}"
    return {
        None: ["/", "/portal/no-such-page"],
        "alice": [
            "/portal/owners/alice",
            "/portal/owners/alice/sessions/s0",
            "/portal/owners/alice/vehicles/ev0/settings",
            "/portal/sign-ins",
            verify,
        ],
        "operator": ["/portal/operator", f"/portal/periods/{portal.period_id}", "/portal/owners/alice"],
        "auditor": ["/portal/auditor", f"/portal/periods/{portal.period_id}", verify],
    }


@pytest.mark.slow  # 10 s of a full default suite; the pages' functions are tested by default above
def test_every_page_of_every_role_fits_a_phone(browser: Browser, portal: Portal) -> None:
    """At 390 px (a phone), no page scrolls sideways: wide tables and charts scroll inside their own box."""
    pages = every_page(portal)
    wide: list[str] = []
    for who, paths in pages.items():
        context = browser.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, timezone_id="UTC"
        )
        try:
            page = context.new_page()
            if who is not None:
                sign_in(page, portal, who)
            for path in paths:
                page.goto(portal.url + path)
                page.wait_for_load_state("networkidle")
                width = page.evaluate("document.documentElement.scrollWidth")
                if width > 391:
                    wide.append(f"{who or 'anyone'} {path}: {width} px")
                    name = path.strip("/").replace("/", "-").split("?")[0] or "home"
                    shot(page, f"phone-{who or 'anyone'}-{name}")
        finally:
            context.close()
    assert not wide, wide


#: In every table, a column of right-aligned numbers under a right-aligned header (the mismatches).
MISALIGNED_JS = """() => {
  const out = [];
  for (const table of document.querySelectorAll('table')) {
    const heads = table.querySelectorAll('thead th');
    const row = table.querySelector('tbody tr');
    if (!row) continue;
    [...row.children].forEach((cell, i) => {
      const head = heads[i];
      if (!head) return;
      const right = a => a === 'right' || a === 'end';
      if (right(getComputedStyle(cell).textAlign) !== right(getComputedStyle(head).textAlign))
        out.push(`${table.dataset.testid || '?'}: ${head.textContent.trim()}`);
    });
  }
  return out;
}"""
#: Tables wider than their box (a phone scrolls inside the box; a laptop need not).
OVERFLOWING_JS = """() => [...document.querySelectorAll('.table-wrap')]
  .filter(w => w.scrollWidth > w.clientWidth + 1)
  .map(w => {
    const name = (w.querySelector('table') || {dataset: {}}).dataset.testid || '?';
    return `${name}: ${w.scrollWidth} > ${w.clientWidth}`;
  })"""


def test_charts_share_their_zero_line_the_price_is_in_front_and_hashes_copy_whole(
    browser: Browser, portal: Portal
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, timezone_id="UTC")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        for who, path, chart, right in (
            ("operator", "/portal/operator", "plan-chart", "price"),
            ("alice", "/portal/owners/alice/sessions/s0", "session-chart", "eur"),
        ):
            context.clear_cookies()
            sign_in(page, portal, who)
            page.goto(portal.url + path)
            expect(page.locator(f"canvas#{chart}")).to_have_attribute("data-drawn", "true")
            zeros = page.evaluate(
                f"""() => {{ const c = document.getElementById('{chart}').chart;
                  return [c.scales.y.getPixelForValue(0), c.scales['{right}'].getPixelForValue(0)]; }}"""
            )
            assert abs(zeros[0] - zeros[1]) <= 1.0, (path, zeros)
            if chart == "plan-chart":  # the price drawn in front of the bars
                orders = page.evaluate(
                    "() => document.getElementById('plan-chart').chart.data.datasets"
                    ".map(d => [d.label, d.order || 0])"
                )
                price = next(o for label, o in orders if label.startswith("Price"))
                assert all(price < o for label, o in orders if label.startswith(("Charging", "Discharging")))
        context.clear_cookies()
        sign_in(page, portal, "auditor")
        page.goto(portal.url + f"/portal/periods/{portal.period_id}")
        first = page.locator("code.hex[title]").first
        full = first.get_attribute("title")
        button = page.locator("code.hex[title] + button.copy").first
        button.click()
        expect(button).to_have_text("Copied")
        assert page.evaluate("() => navigator.clipboard.readText()") == full
    finally:
        context.close()


AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"


@pytest.mark.slow  # 13 s of a 10-minute default suite; run by `make test-slow` with the other long checks
def test_no_page_of_any_role_has_a_serious_accessibility_violation(browser: Browser, portal: Portal) -> None:
    """At 1,366 px, every page of every role: axe-core (the npm package) finds no serious or critical
    violation, numbers sit under right-aligned headers, and every table fits its card."""
    pages = every_page(portal)
    source = AXE.read_text(encoding="utf-8")
    found: list[str] = []
    misaligned: list[str] = []
    wide: list[str] = []
    for who, paths in pages.items():
        context = browser.new_context(viewport={"width": 1366, "height": 900}, timezone_id="UTC")
        try:
            page = context.new_page()
            if who is not None:
                sign_in(page, portal, who)
            for path in paths:
                page.goto(portal.url + path)
                page.wait_for_load_state("networkidle")
                page.evaluate(source)  # through the devtools protocol: the page's CSP stays as it is
                violations = page.evaluate(
                    """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
                      .filter(v => v.impact === 'serious' || v.impact === 'critical')
                      .map(v => `${v.id} (${v.impact}): ${v.nodes.length} node(s), e.g. `
                                + `${v.nodes[0].target}`)"""
                )
                found += [f"{who or 'anyone'} {path}: {v}" for v in violations]
                # the figures on the same pages: numbers under right-aligned headers, tables in their card
                misaligned += [f"{path} {m}" for m in page.evaluate(MISALIGNED_JS)]
                wide += [f"{path} {w}" for w in page.evaluate(OVERFLOWING_JS)]
            # the check itself is live: a field without a label is caught on the same page
            page.evaluate("() => document.body.insertAdjacentHTML('beforeend', '<input type=\"text\">')")
            control = page.evaluate(
                """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
                  .filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id)"""
            )
            assert "label" in control, control
        finally:
            context.close()
    assert not found, "\n".join(found)
    assert not misaligned, "\n".join(misaligned)
    assert not wide, "\n".join(wide)


def test_sign_in_and_verify_with_the_keyboard_alone(page: Page, portal: Portal) -> None:
    """Tab to the key field, type, Enter; on the verify page, Tab to the button, Enter: verified."""
    page.goto(portal.url + "/")
    for _ in range(30):  # past the skip link and the header, to the key field
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.name") == "api_key":
            break
    else:
        raise AssertionError("the API key field is not reachable with Tab")
    page.keyboard.type(portal.keys["alice"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(portal.url + "/portal/owners/alice")
    entry = entry_of(portal, "alice")
    page.goto(portal.url + f"/portal/verify?period={portal.period_id}&entry={entry.entry_id}")
    verified(page, portal)  # the page checks once on its own; the button checks again
    page.locator("#verify-result").evaluate("el => el.removeAttribute('data-outcome')")
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.id") == "verify-button":
            break
    else:
        raise AssertionError("the verify button is not reachable with Tab")
    page.keyboard.press("Enter")
    assert verified(page, portal).startswith("✔ Verified against"), verified(page, portal)


def test_the_node_an_owner_chose_is_remembered_and_named_in_the_result(page: Page, portal: Portal) -> None:
    sign_in(page, portal, "alice")
    entry = entry_of(portal, "alice")
    address = f"/portal/verify?period={portal.period_id}&entry={entry.entry_id}"
    page.goto(portal.url + address)
    assert verified(page, portal).startswith("✔ Verified against")
    expect(page.locator("#verify-result")).to_contain_text(f"through {portal.url}/rpc")
    # another node (here the same chain under another name): chosen once, remembered in this browser
    other = portal.url.replace("127.0.0.1", "localhost") + "/rpc"
    page.locator("#verify-result").evaluate("el => el.removeAttribute('data-outcome')")
    page.get_by_label("JSON-RPC URL").fill(other)
    page.get_by_role("button", name="Verify in this browser").click()
    assert verified(page, portal).startswith("✔ Verified against")
    expect(page.locator("#verify-result")).to_contain_text(f"through {other}")
    page.goto(portal.url + address)
    expect(page.get_by_label("JSON-RPC URL")).to_have_value(other)
    expect(page.locator("#rpc-remembered")).to_contain_text("the node you chose last time")
    assert f"through {other}" in verified(page, portal)


def test_a_cookie_kept_after_sign_out_opens_nothing(page: Page, portal: Portal) -> None:
    """In Chromium: sign in, keep a copy of the session cookie, sign out, put the copy back: the owner's
    page sends the browser to the sign-in, as a stolen cookie would be sent."""
    sign_in(page, portal, "alice")
    kept = [dict(c) for c in page.context.cookies()]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    page.context.clear_cookies()
    page.context.add_cookies(kept)  # type: ignore[arg-type]
    page.goto(portal.url + "/portal/owners/alice")
    expect(page.get_by_label("API key")).to_be_visible()
    assert "/portal/owners/alice" not in page.url.split("?")[0]
