"""Forms without the session's CSRF token are refused, and nothing changes."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, sign_in


def test_form_without_csrf_token_is_refused(admin_page: Page, site: Site) -> None:
    page = admin_page
    before = site.controller.nodes.list(_filter()).total
    page.goto("/nodes/new")
    add_form = page.get_by_role("region", name="Add Node")  # (the page also has Import many)
    add_form.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    page.get_by_label("Hostname").fill("no-token")
    page.get_by_label("Private IP").fill("10.0.0.40")
    with page.expect_response(lambda r: r.url.endswith("/nodes")) as answer:
        page.get_by_role("button", name="Add Node").click()
    assert answer.value.status == 403
    expect(page.get_by_role("alert")).to_contain_text("CSRF")
    assert site.controller.nodes.list(_filter()).total == before


def test_forged_token_and_cross_site_post_are_refused(admin_page: Page, site: Site) -> None:
    node = site.add_node("standby-me")
    forged = admin_page.request.post(
        f"{site.url}/nodes/{node.id}/actions/standby",
        form={"csrf_token": "0" * 64, "next": "/"},
        max_redirects=0,
    )
    assert forged.status == 403
    missing = admin_page.request.post(
        f"{site.url}/nodes/{node.id}/actions/standby", form={"next": "/"}, max_redirects=0
    )
    assert missing.status == 403
    assert site.node(node.id).status.value == "Offline"


def test_pages_cannot_be_framed_nor_cached(admin_page: Page, site: Site) -> None:
    answer = admin_page.request.get(f"{site.url}/")
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"


def test_login_form_needs_its_token_too(page: Page, site: Site) -> None:
    page.goto("/login")
    page.locator("input[name=csrf_token]").evaluate("input => input.value = 'forged'")
    page.get_by_label("Password").fill("browser-admin-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("out of date")
    sign_in(page)  # a fresh form works
    expect(page.get_by_role("heading", name="Cloud Management")).to_be_visible()


def _filter():  # type: ignore[no-untyped-def]
    from voipcloud.domain.filters import NodeFilter

    return NodeFilter()
