"""Every action button can be used exactly when the node's status allows it (SPEC.md section
5, written out here independently of the code's own table) and is otherwise shown disabled with
the reason (never hidden), Delete Node is never offered for an Online or Damaged node, and
Administrative Remove shows its warning before it acts.
(Online, Damaged, DeactivatePending and ActivateFailed, which need a real agent, are in
test_live.py.)"""

from __future__ import annotations

import re

from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import (
    ADMIN,
    ALL_ROW_ACTIONS,
    Site,
    disabled_actions,
    open_actions,
    role_actions,
    row_actions,
    screenshot,
)
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.roles import ROLES
from voipcloud.services.roles import removal_warning

# status -> the row actions SPEC.md section 5 allows (View Info is always there)
EXPECTED = {
    "Offline": {"info", "assign-role", "edit", "standby", "activate", "delete"},
    "StandBy": {"info", "edit", "activate", "deactivate", "delete"},
    "Deactivated": {"info", "assign-role", "edit", "standby", "activate", "delete"},
    "Deleted": {"info"},
}
# Delete Assignment: Offline, ActivateFailed, Deactivated only
DELETE_ASSIGNMENT = {"Offline": True, "StandBy": False, "Deactivated": True, "Deleted": False}


def test_actions_follow_the_status(admin_page: Page, site: Site) -> None:
    c = site.controller
    offline = site.add_node("offline-01", roles=("jabber",))
    empty = site.add_node("empty-01")
    standby = site.add_node("standby-01", roles=("que",))
    c.nodes.action(standby.id, "standby", actor=ADMIN)
    deactivated = site.add_node("deactivated-01", roles=("wk",))
    c.nodes.action(deactivated.id, "standby", actor=ADMIN)
    c.nodes.action(deactivated.id, "deactivate", actor=ADMIN)
    deleted = site.add_node("deleted-01", roles=("es",))
    c.nodes.delete(deleted.id, actor=ADMIN)

    page = admin_page
    page.reload()
    for node, status in (
        (offline, "Offline"),
        (standby, "StandBy"),
        (deactivated, "Deactivated"),
    ):
        expect(page.locator(f"#node-{node.id}")).to_have_attribute("data-status", status)
        assert row_actions(page, node.id) == EXPECTED[status], status
        refused = disabled_actions(page, node.id)
        assert set(refused) == ALL_ROW_ACTIONS - EXPECTED[status], status  # shown, not hidden
        assert all(reason.strip() for reason in refused.values()), refused
        expected_roles = {"delete-assignment"} if DELETE_ASSIGNMENT[status] else set()
        assert role_actions(page, node.id) == {node.roles[0]: expected_roles}, status
        assert role_actions(page, node.id, disabled=True) == {
            node.roles[0]: {"delete-assignment"} - expected_roles
        }, status
    # Activate needs a role: shown disabled, saying so
    assert row_actions(page, empty.id) == EXPECTED["Offline"] - {"activate"}
    assert "assign at least one role" in disabled_actions(page, empty.id)["activate"]
    # the IC node is never deletable; its ic role is never unassigned nor removed
    assert row_actions(page, 1) == EXPECTED["Offline"] - {"delete"}
    assert "cannot be deleted" in disabled_actions(page, 1)["delete"]
    assert role_actions(page, 1) == {"ic": set()}
    assert role_actions(page, 1, disabled=True) == {"ic": set()}
    screenshot(page, "cloud-management-statuses")
    # Deleted nodes are hidden from the default listing, shown behind the filter
    expect(page.locator(f"#node-{deleted.id}")).to_have_count(0)
    page.get_by_label("Status").select_option("Deleted")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(f"#node-{deleted.id}")).to_have_attribute("data-status", "Deleted")
    assert row_actions(page, deleted.id) == EXPECTED["Deleted"]
    assert set(disabled_actions(page, deleted.id)) == ALL_ROW_ACTIONS
    assert page.locator(f"#node-{deleted.id} li[data-role]").count() == 0  # roles released


def test_set_standby_then_delete_with_confirmation(admin_page: Page, site: Site) -> None:
    node = site.add_node("spare-01", roles=("wk",))
    page = admin_page
    page.reload()
    row = page.locator(f"#node-{node.id}")
    open_actions(page, node.id).get_by_role("button", name="Set StandBy").click()
    expect(row).to_have_attribute("data-status", "StandBy")
    open_actions(page, node.id).get_by_role("link", name="Delete Node").click()
    layer = page.locator("#layer")
    expect(layer.get_by_role("heading", name="Delete Node: spare-01")).to_be_visible()
    layer.get_by_role("button", name="Cancel").click()
    expect(layer).to_be_hidden()
    assert site.node(node.id).status.value == "StandBy"  # asking changed nothing

    open_actions(page, node.id).get_by_role("link", name="Delete Node").click()
    layer.get_by_role("button", name="Delete Node").click()
    expect(page.get_by_text("Node spare-01 deleted.")).to_be_visible()
    expect(row).to_have_count(0)
    assert site.node(node.id).status.value == "Deleted"


def test_delete_assignment_asks_first(admin_page: Page, site: Site) -> None:
    node = site.add_node("two-roles", roles=("jabber", "que"))
    page = admin_page
    page.reload()
    role = page.locator(f"#node-{node.id} li[data-role=que]")
    role.get_by_role("link", name="Delete Assignment").click()
    layer = page.locator("#layer")
    expect(layer).to_contain_text("Delete the assignment of the Queue role (que)")
    layer.get_by_role("button", name="Delete Assignment").click()
    expect(page.get_by_text("Role que unassigned from node two-roles.")).to_be_visible()
    assert site.node(node.id).roles == ["jabber"]


def test_administrative_remove_shows_the_warning_then_removes(admin_page: Page, site: Site) -> None:
    c = site.controller
    for code in ("jabber", "que", "wk"):
        c.roles.assign(1, actor=ADMIN, role=code, parameters={})
    page = admin_page
    page.reload()
    ic = site.node(1)
    # Remove only next to SIP, PBX, Jabber, Queue, Management Interface roles of the IC node
    assert role_actions(page, 1) == {
        "ic": set(),
        "jabber": {"delete-assignment", "remove"},
        "que": {"delete-assignment", "remove"},
        "wk": {"delete-assignment"},
    }
    page.locator("#node-1 li[data-role=jabber]").get_by_role("link", name="Remove").click()
    layer = page.locator("#layer")
    warning = removal_warning(ROLES["jabber"], ic.hostname)  # no other node carries it
    expect(layer.locator("#remove-warning")).to_have_text(warning)
    expect(layer).to_contain_text("removed from the Infrastructure Controller node")
    expect(layer).to_contain_text("No other node carries this role")
    screenshot(page, "remove-warning", full_page=False)
    layer.get_by_role("button", name="Remove Jabber").click()
    expect(
        page.get_by_text(re.compile("Role jabber removed from the Infrastructure"))
    ).to_be_visible()
    assert site.node(1).roles == ["ic", "que", "wk"]

    # with three extensions provisioned, Remove is shown disabled, saying why
    for number in ("101", "102", "103"):
        c.extensions.add(actor=ADMIN, number=number)
    page.reload()
    assert role_actions(page, 1)["que"] == {"delete-assignment"}
    assert role_actions(page, 1, disabled=True)["que"] == {"remove"}
    remove = page.locator("#node-1 li[data-role=que] [data-role-action=remove]")
    expect(remove).to_have_attribute("aria-disabled", "true")
    expect(remove).to_have_attribute("title", re.compile("fewer than three extensions"))


def test_search_filters_sort_and_pages(admin_page: Page, site: Site) -> None:
    c = site.controller
    for number in range(30):
        node = c.nodes.add(
            actor=ADMIN, hostname=f"bulk-{number:02d}", private_ip=f"10.9.0.{number + 1}"
        )
        if number % 10 == 0:
            c.roles.assign(node.id, actor=ADMIN, role="jabber", parameters={})
    page = admin_page
    page.reload()
    expect(page.locator("#listing-total")).to_contain_text("Showing 1–25 of 31 nodes")
    page.get_by_role("link", name="Next ›").click()
    expect(page.locator("#listing-total")).to_contain_text("Showing 26–31 of 31 nodes")

    page.get_by_label("Search").fill("bulk-1")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#listing-total")).to_contain_text("of 10 nodes")

    page.get_by_label("Search").fill("10.9.0.7")
    page.get_by_role("button", name="Apply").click()
    hostnames = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.hostname)")
    assert hostnames == ["bulk-06"]

    page.goto("/")
    page.get_by_label("Role", exact=True).select_option("jabber")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#listing-total")).to_contain_text("of 3 nodes")

    page.goto("/?sort=-hostname")
    live = c.nodes.list(NodeFilter(limit=500)).items
    expected = sorted((n.hostname for n in live), reverse=True)[:25]
    hostnames = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.hostname)")
    assert hostnames == expected
    header = page.get_by_role("columnheader", name=re.compile("Hostname"))
    expect(header).to_have_attribute("aria-sort", "descending")


def test_a_menu_opens_on_a_page_shown_before_its_scripts_ran(admin_page: Page, site: Site) -> None:
    """CI once clicked a row's Actions on the page a form's post had just brought, shown but
    its deferred scripts not run yet: the button did nothing and the menu stayed closed. Here
    the page's htmx arrives 1.5 s late; the helpers open menus on it all the same (they wait for
    the page to finish loading), for the row the post changed and for another."""
    page = admin_page
    node = site.add_node("late-scripts", roles=("sip",), public_ip="203.0.113.52")
    other = site.add_node("late-other", roles=("sip",), public_ip="203.0.113.53")
    late: list[str] = []

    def late_script(route: Route) -> None:
        late.append(route.request.url)
        page.wait_for_timeout(1500)
        route.continue_()

    page.route(re.compile(r"/static/htmx\.min\.js"), late_script)
    open_actions(page, node.id).get_by_role("button", name="Set StandBy late-scripts").click()
    expect(page.get_by_role("status").filter(has_text="late-scripts")).to_be_visible()
    assert row_actions(page, node.id) == EXPECTED["StandBy"]
    assert row_actions(page, other.id) == EXPECTED["Offline"]
    assert late, "the page's htmx was not held: nothing was tried"
