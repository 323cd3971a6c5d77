"""The Accounts page, My account (password change, API tokens, log out everywhere), and what
operators and viewers are shown, in real Chromium."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import ADMIN, DESKTOP, Site, open_actions, screenshot, sign_in
from voipcloud.domain.access import AccountRole

PASSWORD = "a-long-enough-passphrase"
NEW_PASSWORD = "a-brand-new-passphrase"


def sign_in_as(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def new_page(browser: Browser, site: Site) -> Page:
    context = browser.new_context(viewport=DESKTOP, base_url=site.url)
    context.set_default_timeout(15_000)
    return context.new_page()


def test_admin_manages_accounts_on_the_accounts_page(page: Page, site: Site) -> None:
    sign_in(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Accounts").click()
    expect(page.get_by_role("heading", name="Accounts", exact=True)).to_be_visible()
    form = page.locator("#add-account")
    form.get_by_label("Username").fill("olga")
    form.get_by_label("Role").select_option("operator")
    form.get_by_label("Password").fill("short")
    form.get_by_role("button", name="Add account").click()
    expect(page.locator("#e-password")).to_have_text("Must be at least 12 characters long")
    expect(page.locator("#f-password")).to_have_attribute("aria-invalid", "true")
    assert page.locator("#f-password").input_value() == ""  # a posted password is not echoed
    expect(page.locator("#f-username")).to_have_value("olga")
    page.locator("#add-account").get_by_label("Password").fill(PASSWORD)
    page.locator("#add-account").get_by_role("button", name="Add account").click()
    expect(page.get_by_text("Account olga added as operator.")).to_be_visible()
    row = page.locator('tr[data-account="olga"]')
    expect(row.locator("td").nth(1)).to_have_text("operator")

    # the last admin cannot be demoted: the page says why, nothing changes
    admin_row = page.locator('tr[data-account="admin"]')
    admin_row.get_by_label("Role of admin", exact=True).select_option("viewer")
    admin_row.get_by_role("button", name="Set the role of admin").click()
    expect(page.get_by_text("admin is the last enabled admin account")).to_be_visible()
    expect(page.locator('tr[data-account="admin"] td').nth(1)).to_have_text("admin")

    row = page.locator('tr[data-account="olga"]')
    row.get_by_label("Role of olga", exact=True).select_option("viewer")
    row.get_by_role("button", name="Set the role of olga").click()
    expect(page.get_by_text("Account olga: viewer, enabled.")).to_be_visible()
    page.locator('tr[data-account="olga"]').get_by_role("button", name="Disable olga").click()
    expect(page.get_by_text("Account olga: viewer, disabled.")).to_be_visible()
    expect(page.locator('tr[data-account="olga"] .badge')).to_have_text("disabled")
    row = page.locator('tr[data-account="olga"]')
    row.get_by_label("New password for olga").fill(NEW_PASSWORD)
    row.get_by_role("button", name="Reset the password of olga").click()
    expect(page.get_by_text("Password of olga reset")).to_be_visible()
    screenshot(page, "accounts-page")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('tr[data-account="olga"]').get_by_role("button", name="Delete olga").click()
    expect(page.get_by_text("Account olga deleted.")).to_be_visible()
    expect(page.locator('tr[data-account="olga"]')).to_have_count(0)


def test_password_change_ends_the_other_sessions(browser: Browser, site: Site) -> None:
    site.controller.auth.accounts.add(
        actor=ADMIN, username="olga", role=AccountRole.OPERATOR, password=PASSWORD
    )
    here, elsewhere = new_page(browser, site), new_page(browser, site)
    sign_in_as(here, "olga")
    sign_in_as(elsewhere, "olga")
    # a page that does not poll: the listing's live update, sent after the password change,
    # would take it to the login page on its own, racing the navigation below
    elsewhere.goto("/account")
    here.locator("#my-account").click()
    expect(here.get_by_role("heading", name="My account")).to_be_visible()
    expect(here.locator("#me-role")).to_have_text("operator")
    form = here.locator("#password-form")
    form.locator("#f-current_password").fill("not-my-password")
    form.locator("#f-new_password").fill(NEW_PASSWORD)
    form.locator("#f-confirm_password").fill(NEW_PASSWORD)
    form.get_by_role("button", name="Change password").click()
    expect(here.locator("#e-current_password")).to_contain_text("Is wrong")
    form = here.locator("#password-form")
    form.locator("#f-current_password").fill(PASSWORD)
    form.locator("#f-new_password").fill("olga")
    form.locator("#f-confirm_password").fill("olga")
    form.get_by_role("button", name="Change password").click()
    expect(here.locator("#e-new_password")).to_contain_text("at least 12")
    form = here.locator("#password-form")
    form.locator("#f-current_password").fill(PASSWORD)
    form.locator("#f-new_password").fill(NEW_PASSWORD)
    form.locator("#f-confirm_password").fill(NEW_PASSWORD)
    form.get_by_role("button", name="Change password").click()
    expect(here.get_by_text("Password changed. 1 other sessions")).to_be_visible()
    screenshot(here, "account-password-changed")
    elsewhere.goto("/")
    assert "/login" in elsewhere.url  # the other browser's session has ended
    here.goto("/")
    expect(here.get_by_role("heading", name="Cloud Management")).to_be_visible()
    sign_in_as(elsewhere, "olga", NEW_PASSWORD)
    expect(elsewhere.get_by_role("heading", name="Cloud Management")).to_be_visible()


def test_api_token_shown_once_then_revoked(page: Page, site: Site) -> None:
    sign_in(page)
    page.goto("/account")
    expect(page.locator("#no-tokens")).to_be_visible()
    form = page.locator("#token-form")
    form.get_by_label("Token name").fill("nightly-report")
    form.get_by_label("Scope").select_option("read")
    form.get_by_label("Expires in (days)").fill("0")
    form.get_by_role("button", name="Create token").click()
    expect(page.locator("#e-days")).to_be_visible()
    page.locator("#token-form").get_by_label("Expires in (days)").fill("30")
    page.locator("#token-form").get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    assert secret.startswith("vct_")
    expect(page.get_by_text("it is shown only this once")).to_be_visible()
    screenshot(page, "account-token-created")
    with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {secret}"}) as api:
        assert api.get("/api/v1/nodes").status_code == 200
        assert api.post("/api/v1/extensions", json={"number": "1001"}).status_code == 403
        page.goto("/account")
        assert secret not in page.content()  # never shown again
        row = page.locator("#my-tokens tr[data-token]")
        expect(row).to_have_count(1)
        expect(row.locator("td").nth(4)).not_to_have_text("never")  # last use recorded
        row.get_by_role("button", name="Revoke API token nightly-report").click()
        expect(page.get_by_text("revoked.")).to_be_visible()
        assert api.get("/api/v1/nodes").status_code == 401


def test_viewer_and_operator_see_only_what_they_may_do(browser: Browser, site: Site) -> None:
    node = site.add_node("sip-7.example.com", roles=("jabber",))
    site.controller.auth.accounts.add(
        actor=ADMIN, username="victor", role=AccountRole.VIEWER, password=PASSWORD
    )
    site.controller.auth.accounts.add(
        actor=ADMIN, username="olga", role=AccountRole.OPERATOR, password=PASSWORD
    )
    viewer = new_page(browser, site)
    sign_in_as(viewer, "victor")
    nav = viewer.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Accounts")).to_have_count(0)
    expect(viewer.locator("#add-node")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Configuration Wizard")).to_have_count(0)
    row = viewer.locator(f"#node-{node.id}")
    expect(row).to_be_visible()
    assert set(row.locator("[data-action]").evaluate_all("e => e.map(x => x.dataset.action)")) == {
        "info"
    }
    expect(row.locator(".row-menu-toggle, .row-menu")).to_have_count(0)  # no menu to open
    screenshot(viewer, "viewer-cloud-management")
    row.get_by_role("link", name=f"View Info of {node.hostname}").click()
    expect(viewer.locator("#info-session-key-hidden")).to_be_visible()
    expect(viewer.locator("#info-session-key")).to_have_count(0)
    viewer.goto("/infrastructure/properties")
    expect(viewer.locator("#read-only")).to_be_visible()
    expect(viewer.locator("#save-button")).to_have_count(0)
    screenshot(viewer, "viewer-properties-read-only")
    answer = viewer.goto("/nodes/new")
    assert answer is not None
    assert answer.status == 403  # the server refuses what the page does not offer
    expect(viewer.get_by_text("may not change nodes or their roles")).to_be_visible()

    operator = new_page(browser, site)
    sign_in_as(operator, "olga")
    expect(operator.locator("#add-node")).to_be_visible()
    expect(operator.get_by_role("link", name="Configuration Wizard")).to_have_count(0)
    expect(
        operator.get_by_role("navigation", name="Main").get_by_role("link", name="Accounts")
    ).to_have_count(0)
    actions = set(
        open_actions(operator, node.id)
        .locator("[data-action]")
        .evaluate_all("e => e.map(x => x.dataset.action)")
    )
    assert {"info", "edit", "standby", "activate"} <= actions, actions
    answer = operator.goto("/accounts")
    assert answer is not None
    assert answer.status == 403
    screenshot(operator, "operator-accounts-refused")
