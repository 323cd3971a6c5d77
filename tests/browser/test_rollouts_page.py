"""The Rollouts pages in Chromium, with real agents: start a rollout from the form, follow the
live progress bar, pause (the batch under way runs to its end, nothing new starts), resume;
bad input shown beside its field; the "Fix the N affected nodes" offer after an
Infrastructure Properties save that marked nodes Damaged."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, Site, screenshot
from tests.support.processes import wait_for

SLOW_FIX = '[roles.{role}]\napply = "sleep {seconds}"\n'


def online(site: Site, node_id: int, *, config: str = "") -> None:
    site.start_agent(node_id, config=config)
    wait_for(
        lambda: site.controller.connectivity(site.node(node_id))[0].value == "connected",
        timeout=30,
        what=f"the agent of node {node_id} to connect",
    )
    site.controller.nodes.action(node_id, "activate", actor=ADMIN)
    site.wait_status(node_id, "Online", timeout=30)


def outcomes(page: Page) -> dict[str, str]:
    rows = page.locator("#rollout-nodes tbody tr")
    pairs = rows.evaluate_all("rs => rs.map(r => [r.dataset.node, r.dataset.outcome])")
    return dict(pairs)


def test_start_follow_pause_and_resume_a_rollout(admin_page: Page, site: Site) -> None:
    page = admin_page
    ids = []
    for i in range(3):
        node = site.add_node(f"edge-{i}", roles=("wk",))
        online(site, node.id, config=SLOW_FIX.format(role="wk", seconds=3))
        site.controller.nodes.action(node.id, "mark-damaged", actor=ADMIN, reason="test")
        ids.append(str(node.id))

    page.goto("/")
    page.locator("nav").first.get_by_role("link", name="Rollouts").click()
    expect(page.get_by_role("heading", name="Rollouts", exact=True)).to_be_visible()
    expect(page.get_by_text("No rollouts yet.")).to_be_visible()
    form = page.locator("#start-rollout")
    # bad input: shown beside its field, nothing started
    form.get_by_label("Batch size").fill("0")
    form.get_by_label("Failure tolerance").fill("-1")
    form.get_by_role("button", name="Start rollout").click()
    expect(page.locator("#e-batch_size")).to_contain_text("between 1 and 1000")
    expect(page.locator("#e-failure_tolerance")).to_contain_text("whole number")
    expect(page.get_by_text("No rollouts yet.")).to_be_visible()
    screenshot(page, "rollouts-form-errors")

    form.get_by_label("Action").select_option("fix")
    form.get_by_label("Status").select_option("Damaged")
    form.get_by_label("Batch size").fill("1")
    form.get_by_label("Pause between batches (s)").fill("0")
    form.get_by_label("Failure tolerance").fill("0")
    form.get_by_label("Reason").fill("rolling fix after the disk swap")
    form.get_by_role("button", name="Start rollout").click()
    expect(page.locator(".flash-success")).to_contain_text("Fix Node over 3 node(s) in 3 batch(es)")
    expect(page.get_by_role("heading", name="Fix Node")).to_be_visible()
    bar = page.locator("#rollout-bar")
    expect(bar).to_be_visible()
    expect(page.locator("#rollout-progress")).to_have_attribute("data-state", "running")
    # the first batch under way: pause
    wait_for(lambda: "running" in outcomes(page).values(), timeout=15, what="batch 1 running")
    screenshot(page, "rollout-running")
    page.locator("#rollout-pause").click()
    expect(page.locator("#rollout-progress")).to_have_attribute("data-state", "paused")
    expect(page.locator("#rollout-resume")).to_be_visible()
    expect(page.locator("#rollout-pause")).to_have_count(0)
    # the batches under way when the pause was recorded (the controller's record: on a loaded
    # machine the click may land after the first batch ended and the second began) run to
    # their end; nothing new starts while paused
    rollout_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    members = site.controller.rollouts.get(rollout_id).members or []
    started = {str(m.member.node_id) for m in members if m.started_at is not None}
    assert 1 <= len(started) < 3, started
    wait_for(
        lambda: {n for n, outcome in outcomes(page).items() if outcome == "done"} == started,
        timeout=20,
        what=f"the batches started before the pause ({sorted(started)}) done while paused",
    )
    time.sleep(2.5)  # several runner rounds and page polls
    assert {n for n, outcome in outcomes(page).items() if outcome != "pending"} == started
    assert list(outcomes(page).values()).count("pending") == 3 - len(started), outcomes(page)
    expect(page.locator("#rollout-counts")).to_contain_text(f"{round(100 * len(started) / 3)}%")
    screenshot(page, "rollout-paused")
    page.locator("#rollout-resume").click()
    expect(page.locator("#rollout-progress")).to_have_attribute(
        "data-state", "finished", timeout=40_000
    )
    expect(page.locator("#rollout-counts")).to_contain_text("100%: 3 done, 0 failed")
    assert float(bar.get_attribute("value") or 0) == 100.0
    expect(page.locator("#rollout-progress [id^=rollout-]:is(button)")).to_have_count(0)
    assert set(outcomes(page)) == set(ids)
    screenshot(page, "rollout-finished")
    for node_id in ids:
        assert site.node(int(node_id)).status.value == "Online"
    # the list shows it, finished
    page.get_by_role("link", name="← Rollouts").click()
    row = page.locator("#rollouts tbody tr").first
    expect(row.locator("[data-state]")).to_have_text("finished")
    expect(row).to_contain_text("3 done, 0 failed, 0 skipped")
    screenshot(page, "rollouts-list")


def test_fix_the_affected_nodes_after_a_properties_save(admin_page: Page, site: Site) -> None:
    page = admin_page
    chat = [site.add_node(f"chat-{i}", roles=("jabber",)) for i in range(2)]
    for node in chat:
        online(site, node.id)
    page.goto("/infrastructure/properties")
    page.get_by_label("System domain").fill("new.example.com")
    page.locator("#save-button").click()
    page.get_by_role("button", name="Save and mark 2 nodes Damaged").click()
    expect(page.locator(".flash-info")).to_contain_text("Fix them with one rollout")
    offer = page.locator("#fix-offer")
    expect(offer).to_contain_text("2 nodes Damaged by this change")
    screenshot(page, "properties-fix-offer")
    offer.get_by_role("button", name="Fix the 2 affected nodes").click()
    expect(page.get_by_role("heading", name="Fix Node")).to_be_visible()
    expect(page.locator("#rollout-progress")).to_have_attribute(
        "data-state", "finished", timeout=30_000
    )
    expect(page.locator("#rollout-counts")).to_contain_text("2 done")
    for node in chat:
        assert site.node(node.id).status.value == "Online"
    # the offer is gone once they are fixed (it counts only nodes still Damaged)
    page.go_back()
    page.reload()
    expect(page.locator("#fix-offer")).to_have_count(0)
