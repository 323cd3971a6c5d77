"""Issue 13, what a new administrator ran into (the web's leftovers): every edit form carries
the version it was read at and refuses a stale submit with the current values shown; a save
of the Infrastructure Properties that marks Online nodes Damaged asks first; the wizard shows
its errors and its real address; a failing S3 configuration is not saved as a success; the
Assign Role form keeps untouched defaults as defaults; wording."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, Site, screenshot


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
