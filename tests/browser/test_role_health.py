"""Role health in the listing and in Quick info (View Info): healthy, unhealthy with the
check's message, unknown; it follows the agent's reports without a reload and never
changes the node's status. A real agent with the command handler, whose check command
this test controls through a file (no role software, no namespaces needed)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, open_actions, screenshot


def test_role_health_marks_in_the_listing_and_quick_info(
    admin_page: Page, site: Site, tmp_path: Path
) -> None:
    page = admin_page
    ok = tmp_path / "worker-ok"
    ok.touch()
    node = site.add_node("health-live", roles=("wk", "es"), public_ip="203.0.113.52")
    # wk's check passes while the file exists; es has no check command (health unknown)
    site.start_agent(
        node.id,
        config=(
            "health_interval = 0.5\n[roles.wk]\n"
            f'check = "test -e {ok} || {{ echo queue stuck: 3 jobs waiting; exit 1; }}"\n'
        ),
    )
    row = page.locator(f"#node-{node.id}")
    expect(row.locator(".conn")).to_have_text("connected", timeout=20_000)
    open_actions(page, node.id).get_by_role(
        "button", name="Activate health-live", exact=True
    ).click()
    expect(row).to_have_attribute("data-status", "Online", timeout=20_000)

    worker = page.locator(f"#n{node.id}-wk-health")
    search = page.locator(f"#n{node.id}-es-health")
    expect(worker).to_have_class("health health-healthy", timeout=10_000)
    expect(worker).to_have_attribute("title", "wk: healthy")
    expect(worker).to_contain_text("✓")
    expect(search).to_have_class("health health-unknown")
    expect(search).to_have_attribute("title", "es: unknown: no check command configured")

    # the check starts failing: the mark turns unhealthy with the check's words, live
    page.evaluate("window.__noReload = true")
    ok.unlink()
    expect(worker).to_have_class("health health-unhealthy", timeout=10_000)
    expect(worker).to_contain_text("✗")
    expect(worker).to_have_attribute(
        "title",
        "wk: unhealthy: wk: check command exited with status 1: queue stuck: 3 jobs waiting",
    )
    assert page.evaluate("window.__noReload") is True
    expect(row).to_have_attribute("data-status", "Online")  # health never changes the status
    screenshot(page, "role-health-listing")

    # Quick info: each role's health, the unhealthy one with its message
    row.get_by_role("link", name="View Info").click()
    layer = page.locator("#layer")
    expect(layer).to_be_visible()
    expect(layer.locator("#info-health-wk")).to_have_text("unhealthy")
    expect(layer.locator("#info-health-wk-message")).to_contain_text("queue stuck: 3 jobs waiting")
    expect(layer.locator("#info-health-es")).to_have_text("unknown")
    expect(layer.locator("#info-health-es-message")).to_have_text("no check command configured")
    layer.locator("#info-health-wk").scroll_into_view_if_needed()
    screenshot(page, "role-health-quick-info", full_page=False)
    page.keyboard.press("Escape")
    expect(layer).to_be_hidden()

    # fixed: healthy again, and both changes are in the node's events
    ok.touch()
    expect(worker).to_have_class("health health-healthy", timeout=10_000)
    reasons = [
        e.reason
        for e in site.controller.nodes.events(node.id, limit=200).items
        if e.operation == "role-health"
    ]
    assert any(r.startswith("wk: healthy → unhealthy") for r in reasons), reasons
    assert any(r.startswith("wk: unhealthy → healthy") for r in reasons), reasons
