"""Repeated wrong passwords slow sign-in down from that address, for the web login and the API
alike (429 with Retry-After)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN_PASSWORD, Site
from voipcloud.services.auth import FREE_LOGIN_FAILURES, LoginLimiter


def test_repeated_failures_are_slowed_down_for_the_api_too(page: Page, site: Site) -> None:
    now = [1000.0]  # the limiter's clock stands still until the test moves it
    site.controller.auth.limiter = LoginLimiter(monotonic=lambda: now[0])
    page.goto("/login")
    for _ in range(FREE_LOGIN_FAILURES):
        page.get_by_label("Password").fill("guess")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    page.get_by_label("Password").fill("guess")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("wait 1 s before the next")

    # during the wait even the right password is refused from this address, and the API
    # shares the count
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("Too many failed sign-in attempts")
    answer = page.request.post(
        f"{site.url}/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert answer.status == 429
    assert answer.headers["retry-after"] == "1"
    assert "Too many failed sign-in attempts" in answer.text()

    now[0] += 1.5  # the wait is over
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Cloud Management")).to_be_visible()
