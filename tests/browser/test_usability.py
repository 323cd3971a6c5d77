"""What a reviewer found by using the pages: keyboard, focus, wording, narrow layout, links."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, Response, Route, expect

from tests.browser.conftest import ADMIN, Site, _all, open_actions, sign_in
from tests.support.processes import wait_for

FAULTS = """() => [...document.querySelectorAll('a[href]')]
    .map(a => a.getAttribute('href'))
    .filter(h => h.startsWith('/') && !h.startsWith('//'))"""


def test_choosing_a_role_by_keyboard_keeps_the_focus_on_the_choice(
    admin_page: Page, site: Site
) -> None:
    node = site.add_node("keys-01")
    page = admin_page
    page.goto(f"/nodes/{node.id}/roles/new")
    choice = page.get_by_label("Role", exact=True)
    choice.focus()
    page.keyboard.press("ArrowDown")  # Chromium changes a closed select at once
    chosen = choice.input_value()
    assert chosen
    expect(page.locator("#role-params fieldset legend")).to_have_text(re.compile(r"parameters$"))
    expect(page).to_have_url(re.compile(rf"/nodes/{node.id}/roles/new\?.*role={chosen}"))
    assert page.evaluate("document.activeElement.id") == "role-choice"  # no page reload
    page.keyboard.press("ArrowDown")
    expect(page).to_have_url(re.compile(rf"role={choice.input_value()}"))
    assert page.evaluate("document.activeElement.id") == "role-choice"


def test_the_first_field_at_fault_gets_the_focus_and_errors_read_as_sentences(
    admin_page: Page,
) -> None:
    page = admin_page
    page.goto("/nodes/new")
    page.get_by_label("Hostname").fill("Bad Host!")
    page.get_by_label("Private IP").fill("10.0.0.300")
    page.get_by_label("Private IP").press("Enter")  # Enter submits
    expect(page.locator("#e-hostname")).to_have_text(re.compile(r"^Must be a host name"))
    expect(page.locator("#e-private_ip")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "f-hostname"


def test_view_info_names_the_roles_and_keeps_a_long_component_list_in_its_own_box(
    admin_page: Page, site: Site
) -> None:
    node = site.add_node("info-01", roles=("sip", "jabber"), public_ip="203.0.113.70")
    site.start_agent(node.id)
    wait_for(lambda: site.node(node.id).os, timeout=20, what="the agent's inventory")
    page = admin_page
    page.goto(f"/nodes/{node.id}/info")
    expect(page.locator("#info-roles")).to_have_text("SIP, Jabber")
    expect(page.locator("#info-os")).not_to_have_text("—")
    box = page.locator(".components-wrap")
    rows = page.locator("#components tbody tr").count()
    if rows > 12:  # Debian packages reported: far more than fit in the box
        height = box.evaluate("e => e.clientHeight")
        assert height < box.evaluate("e => e.scrollHeight")
        assert height <= 320
    expect(box).to_have_attribute("tabindex", "0")  # scrollable by keyboard
    expect(page.get_by_role("heading", name="Recent events")).to_be_visible()


def test_events_read_in_words(admin_page: Page, site: Site) -> None:
    site.add_node("words-01")
    page = admin_page
    page.goto("/events?node=words-01")
    row = page.locator("table.events tbody tr").first
    expect(row).to_contain_text("Add node")
    expect(row.locator("td").nth(1)).to_have_text("admin")
    expect(page.locator("table.events")).not_to_contain_text("admin:admin")
    expect(page.locator("table.events")).not_to_contain_text("add-node")


def test_narrow_cards_keep_values_aligned_and_apart(browser: Browser, site: Site) -> None:
    node = site.add_node("cards-01", roles=("sip",), public_ip="203.0.113.71")
    context = browser.new_context(viewport={"width": 420, "height": 800}, base_url=site.url)
    try:
        page = context.new_page()
        sign_in(page)
        row = page.locator(f"#node-{node.id}")
        ip = row.locator(".ips .mono").first.bounding_box()
        label = row.locator(".ips small").first.bounding_box()
        status = row.locator(".badge").bounding_box()
        hostname = row.locator("td[data-label=Hostname] a").bounding_box()
        assert ip is not None
        assert label is not None
        assert status is not None
        assert hostname is not None
        assert label["x"] - (ip["x"] + ip["width"]) >= 3  # "10.0.0.11 private", not glued
        assert abs(ip["x"] - status["x"]) <= 1  # every value starts in the same column
        assert abs(ip["x"] - hostname["x"]) <= 1
    finally:
        context.close()


def test_main_pages_have_no_broken_link_nor_failed_request(admin_page: Page, site: Site) -> None:
    node = site.add_node("links-01", roles=("jabber",))
    page = admin_page
    failed: list[str] = []

    def watch(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("response", watch)
    links: set[str] = set()
    for path in ("/", f"/nodes/{node.id}/info", "/events", "/storage", "/wizard"):
        page.goto(path)
        links.update(page.evaluate(FAULTS))
    expect(page.get_by_role("navigation", name="Breadcrumb")).to_be_visible()
    page.goto("/storage")
    expect(page.get_by_role("navigation", name="Breadcrumb").get_by_role("link")).to_have_text(
        "Cloud Management"
    )
    assert failed == []  # no 404 for the favicon or anything else
    for href in sorted(links):
        if "/logout" in href:
            continue
        status = page.request.get(href).status
        assert status < 400, f"{href} answers {status}"


def test_a_wrong_address_is_a_page_not_json(admin_page: Page) -> None:
    page = admin_page
    for path in ("/nodes/abc/info", "/no-such-page"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text(f"There is no page at {path}")
        expect(page.locator("body")).not_to_contain_text('"detail"')
        expect(page.get_by_role("link", name="Back to Cloud Management")).to_be_visible()
    api = page.request.get("/api/v1/no-such-thing", headers={"accept": "application/json"})
    assert api.status == 404
    assert api.json() == {"detail": "Not Found"}  # the API keeps answering JSON


def test_a_live_update_keeps_the_keyboard_focus_and_the_ring_is_solid(
    admin_page: Page, site: Site
) -> None:
    here = site.add_node("focus-01", roles=("jabber",))
    other = site.add_node("focus-02", roles=("jabber",))
    page = admin_page
    page.goto("/")
    # no agent has joined: Activate asks first (a link to its confirmation), in the row's menu
    button = open_actions(page, here.id).get_by_role("link", name="Activate focus-01", exact=True)
    button.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focus by keyboard, so :focus-visible applies
    assert page.evaluate("document.activeElement.id") == f"n{here.id}-activate"
    ring = button.evaluate(
        "e => { const s = getComputedStyle(e); return [s.outlineStyle, s.outlineWidth]; }"
    )
    assert ring == ["solid", "2px"]
    site.controller.nodes.action(other.id, "standby", actor=ADMIN)
    expect(page.locator(f"#node-{other.id}")).to_have_attribute("data-status", "StandBy")
    assert page.evaluate("document.activeElement.id") == f"n{here.id}-activate"
    # the open menu stayed open through the update, loaded again, the focus still in it
    expect(page.locator(f"#n{here.id}-actions")).not_to_have_attribute("aria-busy", "true")
    expect(page.locator(f"#n{here.id}-menu")).to_have_attribute("aria-expanded", "true")
    assert page.evaluate("document.activeElement.id") == f"n{here.id}-activate"
    # its own row changing too: the menu then offers what the node's new status allows
    site.controller.nodes.action(here.id, "standby", actor=ADMIN)
    expect(page.locator(f"#node-{here.id}")).to_have_attribute("data-status", "StandBy")
    menu = page.locator(f"#n{here.id}-actions")
    expect(menu.locator(f"#n{here.id}-standby")).to_have_attribute("aria-disabled", "true")
    expect(menu).not_to_have_attribute("aria-busy", "true")
    assert page.evaluate("document.activeElement.id") == f"n{here.id}-activate"
    # Escape closes the menu and gives the keyboard back to its button
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    assert page.evaluate("document.activeElement.id") == f"n{here.id}-menu"


def test_a_row_menu_opened_by_keyboard_takes_the_focus_and_gives_it_back(
    admin_page: Page, site: Site
) -> None:
    node = site.add_node("keys-01", roles=("jabber",))
    page = admin_page
    page.goto("/")
    toggle = page.locator(f"#n{node.id}-menu")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.focus()
    page.keyboard.press("Enter")  # opens the menu: the keyboard goes to its first action
    expect(page.locator(f"#n{node.id}-actions")).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator(f"#n{node.id}-assign-role")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator(f"#n{node.id}-edit")).to_be_focused()
    page.keyboard.press("Escape")  # closes it: the keyboard is back on its button
    expect(page.locator(f"#n{node.id}-actions")).to_be_hidden()
    expect(toggle).to_be_focused()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")  # and opens again, loaded again
    expect(page.locator(f"#n{node.id}-assign-role")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # the button closes its open menu too, without a request
    expect(page.locator(f"#n{node.id}-actions")).to_be_hidden()


MENU_LOAD = re.compile(r"/nodes/\d+/actions\?")


def test_open_row_menus_follow_live_updates_and_stay_as_the_user_left_them(
    admin_page: Page, site: Site
) -> None:
    nodes = [site.add_node(f"menus-{n:02}", roles=("jabber",)) for n in range(3)]
    other = site.add_node("menus-other", roles=("jabber",))
    page = admin_page
    page.goto("/")
    for node in nodes:
        open_actions(page, node.id)

    # three menus open: a live update loads each again, offering what its node now allows
    for node in nodes:
        site.controller.nodes.action(node.id, "standby", actor=ADMIN)
    for node in nodes:
        expect(page.locator(f"#node-{node.id}")).to_have_attribute("data-status", "StandBy")
        menu = page.locator(f"#n{node.id}-actions")
        expect(menu.locator(f"#n{node.id}-standby")).to_have_attribute("aria-disabled", "true")
        expect(menu).not_to_have_attribute("aria-busy", "true")

    # a menu closed while its reload is on the way stays closed when the answer comes
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route(MENU_LOAD, hold)
    site.controller.nodes.action(other.id, "standby", actor=ADMIN)
    expect(page.locator(f"#node-{other.id}")).to_have_attribute("data-status", "StandBy")
    wait_for(lambda: page.wait_for_timeout(50) or len(held) >= 3, what="the three reloads held")
    closed = nodes[0]
    page.locator(f"#n{closed.id}-menu").click()
    expect(page.locator(f"#n{closed.id}-actions")).to_be_hidden()

    # a menu asked for just before a live update replaces its row opens in the new row
    page.locator(f"#n{other.id}-menu").click()
    wait_for(lambda: page.wait_for_timeout(50) or len(held) >= 4, what="the opening held")
    site.controller.nodes.action(nodes[2].id, "deactivate", actor=ADMIN)
    expect(page.locator(f"#node-{nodes[2].id}")).to_have_attribute("data-status", "Deactivated")
    for route in held:
        route.continue_()
    page.unroute(MENU_LOAD, hold)
    expect(page.locator(f"#n{other.id}-actions [data-action]").first).to_be_visible()
    expect(page.locator(f"#n{other.id}-menu")).to_have_attribute("aria-expanded", "true")
    for node in nodes[1:]:
        expect(page.locator(f"#n{node.id}-actions")).not_to_have_attribute("aria-busy", "true")
    expect(page.locator(f"#n{nodes[2].id}-actions #n{nodes[2].id}-deactivate")).to_have_attribute(
        "aria-disabled", "true"
    )
    page.wait_for_timeout(500)  # every held answer has come back by now
    expect(page.locator(f"#n{closed.id}-actions")).to_be_hidden()
    expect(page.locator(f"#n{closed.id}-menu")).to_have_attribute("aria-expanded", "false")


def test_a_parameter_that_follows_a_property_names_it_as_the_properties_page_does(
    admin_page: Page, site: Site
) -> None:
    node = site.add_node("hint-01")
    page = admin_page
    page.goto(f"/nodes/{node.id}/roles/new?role=que")
    expect(page.locator("#h-p_username")).to_contain_text(
        "Default: the Infrastructure Property “Queue username”."
    )
    expect(page.get_by_label("Username")).to_have_attribute("placeholder", "from Queue username")
    page.goto("/infrastructure/properties")
    expect(page.get_by_label("Queue username")).to_be_visible()  # the same name there


def test_a_form_reached_by_its_address_offers_only_what_the_status_allows(
    admin_page: Page, site: Site
) -> None:
    spare = site.add_node("spare-01")
    site.controller.nodes.action(spare.id, "standby", actor=ADMIN)
    gone = site.add_node("gone-01")
    site.controller.nodes.delete(gone.id, actor=ADMIN)
    controller_node = next(n for n in site.controller.nodes.list(_all()).items if n.is_controller)
    page = admin_page
    for path, text in (
        (
            f"/nodes/{spare.id}/roles/new",
            "Assign Role is not available while node spare-01 is StandBy",
        ),
        (f"/nodes/{gone.id}/edit", "Edit node is not available: node gone-01 is Deleted."),
        (f"/nodes/{gone.id}/actions/mark-damaged", "Mark Damaged is not available: node gone-01"),
        (f"/nodes/{controller_node.id}/delete", "cannot be deleted"),
    ):
        response = page.goto(path)
        assert response is not None
        assert response.status == 409, path
        expect(page.get_by_role("alert")).to_contain_text(text)
        expect(page.locator("form[method=post] button.button-primary")).to_have_count(0)
    page.goto(f"/nodes/{gone.id}/info")  # View Info stays available for history
    expect(page.locator("#info-reason")).to_be_visible()
