"""Stale forms in the browser: a form carries the version it was read at; when someone else
saved in between, the submit is refused, the form shows the current values and says what
changed and what had been typed; a second submit (from the current values) saves."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, Site, screenshot


def test_stale_node_edit_refused_with_current_values(admin_page: Page, site: Site) -> None:
    page = admin_page
    node = site.add_node("stale-form")
    page.goto(f"/nodes/{node.id}/edit")
    page.get_by_label("Private IP").fill("10.9.9.9")
    # meanwhile someone else renames the node
    site.controller.nodes.edit(node.id, actor=ADMIN, changes={"hostname": "renamed-meanwhile"})
    page.get_by_role("button", name="Save").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Not saved")
    expect(alert).to_contain_text("changed: Hostname")
    expect(alert).to_contain_text("Private IP: 10.9.9.9")  # what was typed is not lost
    expect(page.get_by_label("Hostname")).to_have_value("renamed-meanwhile")
    expect(page.get_by_label("Private IP")).to_have_value(node.private_ip)
    expect(page.locator("footer")).not_to_contain_text('"')  # the app's version, not an ETag
    screenshot(page, "stale-node-edit-refused")
    assert site.node(node.id).private_ip == node.private_ip  # nothing overwritten
    assert site.node(node.id).hostname == "renamed-meanwhile"
    # the form now carries the current version: saving again goes through
    page.get_by_label("Private IP").fill("10.9.9.9")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Node renamed-meanwhile saved.")).to_be_visible()
    assert site.node(node.id).private_ip == "10.9.9.9"
