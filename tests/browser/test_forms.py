"""Add Node and Assign Role: server-side errors next to their field, then the session key."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, screenshot


def test_add_node_error_then_success_then_assign_role_and_read_the_key(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    page.get_by_role("link", name="Add Node").click()
    page.get_by_label("Hostname").fill("sip-01")
    page.get_by_label("Private IP").fill("10.0.0.300")
    page.get_by_label("Public IP").fill("203.0.113.7")
    page.get_by_role("button", name="Add Node").click()

    private_ip = page.get_by_label("Private IP")
    expect(private_ip).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#e-private_ip")).to_contain_text("not a valid")
    expect(page.get_by_label("Hostname")).to_have_value("sip-01")  # what was typed stays
    screenshot(page, "add-node-error")

    private_ip.fill("10.0.0.30")
    page.get_by_role("button", name="Add Node").click()
    expect(
        page.get_by_text(re.compile(r"Node sip-01 added \(NodeID \d+, Offline\)"))
    ).to_be_visible()
    node_id = int(page.url.split("/")[-3])
    assert site.node(node_id).status.value == "Offline"

    page.get_by_label("Role", exact=True).select_option("sip")
    expect(page.get_by_role("group", name="SIP parameters")).to_be_visible()
    expect(page.get_by_label("SIP port (UDP/TCP)")).to_have_value("5060")  # the default
    page.get_by_label("SIP port (UDP/TCP)").fill("70000")
    page.get_by_role("button", name="Assign SIP").click()
    expect(page.locator("#e-p_sip_port")).to_have_text("Must be at most 65535")
    screenshot(page, "assign-role-error")

    page.get_by_label("SIP port (UDP/TCP)").fill("5070")
    page.get_by_role("button", name="Assign SIP").click()
    expect(page.get_by_role("heading", name="SIP assigned to sip-01")).to_be_visible()
    key = page.locator("#session-key").inner_text().strip()
    assert key == site.session_key(node_id)
    command = (page.locator("#agent-command").text_content() or "").strip()  # folded away
    assert command == (  # the key is read from a file, never on the command line (issue 17)
        f"voipcloud agent --controller {site.url} --session-key-file /etc/voipcloud/session-key"
    )
    assert key not in command
    # an Offline node: the next steps are activating it, or assigning more roles first
    expect(page.locator("#next-step")).to_contain_text("Then activate the node")
    expect(page.get_by_role("link", name="Assign another role")).to_be_visible()
    screenshot(page, "session-key")
    assert site.node(node_id).roles == ["sip"]


def test_role_that_needs_a_public_ip_is_refused_with_the_rule(admin_page: Page, site: Site) -> None:
    node = site.add_node("media-01")  # no public IP
    page = admin_page
    page.goto(f"/nodes/{node.id}/roles/new?role=pbx")
    page.get_by_role("button", name="Assign PBX").click()
    expect(page.get_by_role("alert")).to_contain_text("needs a public IP")
    assert site.node(node.id).roles == []
