"""Force deactivation in the web interface (issue 11): a node whose agent cannot stop its role
stays DeactivatePending; its row and its View Info offer Force deactivation, whose confirmation
says what it means and requires a reason, recorded in the node's history."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, open_actions, row_actions, screenshot


def test_force_deactivation_from_the_row(admin_page: Page, site: Site) -> None:
    page = admin_page
    node = site.add_node("que-jammed", roles=("que",))
    jammed = site.tmp_path / "jammed"
    jammed.touch()
    site.start_agent(
        node.id,
        config="[roles.que]\n"
        f'stop = "test ! -e {jammed} || {{ echo service jammed >&2; exit 1; }}"\n',
    )
    row = page.locator(f"#node-{node.id}")
    expect(row.locator(".conn")).to_have_text("connected", timeout=20_000)
    open_actions(page, node.id).get_by_role(
        "button", name="Activate que-jammed", exact=True
    ).click()
    expect(row).to_have_attribute("data-status", "Online", timeout=20_000)
    assert "force-deactivate" not in row_actions(page, node.id)  # only DeactivatePending

    # an Online node: Deactivate asks first, then the agent cannot stop the role
    open_actions(page, node.id).get_by_role(
        "link", name="Deactivate que-jammed", exact=True
    ).click()
    page.locator("#layer").get_by_role("button", name="Deactivate").click()
    expect(row).to_have_attribute("data-status", "DeactivatePending")
    expect(row.locator(".conn")).to_have_text("connected")
    assert row_actions(page, node.id) == {"info", "edit", "delete", "force-deactivate"}

    # View Info says what the node waits for, and offers the way out
    row.get_by_role("link", name="View Info").click()
    layer = page.locator("#layer")
    expect(layer.locator("#info-force")).to_contain_text("has not signed it complete")
    screenshot(page, "force-deactivation-info", full_page=False)
    layer.get_by_role("link", name="Force deactivation").click()

    # the confirmation says the consequence and wants a reason
    expect(layer.get_by_role("heading", name="Force deactivation: que-jammed")).to_be_visible()
    expect(layer.locator(".warning")).to_contain_text("may still be running the roles")
    reason = layer.get_by_label("Reason")
    expect(reason).to_have_attribute("required", "")
    screenshot(page, "force-deactivation-confirm", full_page=False)
    # the server refuses a blank reason too (the browser's own check taken away)
    reason.evaluate("el => el.removeAttribute('required')")
    reason.fill("   ")
    layer.get_by_role("button", name="Force deactivation").click()
    expect(page.locator("#e-reason")).to_contain_text("needs a reason")
    expect(page.get_by_label("Reason")).to_have_attribute("aria-invalid", "true")
    assert site.node(node.id).status.value == "DeactivatePending"  # nothing changed

    page.get_by_label("Reason").fill("the service is jammed; the VM is being replaced")
    page.get_by_role("button", name="Force deactivation").click()
    expect(page.locator(".flash-success")).to_contain_text("que-jammed is Deactivated (forced)")
    expect(row).to_have_attribute("data-status", "Deactivated")
    assert "force-deactivate" not in row_actions(page, node.id)
    forced = site.node(node.id)
    assert forced.pending_operation is None
    assert forced.status_reason == (
        "forced by administrator: the service is jammed; the VM is being replaced"
    )
    # the agent may already have reported that it still cannot stop the role (newest first)
    history = site.controller.nodes.events(node.id, limit=50).items
    forced_events = [e for e in history if e.operation == "force-deactivate"]
    assert [e.actor for e in forced_events] == ["admin:admin"]
    later = history[: history.index(forced_events[0])]
    assert all(e.operation == "agent-problem" for e in later), later

    row.get_by_role("link", name="View Info").click()
    expect(layer.locator("#info-reason")).to_have_text(forced.status_reason)
    expect(layer.locator("#info-force")).to_have_count(0)
    expect(layer).to_contain_text("Force deactivate")
    screenshot(page, "force-deactivation-done", full_page=False)
