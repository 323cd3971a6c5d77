"""Issue 13, what a new administrator ran into (the web's leftovers): every edit form carries
the version it was read at and refuses a stale submit with the current values shown; a save
of the Infrastructure Properties that marks Online nodes Damaged asks first; the wizard shows
its errors and its real address; a failing S3 configuration is not saved as a success; the
Assign Role form keeps untouched defaults as defaults; wording."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, Site, open_actions, screenshot
from tests.support.moto import MotoServer, moto_server
from tests.support.processes import wait_for


def online(site: Site, node_id: int) -> None:
    """Start the node's agent (a real `voipcloud agent`) and bring the node Online."""
    site.start_agent(node_id)
    wait_for(
        lambda: site.controller.connectivity(site.node(node_id))[0].value == "connected",
        timeout=20,
        what=f"the agent of node {node_id} to connect",
    )
    site.controller.nodes.action(node_id, "activate", actor=ADMIN)
    site.wait_status(node_id, "Online")


def test_stale_role_parameters_refused_with_current_values(admin_page: Page, site: Site) -> None:
    page = admin_page
    node = site.add_node("wk-stale", roles=("wk",))
    page.goto(f"/nodes/{node.id}/roles/wk/edit")
    page.get_by_label("Concurrent jobs").fill("12")
    # meanwhile someone else sets it
    site.controller.roles.edit(node.id, actor=ADMIN, role="wk", parameters={"max_jobs": 20})
    page.get_by_role("button", name="Save").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Not saved")
    expect(alert).to_contain_text("changed: Concurrent jobs")
    expect(alert).to_contain_text("Concurrent jobs: 12")  # what was typed is said
    expect(page.get_by_label("Concurrent jobs")).to_have_value("20")
    screenshot(page, "ux-stale-role-parameters")
    assert _explicit(site, node.id, "wk") == {"max_jobs": 20}
    # the form now carries the current version: saving again goes through
    page.get_by_label("Concurrent jobs").fill("12")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Worker parameters of wk-stale saved")).to_be_visible()
    assert _explicit(site, node.id, "wk") == {"max_jobs": 12}


def _explicit(site: Site, node_id: int, role: str) -> dict[str, object]:
    assigned = {a.role.code: a for a in site.controller.roles.assigned(node_id)}
    return dict(assigned[role].assignment.parameters)


def test_stale_infrastructure_properties_refused(admin_page: Page, site: Site) -> None:
    page = admin_page
    page.goto("/infrastructure/properties")
    page.get_by_label("System domain").fill("typed.example.com")
    site.controller.infrastructure.update(
        actor=ADMIN, changes={"infrastructure_name": "changed-meanwhile"}
    )
    page.locator("#save-button").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Not saved")
    expect(alert).to_contain_text("changed: Infrastructure name")
    expect(alert).to_contain_text("System domain: typed.example.com")
    expect(page.get_by_label("Infrastructure name")).to_have_value("changed-meanwhile")
    expect(page.get_by_label("System domain")).not_to_have_value("typed.example.com")
    screenshot(page, "ux-stale-infrastructure")
    props = site.controller.infrastructure.properties()
    assert props["system_domain"] != "typed.example.com"
    page.get_by_label("System domain").fill("typed.example.com")
    page.locator("#save-button").click()
    expect(page.get_by_text("Saved: System domain.")).to_be_visible()
    props = site.controller.infrastructure.properties()
    assert props["system_domain"] == "typed.example.com"
    assert props["infrastructure_name"] == "changed-meanwhile"


def test_stale_storage_form_refused_other_kind_does_not_matter(
    admin_page: Page, site: Site, tmp_path: Path
) -> None:
    page = admin_page
    storage = site.controller.storage
    page.goto("/storage")
    voicemail = page.locator("#kind-voicemail")
    voicemail.get_by_label("Directory").fill(str(tmp_path / "vm-typed"))
    # another kind changes meanwhile: the voicemail form is not stale
    storage.configure(
        actor="test", changes={"faxes": {"local": {"path": str(tmp_path / "faxes-other")}}}
    )
    voicemail.get_by_role("button", name="Save").click()
    expect(page.locator(".flash-success")).to_contain_text("Saved the storage of voicemail")
    assert storage.configuration()[_kind("voicemail")].local.path == str(tmp_path / "vm-typed")

    voicemail = page.locator("#kind-voicemail")
    voicemail.get_by_label("Directory").fill(str(tmp_path / "vm-second"))
    storage.configure(
        actor="test", changes={"voicemail": {"local": {"path": str(tmp_path / "vm-meanwhile")}}}
    )
    voicemail.get_by_role("button", name="Save").click()
    voicemail = page.locator("#kind-voicemail")
    alert = voicemail.get_by_role("alert")
    expect(alert).to_contain_text("Not saved")
    expect(alert).to_contain_text("Directory of voicemail")
    expect(alert).to_contain_text(f"Directory: {tmp_path / 'vm-second'}")
    expect(voicemail.get_by_label("Directory")).to_have_value(str(tmp_path / "vm-meanwhile"))
    screenshot(page, "ux-stale-storage")
    assert storage.configuration()[_kind("voicemail")].local.path == str(tmp_path / "vm-meanwhile")


def _kind(value: str) -> object:
    from voipcloud.domain.storage import ResourceKind

    return ResourceKind(value)


def test_properties_save_that_damages_online_nodes_asks_first(admin_page: Page, site: Site) -> None:
    page = admin_page
    jabber = site.add_node("chat-01", roles=("jabber",))
    online(site, jabber.id)
    page.goto("/infrastructure/properties")
    page.get_by_label("System domain").fill("new.example.com")
    page.locator("#save-button").click()
    ask = page.locator("#confirm-damaged")
    expect(ask).to_contain_text("marks 1 Online node Damaged")
    expect(ask).to_contain_text("chat-01")
    expect(ask).to_contain_text("Nothing has been saved yet")
    expect(page.locator("#preview-affected tr[data-node]")).to_have_count(1)
    expect(page.locator("#preview-affected")).to_contain_text("jabber.xmpp_domain")
    expect(page.get_by_label("System domain")).to_have_value("new.example.com")
    screenshot(page, "ux-properties-confirm-damaged")
    assert site.node(jabber.id).status.value == "Online"  # nothing happened yet
    assert site.controller.infrastructure.properties()["system_domain"] != "new.example.com"
    # Cancel leaves everything as it was
    page.locator("#confirm-damaged").get_by_role("link", name="Cancel").click()
    expect(page.locator("#confirm-damaged")).to_have_count(0)
    assert site.node(jabber.id).status.value == "Online"

    page.get_by_label("System domain").fill("new.example.com")
    page.locator("#save-button").click()
    page.get_by_role("button", name="Save and mark 1 node Damaged").click()
    flash = page.locator(".flash-info")
    expect(flash).to_contain_text("Nodes marked Damaged: chat-01")
    expect(page.locator(".flash-success")).to_have_count(0)
    screenshot(page, "ux-properties-saved-damaged")
    assert site.node(jabber.id).status.value == "Damaged"
    assert site.controller.infrastructure.properties()["system_domain"] == "new.example.com"

    # a change no Online node uses saves in one click
    page.get_by_label("Infrastructure name").fill("renamed-cloud")
    page.locator("#save-button").click()
    expect(page.locator(".flash-success")).to_contain_text("No Online node was affected")


def test_wizard_opens_more_settings_on_error_and_shows_the_real_address(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    page.goto("/wizard")
    more = page.locator("#more-settings")
    expect(more).not_to_have_attribute("open", "")  # collapsed at first
    page.get_by_label("System domain (SIP domain)").fill("voip.example.com")
    page.get_by_label("Public IP address").fill("203.0.113.10")
    page.locator("#more-settings summary").click()
    page.get_by_label("Time zone").fill("Mars/Olympus_Mons")
    page.locator("#more-settings summary").click()  # collapsed again before submitting
    page.get_by_role("button", name="Show the plan").click()
    expect(page.locator("#more-settings")).to_have_attribute("open", "")
    error = page.locator("#e-timezone")
    expect(error).to_be_visible()
    expect(page.get_by_label("Time zone")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#more-settings-error")).to_be_visible()
    screenshot(page, "ux-wizard-more-settings-error")

    page.get_by_label("Time zone").fill("Europe/Bucharest")
    page.get_by_role("button", name="Show the plan").click()
    expect(page.get_by_role("heading", name="The plan")).to_be_visible()
    port = site.url.rsplit(":", 1)[1]
    assert port != "8080"
    expect(page.locator("#plan-served")).to_have_text(site.url)
    ic_row = page.locator('#plan-roles tr[data-role="ic"]')
    expect(ic_row.locator('[data-param="controller_port"]')).to_contain_text(
        f"Controller port: {port}"
    )
    expect(ic_row).not_to_contain_text("8080")
    screenshot(page, "ux-wizard-plan-address")


@pytest.fixture
def moto_auth(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto", authenticating=True) as server:
        yield server


def test_failing_s3_configuration_is_not_saved_as_a_success(
    admin_page: Page, site: Site, moto_auth: MotoServer
) -> None:
    assert moto_auth.bucket
    storage = site.controller.storage
    page = admin_page
    page.goto("/storage")
    section = page.locator("#kind-voicemail")
    section.get_by_label("Amazon S3").check()
    section.get_by_label("Bucket").fill(moto_auth.bucket)
    section.get_by_label("Region").fill("us-east-1")
    section.get_by_label("Endpoint URL").fill(moto_auth.endpoint_url)
    section.get_by_label("Key prefix").fill("voicemail")
    section.get_by_label("Access key ID").fill(moto_auth.access_key_id)
    section.get_by_label("Secret access key").fill("not-the-secret")
    section.get_by_role("button", name="Save", exact=True).click()

    section = page.locator("#kind-voicemail")
    ask = section.locator("#save-anyway-voicemail")
    expect(ask).to_contain_text("Not saved")
    expect(ask).to_have_attribute("data-probe", "bad-credentials")
    expect(page.locator(".flash-success")).to_have_count(0)
    # what was typed is still there, keys included (masked), for "Save anyway"
    expect(section.get_by_label("Bucket")).to_have_value(moto_auth.bucket)
    expect(section.get_by_label("Secret access key")).to_have_value("not-the-secret")
    expect(section.get_by_label("Amazon S3")).to_be_checked()
    screenshot(page, "ux-storage-test-failed-not-saved")
    assert storage.configuration()[_kind("voicemail")].backend.value == "local"

    ask.get_by_role("button", name="Save anyway").click()
    warning = page.locator(".flash-warning")
    expect(warning).to_contain_text("Saved anyway")
    expect(warning).to_contain_text("test failed")
    expect(page.locator(".flash-success")).to_have_count(0)
    screenshot(page, "ux-storage-saved-anyway")
    saved = storage.configuration()[_kind("voicemail")]
    assert saved.backend.value == "s3"
    assert saved.s3.secret_access_key == "not-the-secret"

    # with the right secret the test passes and the save is a plain success
    section = page.locator("#kind-voicemail")
    section.get_by_label("Secret access key").fill(moto_auth.secret_access_key)
    section.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".flash-success")).to_contain_text("Saved the storage of voicemail")
    expect(page.locator("#save-anyway-voicemail")).to_have_count(0)


def test_assign_role_stores_only_what_the_administrator_changed(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    node = site.add_node("sql-assign")
    page.goto(f"/nodes/{node.id}/roles/new?role=sql")
    expect(page.get_by_label("Port")).to_have_value("3306")  # the default, shown
    expect(page.get_by_label("Maximum connections")).to_have_value("500")
    page.get_by_label("Maximum connections").fill("600")
    page.get_by_label("Username").fill("billing")
    page.get_by_role("button", name="Assign SQL Database").click()
    expect(page).to_have_url(re.compile(rf"/nodes/{node.id}/session-key"))
    assert _explicit(site, node.id, "sql") == {"max_connections": 600, "username": "billing"}

    page.goto(f"/nodes/{node.id}/roles/sql/edit")
    expect(page.locator("#effective-port")).to_contain_text("default")
    expect(page.locator("#effective-port")).not_to_contain_text("explicit")
    expect(page.locator("#effective-max_connections")).to_contain_text("explicit value")
    expect(page.locator("#effective-password")).to_contain_text("SQL password")
    screenshot(page, "ux-assign-defaults-kept")


def test_wording_damaged_is_not_a_success_and_deleted_has_no_agent(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    # the probe of a local directory names its backend once
    page.goto("/storage")
    faxes = page.locator("#kind-faxes")
    faxes.get_by_role("button", name="Test").click()
    probe = faxes.locator("[data-probe]")
    expect(probe).to_have_attribute("data-probe", "ok")
    expect(probe).to_contain_text("in the storage of faxes (Local storage)")
    expect(probe).not_to_contain_text("storage storage")

    # Mark Damaged: a neutral message, not a green success
    node = site.add_node("damage-me", roles=("wk",))
    online(site, node.id)
    gone = site.add_node("gone-agent", roles=("wk",))
    agent = site.start_agent(gone.id)
    wait_for(
        lambda: site.controller.connectivity(site.node(gone.id))[0].value == "connected",
        timeout=20,
        what="the agent of gone-agent to connect",
    )
    agent.stop()
    wait_for(
        lambda: site.controller.connectivity(site.node(gone.id))[0].value == "lost",
        timeout=20,
        what="the agent of gone-agent to be lost",
    )
    site.controller.nodes.delete(gone.id, actor=ADMIN)

    page.goto("/")
    row = page.locator(f"#node-{node.id}")
    open_actions(page, node.id).get_by_role("link", name="Mark Damaged").click()
    page.locator("#layer").get_by_label("Reason").fill("fan noise")
    page.locator("#layer").get_by_role("button", name="Mark Damaged").click()
    expect(row).to_have_attribute("data-status", "Damaged")
    message = page.locator(".flash", has_text="damage-me is Damaged")
    expect(message).to_have_class(re.compile(r"\bflash-info\b"))
    expect(page.locator(".flash-success")).to_have_count(0)
    screenshot(page, "ux-mark-damaged-neutral", full_page=False)

    # a Deleted node's agent: not applicable, not a red "lost"
    page.goto("/?status=Deleted")
    deleted = page.locator(f"#node-{gone.id}")
    expect(deleted).to_have_attribute("data-status", "Deleted")
    expect(deleted.locator('[data-agent="not-applicable"]')).to_have_text("—")
    expect(deleted).to_contain_text("not applicable")
    expect(deleted.locator(".conn-lost")).to_have_count(0)
    screenshot(page, "ux-deleted-agent-not-applicable", full_page=False)


def test_role_edit_that_damages_the_node_is_not_a_green_success(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    node = site.add_node("edit-online", roles=("wk",))
    online(site, node.id)
    page.goto(f"/nodes/{node.id}/roles/wk/edit?next=/")
    page.get_by_label("Concurrent jobs").fill("4")
    page.get_by_role("button", name="Save").click()
    message = page.locator(".flash", has_text="Worker parameters of edit-online saved")
    expect(message).to_contain_text("the node is now Damaged")
    expect(message).to_contain_text("Fix Node")
    expect(message).to_have_class(re.compile(r"\bflash-info\b"))
    expect(page.locator(".flash-success")).to_have_count(0)
    assert site.node(node.id).status.value == "Damaged"
