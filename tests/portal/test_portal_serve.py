"""``v2g demo`` then ``v2g serve --db sqlite:///demo.sqlite``, as two processes: ``/`` shows the sign-in, the
server finds the demo's own persistent chain from the database's record, and an entry of the demo's
period verifies in the browser against that chain."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from backend.api.security import Role, create_api_key
from backend.db.session import session_factory
from tests.backend.test_platform import ok, v2g
from tests.portal.conftest import REPO, shot

DEMO_PERIOD = 20230911


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    ok(v2g(tmp_path, "demo", "--evs", "12"))
    db = "sqlite:///demo.sqlite"
    with session_factory(f"sqlite:///{tmp_path / 'demo.sqlite'}", upgrade=False).begin() as session:
        keys = {
            "auditor": create_api_key(session, Role.AUDITOR),  # as `v2g keys create` makes them
            "owner": create_api_key(session, Role.OWNER, owner_id="owner-00001"),
        }
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("V2G_")}
    env["PYTHONPATH"] = str(REPO)
    server = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "serve", "--db", db, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(url + "/health", timeout=2)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"v2g serve did not start: {server.communicate()[1]}") from None
                time.sleep(0.2)
        yield url, keys
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_serve_shows_the_sign_in_and_the_demos_data_verifies_in_the_browser(
    demo_server: tuple[str, dict[str, str]], browser: Browser
) -> None:
    url, keys = demo_server
    home = httpx.get(url + "/")
    assert home.status_code == 200 and 'name="api_key"' in home.text
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(url + "/")
        shot(page, "sign-in")
        page.get_by_label("API key").fill(keys["auditor"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("periods")).to_contain_text(str(DEMO_PERIOD))
        expect(page.get_by_test_id("reconciliation")).to_have_attribute("data-ok", "true", timeout=30_000)
        shot(page, "demo-auditor")
        page.goto(f"{url}/portal/verify?period={DEMO_PERIOD}&entry=0")
        result = page.locator("#verify-result")
        expect(result).to_have_attribute("data-outcome", "verified", timeout=30_000)
        assert "Verified against chain id 131277322940537" in result.inner_text()
        shot(page, "demo-auditor-verify")
        context.clear_cookies()
        page.goto(url + "/")
        page.get_by_label("API key").fill(keys["owner"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("statement")).to_contain_text(str(DEMO_PERIOD))
        shot(page, "demo-owner")
    finally:
        context.close()
