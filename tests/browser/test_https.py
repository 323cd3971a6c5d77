"""The web over HTTPS in Chromium: a real `voipcloud serve --tls on` (its own CA), Secure
cookies, HSTS, and the session-key confirmation showing the pinned agent command.

Chromium is told to accept exactly the controller's server key (its SPKI hash, Chromium's
`--ignore-certificate-errors-spki-list`), not any certificate: the page still loads over TLS.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Playwright, expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, screenshot
from tests.support.processes import ADMIN_PASSWORD
from tests.support.tls_netns import HttpsController, presented_leaf


@pytest.fixture
def https_controller(tmp_path: Path) -> Iterator[HttpsController]:
    started = HttpsController(data_dir=tmp_path / "controller", env={"VOIPCLOUD_TLS": "on"})
    yield started.start()
    started.stop()


@pytest.fixture
def pinned_browser(playwright: Playwright, https_controller: HttpsController) -> Iterator[Browser]:
    leaf = presented_leaf("127.0.0.1", https_controller.port)
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"],
    )
    yield launched
    launched.close()


def test_the_web_over_https_sets_secure_cookies_and_hsts(
    pinned_browser: Browser, https_controller: HttpsController
) -> None:
    url = https_controller.url
    context = pinned_browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        answer = page.goto("/login")
        assert answer is not None
        assert page.url.startswith("https://")
        assert answer.headers.get("strict-transport-security") == "max-age=31536000"
        csrf = next(c for c in context.cookies() if c["name"] == "voipcloud_login_csrf")
        assert csrf["secure"]

        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        with page.expect_response(lambda r: r.url.endswith("/login")) as posted:
            page.get_by_role("button", name="Sign in").click()
        assert posted.value.headers.get("strict-transport-security") == "max-age=31536000"
        expect(page.get_by_role("heading", name="Cloud Management")).to_be_visible()
        session = next(c for c in context.cookies() if c["name"] == "voipcloud_session")
        assert session["secure"]
        assert session["httpOnly"]
        assert all(c["secure"] for c in context.cookies()), context.cookies()

        # the session-key confirmation: https address, the CA pin, the key from a file
        admin = https_controller.admin()
        created = admin.post(
            "/api/v1/nodes", json={"hostname": "web-tls", "private_ip": "10.3.0.2"}
        )
        node_id = created.json()["node_id"]
        key = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "wk"}).json()[
            "session_key"
        ]
        shown = page.goto(f"/nodes/{node_id}/session-key?role=wk")
        assert shown is not None
        assert shown.headers.get("strict-transport-security") == "max-age=31536000"
        fingerprint = https_controller.fingerprint()
        command = (page.locator("#agent-command").text_content() or "").strip()  # folded away
        assert command == (
            f"voipcloud agent --controller {url} --ca-fingerprint {fingerprint} "
            "--session-key-file /etc/voipcloud/session-key"
        )
        assert key not in command
        expect(page.locator("#session-key")).to_have_text(key)
        expect(page.locator("#ca-fingerprint")).to_have_text(fingerprint)
        # the one-line install checks that CA before trusting anything (issue 16)
        line = page.locator("#install-command").inner_text()
        assert f'echo "{fingerprint.removeprefix("sha256:")} *ca.der" | sha256sum -c' in line
        assert f"--ca-fingerprint {fingerprint}" in line
        assert key not in line
        screenshot(page, "https-session-key")
    finally:
        context.close()
