"""A running server on a persistent embedded chain with a settled day, and a real Chromium to drive it.

One server for the portal's tests (seeding, scheduling and settling a day takes a few seconds), one
browser; every test gets a fresh browser context (no cookies), so journeys do not share a sign-in.
Screenshots go to ``out/portal-screenshots/`` (``V2G_PORTAL_SCREENSHOTS`` overrides it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from backend.api.app import create_app
from backend.api.deps import AppState
from backend.api.security import Role, create_api_key
from tests.backend.conftest import SCHEDULE, Api, seed, served, settings_for

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(os.environ.get("V2G_PORTAL_SCREENSHOTS") or REPO / "out" / "portal-screenshots")


@dataclass
class Portal:
    url: str
    keys: dict[str, str]
    state: AppState
    schedule_id: int
    period_id: int
    data_dir: Path

    @property
    def contract(self) -> str:
        return self.state.record.settlement

    @property
    def chain_id(self) -> int:
        return self.state.record.chain_id


@pytest.fixture(scope="session")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    tmp = tmp_path_factory.mktemp("portal")
    data_dir = tmp / "v2g-data"
    settings = settings_for(tmp, data_dir=str(data_dir), deployments_dir=str(tmp / "deployments"))
    with pytest.MonkeyPatch.context() as env:
        for name in ("V2G_SESSION_SECRET", "V2G_PUBLIC_RPC_URL", "V2G_SECURE_COOKIES"):
            env.delenv(name, raising=False)
        app = create_app(settings)
        with served(app) as url, httpx.Client(base_url=url, timeout=120) as client:
            state: AppState = app.state.v2g
            with state.sessions.begin() as session:
                keys = {
                    "operator": create_api_key(session, Role.OPERATOR),
                    "auditor": create_api_key(session, Role.AUDITOR),
                }
            api = Api(client, state, keys)
            seed(api)
            with state.sessions.begin() as session:
                keys["alice"] = create_api_key(session, Role.OWNER, owner_id="alice")
                keys["bob"] = create_api_key(session, Role.OWNER, owner_id="bob")
            job = api.wait(api.post("/schedules", SCHEDULE))  # type: ignore[arg-type]
            schedule_id = int(job["result"]["schedule_id"])  # type: ignore[index]
            settled = api.wait(api.post("/periods", {"schedule_id": schedule_id, "fee_bps": 100}))  # type: ignore[arg-type]
            period_id = int(settled["result"]["period_id"])  # type: ignore[index]
            yield Portal(url, keys, state, schedule_id, period_id, data_dir)


# One file's life: Playwright's sync API keeps an event loop running in this thread while it is open,
# and the suite's other files (on the same pytest-xdist worker) call asyncio.run.
@pytest.fixture(scope="module")
def playwright_() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (Debian's chromium package)")
    browser = playwright_.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="Europe/Amsterdam", locale="en-GB"
    )
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    # no script error and no Content-Security-Policy violation on any page a journey opened
    unexpected = [e for e in errors if not re.search(r"status of (403|404|401|422)", e)]  # refusals by name
    assert not unexpected, unexpected


def sign_in(page: Page, portal: Portal, who: str) -> None:
    page.goto(portal.url + "/")
    page.get_by_label("API key").fill(portal.keys[who])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def shot(page: Page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
