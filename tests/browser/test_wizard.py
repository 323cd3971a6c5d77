"""The Configuration Wizard and the Infrastructure Properties page in a real browser."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, Site, screenshot
from voipcloud.domain.roles import SINGLE_NODE_ROLES


def test_wizard_from_start_to_online(admin_page: Page, site: Site) -> None:
    page = admin_page
    ic = site.controller.infrastructure.wizard.controller_node()
    site.start_agent(ic.id)  # the IC node's own agent, as `voipcloud serve` runs it

    page.get_by_role("link", name="Configuration Wizard").click()
    expect(page.get_by_role("heading", name="Configuration Wizard")).to_be_visible()
    expect(page.locator("#detected-hostname")).not_to_be_empty()
    expect(page.locator("#detected-addresses")).not_to_be_empty()

    page.get_by_label("System domain (SIP domain)").fill("not a domain")
    page.get_by_label("Public IP address").fill("203.0.113.10")
    page.get_by_role("button", name="Show the plan").click()
    expect(page.get_by_label("System domain (SIP domain)")).to_have_attribute(
        "aria-invalid", "true"
    )
    expect(page.locator("#e-system_domain")).to_contain_text("host name")
    screenshot(page, "wizard-field-error")

    page.get_by_label("System domain (SIP domain)").fill("voip.example.com")
    page.get_by_role("button", name="Show the plan").click()
    expect(page.get_by_role("heading", name="The plan")).to_be_visible()
    sip = page.locator('#plan-roles tr[data-role="sip"]')
    expect(sip).to_contain_text("voip.example.com")
    expect(sip).to_contain_text("203.0.113.10")
    expect(page.locator("#plan-roles tbody tr")).to_have_count(1 + len(SINGLE_NODE_ROLES))
    screenshot(page, "wizard-plan")
    assert site.node(ic.id).roles == ["ic"]  # the plan changed nothing

    page.get_by_role("button", name="Confirm and activate").click()
    expect(page.get_by_role("heading", name=f"Activating {ic.hostname}")).to_be_visible()
    expect(page.locator("#wizard-done")).to_be_visible(timeout=30_000)
    expect(page.locator("#wizard-node-status")).to_have_text("Online")
    screenshot(page, "wizard-online")
    online = site.node(ic.id)
    assert online.status.value == "Online"
    assert sorted(online.roles) == sorted(["ic", *SINGLE_NODE_ROLES])
    assert site.controller.infrastructure.properties()["system_domain"] == "voip.example.com"


def test_wizard_page_explains_why_it_is_not_available(admin_page: Page, site: Site) -> None:
    site.add_node("sip-02")
    page = admin_page
    page.goto("/wizard")
    refusal = page.locator("#wizard-unavailable")
    expect(refusal).to_contain_text("only live node")
    expect(refusal).to_contain_text("sip-02")
    expect(page.get_by_role("button", name="Show the plan")).to_have_count(0)
    screenshot(page, "wizard-unavailable")


def test_properties_page_previews_then_saves_and_names_the_damaged_nodes(
    admin_page: Page, site: Site
) -> None:
    node = site.add_node("sip-01", roles=("sip",), public_ip="203.0.113.5")
    site.start_agent(node.id)
    site.controller.nodes.action(node.id, "activate", actor=ADMIN)
    site.wait_status(node.id, "Online")

    page = admin_page
    page.goto("/")
    page.get_by_role("link", name="Infrastructure Properties").first.click()
    expect(page.get_by_role("heading", name="Infrastructure Properties")).to_be_visible()
    expect(page.get_by_label("SQL password")).to_have_value("")  # write-only

    page.get_by_label("Time zone").fill("Mars/Olympus")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#e-timezone")).to_contain_text("not a known time zone")
    screenshot(page, "properties-field-error")

    page.get_by_label("Time zone").fill("Europe/Bucharest")
    page.get_by_label("System domain").fill("voip.example.com")
    page.get_by_role("button", name="Preview affected nodes").click()
    expect(page.locator("#preview-affected")).to_contain_text("sip-01")
    expect(page.locator("#preview-affected")).to_contain_text("system domain changed")
    screenshot(page, "properties-preview")
    assert site.node(node.id).status.value == "Online"  # a preview changes nothing

    page.get_by_role("button", name="Save").click()
    expect(page.locator("#confirm-damaged")).to_contain_text("sip-01")  # asks first
    assert site.node(node.id).status.value == "Online"
    page.get_by_role("button", name="Save and mark 1 node Damaged").click()
    expect(page.get_by_role("status").filter(has_text="Nodes marked Damaged")).to_contain_text(
        "sip-01"
    )
    assert site.node(node.id).status.value == "Damaged"
    expect(page.get_by_label("System domain")).to_have_value("voip.example.com")


def test_wizard_page_shows_the_failure_reason_and_retries_to_online(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    ic = site.controller.infrastructure.wizard.controller_node()
    broken = site.start_agent(
        ic.id, config='[roles.pbx]\napply = "echo no media here >&2; exit 3"\n'
    )

    page.goto("/wizard")
    page.get_by_label("System domain (SIP domain)").fill("voip.example.com")
    page.get_by_label("Public IP address").fill("203.0.113.10")
    page.get_by_role("button", name="Show the plan").click()
    page.get_by_role("button", name="Confirm and activate").click()
    expect(page.locator("#wizard-failure-reason")).to_contain_text("no media here", timeout=30_000)
    expect(page.locator("#wizard-node-status")).to_have_text("ActivateFailed")
    screenshot(page, "wizard-failed")

    broken.stop()  # the administrator repairs the machine
    site.start_agent(ic.id)
    page.get_by_role("button", name="Retry activation").click()
    expect(page.locator("#wizard-done")).to_be_visible(timeout=30_000)
    assert site.node(ic.id).status.value == "Online"
