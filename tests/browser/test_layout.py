"""Plain and accessible: labels on every input, keyboard use, narrow windows, the Events page."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import ADMIN, Site, open_actions, screenshot, sign_in

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
    .map(e => e.outerHTML)"""


def test_every_input_has_a_label(admin_page: Page, site: Site) -> None:
    node = site.add_node("labels-01", roles=("sip",), public_ip="203.0.113.60")
    page = admin_page
    for path in (
        "/",
        "/nodes/new",
        f"/nodes/{node.id}/edit",
        f"/nodes/{node.id}/roles/new?role=que",
        f"/nodes/{node.id}/roles/sip/edit",
        f"/nodes/{node.id}/info",
        "/events",
    ):
        page.goto(path)
        assert page.evaluate(UNLABELLED) == [], path
    page.goto(f"/nodes/{node.id}/roles/new?role=que")
    expect(page.get_by_label("Password")).to_have_attribute("type", "password")  # a secret


def test_view_info_by_keyboard(admin_page: Page) -> None:
    page = admin_page
    link = page.get_by_role("link", name="View Info of", exact=False).first
    link.focus()
    page.keyboard.press("Enter")
    layer = page.locator("#layer")
    expect(layer).to_be_visible()
    focused_inside = page.evaluate(
        "document.getElementById('layer').contains(document.activeElement)"
    )
    assert focused_inside
    page.keyboard.press("Escape")
    expect(layer).to_be_hidden()


def test_readable_on_a_narrow_window(browser: Browser, site: Site) -> None:
    narrow = site.add_node("narrow-01", roles=("jabber",), public_ip="203.0.113.61").id
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=site.url)
    try:
        page = context.new_page()
        sign_in(page)
        expect(page.get_by_role("heading", name="Node Listing")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        # its agent never joined: Activate asks first (a link to its confirmation)
        row = open_actions(page, narrow)
        expect(row.get_by_role("link", name="Activate narrow-01", exact=True)).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0  # the open menu too
        screenshot(page, "cloud-management-narrow")
    finally:
        context.close()


def test_events_page_filters_by_node(admin_page: Page, site: Site) -> None:
    first = site.add_node("history-01", roles=("jabber",))
    site.add_node("history-02")
    site.controller.nodes.action(first.id, "standby", actor=ADMIN)
    page = admin_page
    page.get_by_role("link", name="Events").click()
    expect(page.get_by_role("heading", name="Events")).to_be_visible()
    expect(page.locator("table.events")).to_contain_text("history-02")
    page.get_by_label("Node (NodeID or hostname)").fill("history-01")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events-total")).to_contain_text("of node history-01")
    table = page.locator("table.events")
    expect(table).not_to_contain_text("history-02")
    expect(table).to_contain_text("Offline → StandBy")
    expect(table).to_contain_text("role jabber assigned")
    screenshot(page, "events")
    page.get_by_label("Node (NodeID or hostname)").fill("no-such-node")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("alert")).to_contain_text("There is no node 'no-such-node'")
