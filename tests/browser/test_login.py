"""Sign in, sign out, and the redirect to the login page."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, screenshot, sign_in


def test_pages_redirect_to_login_and_back_after_sign_in(page: Page, site: Site) -> None:
    for path in ("/", "/events", "/nodes/new", "/storage", "/nodes/1/info"):
        page.goto(path)
        assert page.url.startswith(f"{site.url}/login"), path
    expect(page.get_by_role("heading", name="Sign in to Cloud Management")).to_be_visible()

    page.goto("/nodes/new")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    screenshot(page, "login-wrong-password")

    page.get_by_label("Password").fill("browser-admin-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Add Node")).to_be_visible()
    assert page.url == f"{site.url}/nodes/new"  # where the administrator was going

    cookie = next(c for c in page.context.cookies() if c["name"] == "voipcloud_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax"
    assert cookie["expires"] > 0  # it expires


def test_logout_ends_the_session(page: Page, site: Site) -> None:
    sign_in(page)
    stolen = next(c for c in page.context.cookies() if c["name"] == "voipcloud_session")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto("/")
    assert page.url.startswith(f"{site.url}/login")

    # the old cookie, replayed, no longer works: the session was revoked, not only forgotten
    page.context.add_cookies([stolen])
    page.goto("/events")
    assert page.url.startswith(f"{site.url}/login")
