"""Fleet operations in the browser: "select all N matching" + a bulk Fix with its per-node
result table, the status counters filtering the listing (keeping the other filters), row ticks
kept across the listing's live updates, and maintenance from Quick info."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, Site, screenshot
from voipcloud.domain import policy
from voipcloud.domain.lifecycle import Operation


def online(site: Site, hostname: str) -> int:
    node = site.add_node(hostname, roles=("que",))
    c = site.controller
    started = c.nodes.action(node.id, "activate", actor=ADMIN)
    assert started.operation_id
    c.operations.report(node.id, operation_id=started.operation_id, success=True)
    assert site.node(node.id).status.value == "Online"
    return node.id


def damaged(site: Site, hostname: str) -> int:
    node_id = online(site, hostname)
    site.controller.nodes.action(node_id, "mark-damaged", actor=ADMIN, reason="disk errors")
    return node_id


def test_select_all_matching_then_bulk_fix_shows_each_nodes_result(
    admin_page: Page, site: Site
) -> None:
    fine = [online(site, f"que-o{n}") for n in range(4)]
    broken = [damaged(site, f"que-d{n:02}") for n in range(22)]
    kept = broken[-1]  # the last one: on page 2, and in maintenance
    site.controller.maintenance.enter(kept, actor=ADMIN, reason="vendor on site")
    other = site.add_node("jabber-x", roles=("jabber",))  # not matched by the filter
    page = admin_page
    page.goto("/?role=que&per_page=25")
    expect(page.locator("tbody tr[data-node-id]")).to_have_count(25)  # one page of 26
    expect(page.locator(f"#node-{kept}")).to_have_count(0)  # not on this page
    page.locator("#select-all-matching").check()
    expect(page.locator("#bulk-selected")).to_have_text("All 26 matching nodes selected")
    page.locator("#bulk-action").select_option("fix")
    page.locator("#bulk-reason").fill("after the disk swap")
    page.locator("#bulk-submit").click()
    expect(page.locator("h1")).to_have_text("Fix Node: 26 nodes?")
    expect(page.locator("#bulk-question")).to_contain_text("every node matching role que")
    expect(page.locator("#bulk-maintenance-note")).to_contain_text("1 of them is in maintenance")
    screenshot(page, "fleet-bulk-confirm")
    page.locator("#bulk-confirm").click()
    expect(page.locator("h1")).to_have_text("Fix Node: results")
    rows = page.locator("#bulk-results tbody tr")
    expect(rows).to_have_count(26)
    expect(page.locator("#bulk-summary")).to_have_text("21 done, 5 refused")
    screenshot(page, "fleet-bulk-results")
    for node_id in [*broken, *fine]:
        row = page.locator(f"#result-{node_id}")
        facts = policy.NodeFacts(
            hostname="x",
            status=site.node(node_id).status,
            maintenance="vendor on site" if node_id == kept else None,
        )
        expected = policy.decide(Operation.FIX, facts, leave_out_maintenance=True)
        if node_id in broken and node_id != kept:
            # done: its fix is pending for the agent (the status stays Damaged until it reports)
            expect(row).to_have_attribute("data-outcome", "done")
            assert site.node(node_id).pending_operation == "fix"
        else:
            expect(row).to_have_attribute("data-outcome", "refused")
            expect(row).to_have_attribute("data-rule", str(expected.rule))
            assert site.node(node_id).pending_operation is None
    expect(page.locator(f"#result-{kept}")).to_contain_text("in maintenance")
    expect(page.locator(f"#result-{fine[0]}")).to_contain_text("Fix Node is not available")
    expect(page.locator(f"#result-{other.id}")).to_have_count(0)
    page.locator("#bulk-back").click()
    expect(page).to_have_url(re.compile(r"/\?role=que$"))  # 25 a page: the default


def test_counters_filter_the_listing_and_keep_the_other_filters(
    admin_page: Page, site: Site
) -> None:
    d1, d2 = damaged(site, "sip-d1"), damaged(site, "web-d2")
    o1 = online(site, "sip-o1")
    site.add_node("spare-1")
    site.controller.maintenance.enter(d2, actor=ADMIN, reason="cabling")
    page = admin_page
    page.goto("/")
    expect(page.locator("#count-Damaged")).to_contain_text("2")
    expect(page.locator("#count-Online")).to_contain_text("1")
    expect(page.locator("#count-maintenance")).to_contain_text("1")
    expect(page.locator("#count-all")).to_have_attribute("aria-current", "true")
    screenshot(page, "fleet-counters")
    # with a search in place, a counter keeps it
    page.locator("#q").fill("-d")
    page.get_by_role("button", name="Apply").click()
    page.locator("#count-Damaged").click()
    expect(page).to_have_url(re.compile(r"q=-d"))
    expect(page).to_have_url(re.compile(r"status=Damaged"))
    expect(page.locator("#count-Damaged")).to_have_attribute("aria-current", "true")
    shown = page.locator("tbody tr[data-node-id]")
    expect(shown).to_have_count(2)
    assert set(shown.evaluate_all("rs => rs.map(r => +r.dataset.nodeId)")) == {d1, d2}
    page.locator("#count-maintenance").click()
    expect(page).to_have_url(re.compile(r"maintenance=yes"))
    expect(shown).to_have_count(1)
    expect(page.locator(f"#node-{d2}")).to_have_attribute("data-maintenance", "yes")
    expect(page.locator(f"#n{d2}-maintenance")).to_be_visible()
    page.locator("#count-all").click()
    expect(page).to_have_url(re.compile(r"q=-d"))
    expect(page.locator(f"#node-{o1}")).to_have_count(0)  # the search still applies


def test_ticks_survive_live_updates_and_maintenance_from_quick_info(
    admin_page: Page, site: Site
) -> None:
    a, b = site.add_node("tick-a"), site.add_node("tick-b")
    c = site.add_node("tick-c")
    page = admin_page
    page.goto("/?q=tick-")
    page.locator(f"#select-{a.id}").check()
    page.locator(f"#select-{c.id}").check()
    expect(page.locator("#bulk-selected")).to_have_text("2 nodes selected")
    # a change elsewhere makes the listing update itself; the ticks stay
    site.controller.nodes.edit(b.id, actor=ADMIN, changes={"hostname": "tick-b2"})
    expect(page.locator(f"#node-{b.id}")).to_have_attribute("data-hostname", "tick-b2")
    expect(page.locator(f"#select-{a.id}")).to_be_checked()
    expect(page.locator(f"#select-{b.id}")).not_to_be_checked()
    expect(page.locator(f"#select-{c.id}")).to_be_checked()
    # Quick info: Enter Maintenance with a reason, the listing marks it
    page.locator(f"#n{a.id}-host").click()
    expect(page.locator("#info-maintenance")).to_have_attribute("data-maintenance", "no")
    page.locator("#maintenance-reason").fill("firmware update")
    page.locator("#enter-maintenance").click()
    expect(page.locator(".flash-success")).to_contain_text("tick-a is in maintenance")
    expect(page.locator(f"#n{a.id}-maintenance")).to_be_visible()
    page.locator(f"#n{a.id}-host").click()
    expect(page.locator("#info-maintenance-reason")).to_have_text("firmware update")
    expect(page.locator("#info-maintenance-by")).to_contain_text("admin:admin")
    screenshot(page, "fleet-quick-info-maintenance", full_page=False)
    page.keyboard.press("Escape")
    # a bulk Set StandBy of the ticked nodes leaves the one in maintenance out
    page.locator(f"#select-{a.id}").check()
    page.locator(f"#select-{c.id}").check()
    page.locator("#bulk-action").select_option("standby")
    page.locator("#bulk-submit").click()
    expect(page.locator("h1")).to_have_text("Set StandBy: 2 nodes?")
    page.locator("#bulk-confirm").click()
    expect(page.locator(f"#result-{a.id}")).to_have_attribute("data-rule", "node-in-maintenance")
    expect(page.locator(f"#result-{c.id}")).to_have_attribute("data-outcome", "done")
    assert site.node(a.id).status.value == "Offline"
    assert site.node(c.id).status.value == "StandBy"
    # Leave Maintenance from Quick info
    page.goto("/?q=tick-")
    page.locator(f"#n{a.id}-host").click()
    page.locator("#leave-maintenance").click()
    expect(page.locator(".flash-success")).to_contain_text("tick-a left maintenance")
    expect(page.locator(f"#n{a.id}-maintenance")).to_have_count(0)
    assert site.node(a.id).maintenance is None
