"""A real agent joins, the row follows without a reload; View Info shows what it reported;
the actions of the agent-driven statuses (Online, Damaged, DeactivatePending, ActivateFailed)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, open_actions, role_actions, row_actions, screenshot


def test_agent_joins_and_the_row_turns_online_without_reload(admin_page: Page, site: Site) -> None:
    page = admin_page
    node = site.add_node("sip-live", roles=("sip", "jabber"), public_ip="203.0.113.50")
    row = page.locator(f"#node-{node.id}")
    expect(row).to_have_attribute("data-status", "Offline")
    expect(row.locator(".conn")).to_have_text("never joined")
    page.evaluate("window.__noReload = true")  # gone if the page is ever reloaded

    agent = site.start_agent(node.id)
    expect(row.locator(".conn")).to_have_text("connected", timeout=20_000)
    assert page.evaluate("window.__noReload") is True

    # a form post (the agent is connected: nothing to confirm); the page comes back
    open_actions(page, node.id).get_by_role("button", name="Activate sip-live", exact=True).click()
    expect(
        page.get_by_role("status").filter(has_text="Activate of sip-live requested")
    ).to_be_visible()
    page.evaluate("window.__noReload = true")
    expect(row).to_have_attribute("data-status", "Online", timeout=20_000)
    expect(row.locator(".badge")).to_have_text(re.compile(r"^Online"))
    assert page.evaluate("window.__noReload") is True  # it turned Online by itself
    # Online: no Delete Node, no Assign Role, no Delete Assignment
    assert row_actions(page, node.id) == {"info", "edit", "deactivate", "mark-damaged"}
    assert role_actions(page, node.id) == {"sip": set(), "jabber": set()}
    expect(row.get_by_role("link", name="Delete Node")).to_have_count(0)
    screenshot(page, "cloud-management")

    # View Info: the layer over the listing, with what the agent reported
    row.get_by_role("link", name="View Info").click()
    layer = page.locator("#layer")
    expect(layer).to_be_visible()
    reported = site.node(node.id)
    expect(layer.locator("#info-os")).to_have_text(reported.os or "?")
    expect(layer.locator("#info-kernel")).to_have_text(reported.kernel or "?")
    expect(layer.locator("#info-kernel")).to_contain_text("Linux")
    expect(layer.locator("#info-version")).not_to_have_text("—")
    components = layer.locator("#components tbody tr")
    assert components.count() == len(reported.components) > 0
    expect(layer.locator("#info-session-key")).to_have_text(site.session_key(node.id))
    screenshot(page, "view-info", full_page=False)
    layer.get_by_label("Filter components").fill("fastapi")
    expect(layer.locator("#components tbody tr:visible").first).to_contain_text("fastapi")
    assert layer.locator("#components tbody tr:visible").count() < len(reported.components)
    layer.get_by_label("Filter components").fill("")
    page.keyboard.press("Escape")
    expect(layer).to_be_hidden()

    # Mark Damaged asks for a reason first
    open_actions(page, node.id).get_by_role("link", name="Mark Damaged").click()
    layer.get_by_label("Reason").fill("disk full")
    layer.get_by_role("button", name="Mark Damaged").click()
    expect(row).to_have_attribute("data-status", "Damaged")
    expect(row.locator(".badge")).to_have_attribute("title", "disk full")
    assert row_actions(page, node.id) == {"info", "edit", "fix"}

    open_actions(page, node.id).get_by_role("button", name="Fix Node sip-live", exact=True).click()
    expect(row).to_have_attribute("data-status", "Online", timeout=20_000)
    expect(row.locator(".pending")).to_have_count(0)

    # without its agent, a deactivation stays pending: Edit, Delete Node and Force
    # deactivation (issue 11) remain
    agent.stop()
    expect(row.locator(".conn")).to_have_text("lost", timeout=20_000)
    # Deactivate of an Online node asks first, saying its lost agent must sign it
    open_actions(page, node.id).get_by_role("link", name="Deactivate sip-live", exact=True).click()
    expect(layer.locator(".warning")).to_contain_text("the agent of node sip-live is lost")
    layer.get_by_role("button", name="Deactivate").click()
    expect(row).to_have_attribute("data-status", "DeactivatePending")
    assert row_actions(page, node.id) == {"info", "edit", "delete", "force-deactivate"}
    screenshot(page, "cloud-management-lost-agent")


def test_failed_activation_shows_its_reason_and_the_allowed_actions(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    node = site.add_node("pbx-fails", roles=("pbx",), public_ip="203.0.113.51")
    site.start_agent(node.id, config='[roles.pbx]\napply = "echo cannot bind rtp >&2; exit 7"\n')
    row = page.locator(f"#node-{node.id}")
    expect(row.locator(".conn")).to_have_text("connected", timeout=20_000)
    open_actions(page, node.id).get_by_role("button", name="Activate pbx-fails", exact=True).click()
    expect(row).to_have_attribute("data-status", "ActivateFailed", timeout=20_000)
    expect(row.locator(".badge")).to_have_attribute("title", re.compile("cannot bind rtp"))
    assert row_actions(page, node.id) == {
        "info",
        "assign-role",
        "edit",
        "standby",
        "activate",
        "delete",
    }
    assert role_actions(page, node.id) == {"pbx": {"delete-assignment"}}
