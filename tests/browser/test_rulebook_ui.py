"""The web interface explains itself from the rulebook (issue 13): a state change on an Online
node, or one that cuts an agent off, asks first and says the consequence; an unavailable action
is shown disabled with the same reason the API gives; failure reasons are sentences in the
listing; the extension count is on the Cloud Management page; nothing is cut off at 800 px;
dialogs do not put the keyboard on their close button."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    ADMIN,
    ADMIN_PASSWORD,
    Site,
    disabled_actions,
    open_actions,
    role_actions,
    row_actions,
    screenshot,
    sign_in,
)
from tests.support.processes import wait_for

# the listing's data-action -> the operation name the API's `actions` use
API_NAME = {"edit": "edit-node"}


@pytest.fixture
def api(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=30) as client:
        answer = client.post(
            "/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        answer.raise_for_status()
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


def api_actions(api: httpx.Client, node_id: int) -> list[dict[str, Any]]:
    answer = api.get(f"/api/v1/nodes/{node_id}")
    assert answer.status_code == 200, answer.text
    actions: list[dict[str, Any]] = answer.json()["actions"]
    return actions


def node_action(
    actions: list[dict[str, Any]], name: str, role: str | None = None
) -> dict[str, Any]:
    (found,) = [a for a in actions if a["name"] == name and a.get("role") == role]
    return found


def online(site: Site, node_id: int) -> None:
    """Start the node's agent and bring the node Online (through the services)."""
    site.start_agent(node_id)
    wait_for(
        lambda: site.controller.connectivity(site.node(node_id))[0].value == "connected",
        timeout=20,
        what=f"the agent of node {node_id} to connect",
    )
    site.controller.nodes.action(node_id, "activate", actor=ADMIN)
    site.wait_status(node_id, "Online")


def test_deactivate_the_online_ic_node_asks_naming_it(
    admin_page: Page, site: Site, api: httpx.Client
) -> None:
    ic = site.node(1)
    online(site, ic.id)
    page = admin_page
    page.reload()
    row = page.locator("#node-1")
    expect(row).to_have_attribute("data-status", "Online")
    open_actions(page, 1).get_by_role("link", name=f"Deactivate {ic.hostname}").click()
    layer = page.locator("#layer")
    expect(layer).to_be_visible()
    expect(layer).to_contain_text(f"Deactivate node {ic.hostname} (NodeID 1, Online)?")
    warning = layer.locator(".warning")
    expect(warning).to_contain_text(f"Node {ic.hostname} is Online")
    expect(warning).to_contain_text("It is the Infrastructure Controller node")
    expect(warning).to_contain_text("DeactivatePending")
    # the very sentence the API gives as the consequence to confirm
    consequence = node_action(api_actions(api, 1), "deactivate")["confirm"]
    assert consequence
    assert "Infrastructure Controller node" in consequence
    expect(warning).to_have_text(consequence)
    screenshot(page, "confirm-deactivate-ic", full_page=False)

    layer.get_by_role("button", name="Cancel").click()
    expect(layer).to_be_hidden()
    assert site.node(1).status.value == "Online"  # asking changed nothing

    open_actions(page, 1).get_by_role("link", name=f"Deactivate {ic.hostname}").click()
    layer.get_by_role("button", name="Deactivate").click()
    expect(page.get_by_role("status")).to_contain_text(ic.hostname)
    site.wait_status(1, "Deactivated")  # its agent signed it
    expect(row).to_have_attribute("data-status", "Deactivated", timeout=10_000)


def test_regenerate_the_key_of_a_connected_agent_says_it_is_cut_off(
    admin_page: Page, site: Site
) -> None:
    node = site.add_node("rekey-live", roles=("wk",))
    online(site, node.id)
    old = site.session_key(node.id)
    page = admin_page
    page.goto(f"/nodes/{node.id}/info")
    page.get_by_role("link", name="Regenerate…").click()
    expect(page.get_by_role("heading", name="Regenerate session key: rekey-live")).to_be_visible()
    warning = page.locator(".warning")
    expect(warning).to_contain_text("The current session key of node rekey-live stops working")
    expect(warning).to_contain_text("is connected now: it is cut off at once")
    expect(warning).to_contain_text("the node keeps its status, its agent shown lost")
    screenshot(page, "confirm-regenerate", full_page=False)
    assert site.session_key(node.id) == old  # asking changed nothing

    page.get_by_role("button", name="Regenerate session key").click()
    expect(page.get_by_role("heading", name="Session key of rekey-live")).to_be_visible()
    new = site.session_key(node.id)
    assert new != old
    expect(page.locator("#session-key")).to_have_text(new)
    expect(page.locator("#agent-command")).to_contain_text("voipcloud agent")
    expect(page.locator("#agent-command")).to_contain_text(site.url)
    # an Online node needs no activation after a new key: the page says so
    expect(page.locator("#next-step")).to_contain_text("stays Online")
    expect(page.locator("#next-step")).not_to_contain_text("activate the node")
    expect(page.get_by_role("link", name="Assign another role")).to_have_count(0)
    screenshot(page, "regenerated-key")
    # as announced: still Online, its agent lost
    page.goto("/")
    row = page.locator(f"#node-{node.id}")
    expect(row.locator(".conn")).to_have_text("lost", timeout=20_000)
    expect(row).to_have_attribute("data-status", "Online")


@pytest.mark.parametrize("site", [{"activation_timeout": 2}], indirect=True)
def test_activate_without_an_agent_warns_then_fails_with_a_sentence(
    admin_page: Page, site: Site, api: httpx.Client
) -> None:
    never = site.add_node("never-joined", roles=("wk",))
    gone = site.add_node("agent-gone", roles=("wk",))
    agent = site.start_agent(gone.id)
    page = admin_page
    page.reload()
    row = page.locator(f"#node-{gone.id}")
    expect(row.locator(".conn")).to_have_text("connected", timeout=20_000)
    agent.stop()
    expect(row.locator(".conn")).to_have_text("lost", timeout=20_000)

    # never joined: Activate asks first, saying what will happen
    layer = page.locator("#layer")
    open_actions(page, never.id).get_by_role("link", name="Activate never-joined").click()
    warning = layer.locator(".warning")
    expect(warning).to_have_text(
        "Activate is carried out by the node's agent, and the agent of node never-joined has "
        "never joined. Unless it joins within 2 s, the operation fails and the node is "
        "ActivateFailed."
    )
    # (the API's `actions[].confirm` names the rulebook's default 60 s, not this controller's
    # activation timeout: reported, not asserted here)
    assert node_action(api_actions(api, never.id), "activate")["allowed"] is True
    layer.get_by_role("button", name="Activate anyway").click()
    never_row = page.locator(f"#node-{never.id}")
    expect(never_row).to_have_attribute("data-status", "ActivateFailed", timeout=15_000)
    expect(never_row.locator(f"#n{never.id}-reason")).to_have_text(
        "no report from the agent within 2 s — the agent has never joined"
    )

    # lost: the warning says since when; the failure says so in the row, not only on hover
    open_actions(page, gone.id).get_by_role("link", name="Activate agent-gone").click()
    expect(warning).to_contain_text(
        re.compile(r"the agent of node agent-gone is lost \(last seen [0-9-]+ [0-9:]+ UTC\)")
    )
    layer.get_by_role("button", name="Activate anyway").click()
    expect(row).to_have_attribute("data-status", "ActivateFailed", timeout=15_000)
    reason = row.locator(f"#n{gone.id}-reason")
    expect(reason).to_be_visible()
    expect(reason).to_have_text(
        re.compile(
            r"^no report from the agent within 2 s — the agent has not been seen since "
            r"\d\d:\d\d:\d\d UTC$"
        )
    )
    assert site.node(gone.id).status_reason == reason.inner_text()
    screenshot(page, "inline-failure-reasons")


def test_disabled_buttons_say_the_api_reason(
    admin_page: Page, site: Site, api: httpx.Client
) -> None:
    c = site.controller
    empty = site.add_node("no-roles")
    spare = site.add_node("spare-02", roles=("que",))
    c.nodes.action(spare.id, "standby", actor=ADMIN)
    page = admin_page
    page.reload()
    checked = 0
    for node_id in (1, empty.id, spare.id):
        actions = api_actions(api, node_id)
        refused = disabled_actions(page, node_id)
        assert refused, node_id
        for key, title in refused.items():
            answer = node_action(actions, API_NAME.get(key, key))
            assert answer["allowed"] is False, (node_id, key)
            assert title == answer["reason"], (node_id, key)
            shown = page.locator(f"#n{node_id}-{key}")
            expect(shown).to_have_attribute("data-rule", answer["rule"])
            expect(shown).to_have_attribute("aria-disabled", "true")
            expect(shown).to_have_attribute("aria-label", re.compile(re.escape(answer["reason"])))
            checked += 1
        # and what is a button is exactly what the API allows
        offered = {API_NAME.get(k, k) for k in row_actions(page, node_id) - {"info"}}
        allowed_here = {
            a["name"] for a in actions if a["allowed"] and a["name"] in offered | set(refused)
        }
        assert offered == allowed_here, node_id
    assert checked >= 10
    # the IC node's Delete Node and an empty node's Activate, by their reasons
    expect(page.locator("#n1-delete")).to_have_attribute("title", re.compile("cannot be deleted"))
    expect(page.locator(f"#n{empty.id}-activate")).to_have_attribute(
        "title", re.compile("assign at least one role first")
    )
    # a disabled button does nothing when clicked
    page.locator(f"#n{empty.id}-activate").click(force=True)
    expect(page.locator("#layer")).to_be_hidden()
    assert site.node(empty.id).status.value == "Offline"
    screenshot(page, "disabled-with-reason")


def test_extension_count_and_remove_disabled_at_three(
    admin_page: Page, site: Site, api: httpx.Client
) -> None:
    c = site.controller
    for code in ("jabber", "que"):
        c.roles.assign(1, actor=ADMIN, role=code, parameters={})
    for number in ("101", "102"):
        c.extensions.add(actor=ADMIN, number=number)
    page = admin_page
    page.reload()
    count = page.locator("#extension-count")
    expect(count).to_contain_text("Extensions provisioned: 2")
    expect(count).to_contain_text("Administrative Remove needs fewer than 3")
    assert role_actions(page, 1) == {
        "ic": set(),
        "jabber": {"delete-assignment", "remove"},
        "que": {"delete-assignment", "remove"},
    }

    c.extensions.add(actor=ADMIN, number="103")
    page.reload()
    expect(count).to_contain_text("Extensions provisioned: 3")
    assert role_actions(page, 1) == {
        "ic": set(),
        "jabber": {"delete-assignment"},
        "que": {"delete-assignment"},
    }
    assert role_actions(page, 1, disabled=True) == {
        "ic": set(),
        "jabber": {"remove"},
        "que": {"remove"},
    }
    actions = api_actions(api, 1)
    for code in ("jabber", "que"):
        answer = node_action(actions, "admin-remove", role=code)
        assert answer["allowed"] is False
        assert answer["rule"] == "admin-remove-extensions"
        assert "fewer than three extensions" in answer["reason"]
        remove = page.locator(f"#n1-{code}-remove")
        expect(remove).to_have_attribute("title", answer["reason"])
        expect(remove).to_have_attribute("data-rule", "admin-remove-extensions")
    screenshot(page, "extension-count-remove-disabled")


def _outside(page: Page, node_id: int) -> list[str]:
    """The action buttons of the row that are not wholly inside the viewport."""
    width = page.viewport_size["width"] if page.viewport_size else 0
    found = []
    open_actions(page, node_id)
    buttons = page.locator(f"#node-{node_id} [data-action], #node-{node_id} [data-role-action]")
    assert buttons.count() >= 10
    for button in buttons.all():
        box = button.bounding_box()
        assert box is not None
        if box["x"] < 0 or box["x"] + box["width"] > width + 0.5:
            found.append(f"{button.get_attribute('id')} {box}")
    return found


def test_every_action_button_is_inside_an_800px_window(browser: Browser, site: Site) -> None:
    c = site.controller
    for code in ("jabber", "que", "wk"):
        c.roles.assign(1, actor=ADMIN, role=code, parameters={})
    busy = site.add_node(
        "a-rather-long-hostname-01.example.com",
        roles=("pbx", "jabber"),
        public_ip="203.0.113.70",
    )
    spare = site.add_node("spare-03", roles=("wk",))
    c.nodes.action(spare.id, "standby", actor=ADMIN)
    context = browser.new_context(viewport={"width": 800, "height": 900}, base_url=site.url)
    try:
        page = context.new_page()
        sign_in(page)
        expect(page.get_by_role("heading", name="Node Listing")).to_be_visible()
        for width in (800, 1024, 1101, 1280):  # cards up to 1100 px, the table above
            page.set_viewport_size({"width": width, "height": 900})
            screenshot(page, f"cloud-management-{width}px")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, width
            for node_id in (1, busy.id, spare.id):
                assert _outside(page, node_id) == [], (width, node_id)
    finally:
        context.close()


def test_enter_in_a_dialog_does_its_primary_action_not_close(admin_page: Page, site: Site) -> None:
    node = site.add_node("enter-01", roles=("wk",))
    doomed = site.add_node("enter-02", roles=("wk",))
    site.controller.nodes.action(doomed.id, "standby", actor=ADMIN)
    page = admin_page
    page.reload()
    layer = page.locator("#layer")

    # View Info has no form: Enter leaves it open
    page.locator(f"#node-{node.id}").get_by_role("link", name="View Info").click()
    expect(layer).to_be_visible()
    assert page.evaluate("document.activeElement.classList.contains('layer-close')") is False
    expect(layer.locator("#layer-title")).to_be_focused()  # read first; Enter does nothing
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    expect(layer).to_be_visible()
    page.keyboard.press("Escape")
    expect(layer).to_be_hidden()

    # a confirmation: the keyboard is on the primary button, Enter confirms
    open_actions(page, doomed.id).get_by_role("link", name="Delete Node").click()
    primary = layer.get_by_role("button", name="Delete Node")
    expect(primary).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Node enter-02 deleted.")).to_be_visible()
    assert site.node(doomed.id).status.value == "Deleted"
