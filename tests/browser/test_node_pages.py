"""Edit node, role parameters, session key regeneration, and the "reconnecting" note."""

from __future__ import annotations

from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import Site, open_actions


def test_edit_node_shows_a_taken_hostname_next_to_the_field(admin_page: Page, site: Site) -> None:
    site.add_node("taken-01")
    node = site.add_node("edit-me")
    page = admin_page
    page.reload()
    open_actions(page, node.id).get_by_role("link", name="Edit edit-me").click()
    page.get_by_label("Hostname").fill("taken-01")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#e-hostname")).to_contain_text("already used by another node")
    page.get_by_label("Hostname").fill("edited-01")
    page.get_by_label("Public IP").fill("203.0.113.90")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Node edited-01 saved.")).to_be_visible()
    expect(page.locator(f"#node-{node.id}")).to_have_attribute("data-hostname", "edited-01")
    assert site.node(node.id).public_ip == "203.0.113.90"


def test_role_parameters_edit_and_back_to_default(admin_page: Page, site: Site) -> None:
    node = site.add_node("params-01", roles=("que",))
    page = admin_page
    page.goto(f"/nodes/{node.id}/roles/que/edit")
    page.get_by_label("Port").fill("5673")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#e-p_password")).to_have_text("Must be at least 8 characters")
    page.get_by_label("Password").fill("a-long-queue-secret")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Queue parameters of params-01 saved")).to_be_visible()
    (assigned,) = site.controller.roles.assigned(node.id, reveal_secrets=True)
    assert assigned.effective["port"].value == 5673
    assert assigned.effective["password"].value == "a-long-queue-secret"

    page.goto(f"/nodes/{node.id}/roles/que/edit")
    expect(page.get_by_label("Password")).to_have_value("")  # a secret is never echoed
    page.get_by_label("Port").fill("")  # empty: back to the default
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Queue parameters of params-01 saved")).to_be_visible()
    (assigned,) = site.controller.roles.assigned(node.id, reveal_secrets=True)
    assert assigned.effective["port"].source == "default"
    assert assigned.effective["password"].value == "a-long-queue-secret"  # kept


def test_role_page_shows_each_effective_value_and_where_it_comes_from(
    admin_page: Page, site: Site
) -> None:
    node = site.add_node("effective-01", roles=("sip",), public_ip="203.0.113.77")
    page = admin_page
    page.goto(f"/nodes/{node.id}/roles/sip/edit")
    domain = page.locator("#effective-sip_domain")
    expect(domain).to_contain_text("voipcloud.local")
    expect(domain).to_contain_text("Infrastructure Property")
    page.get_by_label("SIP domain").fill("sip.example.net")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("SIP parameters of effective-01 saved")).to_be_visible()
    page.goto(f"/nodes/{node.id}/roles/sip/edit")
    expect(domain).to_contain_text("sip.example.net")
    expect(domain).to_contain_text("explicit value")
    (assigned,) = site.controller.roles.assigned(node.id)
    assert assigned.effective["sip_domain"].source == "explicit"


def test_regenerate_the_session_key_from_view_info(admin_page: Page, site: Site) -> None:
    node = site.add_node("rekey-01", roles=("wk",))
    old = site.session_key(node.id)
    page = admin_page
    page.reload()
    page.locator(f"#node-{node.id}").get_by_role("link", name="View Info").click()
    layer = page.locator("#layer")
    expect(layer.locator("#info-session-key")).to_have_text(old)
    # it asks first, saying what happens to the current key
    layer.get_by_role("link", name="Regenerate…").click()
    expect(layer.locator(".warning")).to_have_text(
        "The current session key of node rekey-01 stops working at once."
    )
    assert site.session_key(node.id) == old  # asking changed nothing
    layer.get_by_role("button", name="Regenerate session key").click()
    expect(page.get_by_text("New session key for rekey-01: the previous key")).to_be_visible()
    new = site.session_key(node.id)
    assert new != old
    # the new key and the command that starts the agent with it
    expect(page.locator("#session-key")).to_have_text(new)
    expect(page.locator("#agent-command")).to_contain_text("voipcloud agent")


def test_reconnecting_note_while_the_controller_is_unreachable(
    admin_page: Page, site: Site
) -> None:
    page = admin_page
    note = page.locator("#live-status")
    expect(note).to_be_hidden()

    def drop(route: Route) -> None:
        route.abort("connectionrefused")

    page.route("**/nodes/listing*", drop)
    expect(note).to_be_visible(timeout=10_000)
    expect(note).to_have_text("Connection to the controller lost — reconnecting…")
    page.unroute("**/nodes/listing*", drop)
    node = site.add_node("after-the-outage")
    expect(note).to_be_hidden(timeout=10_000)
    expect(page.locator(f"#node-{node.id}")).to_be_visible()  # and it caught up
