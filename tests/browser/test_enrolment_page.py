"""The session-key page offers the one-line agent install (issue 16); the listing and View
Info flag an agent older than the controller."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, screenshot
from voipcloud import __version__


def test_the_session_key_page_shows_the_install_line_without_the_key(
    admin_page: Page, site: Site
) -> None:
    node = site.add_node("queue-enrol", roles=("que",))
    key = site.session_key(node.id)
    page = admin_page
    page.goto(f"{site.url}/nodes/{node.id}/session-key?role=que")
    expect(page.locator("#session-key")).to_have_text(key)
    line = page.locator("#install-command")
    expect(line).to_be_visible()
    expect(line).to_have_text(
        f"curl -fsS {site.url}/agent/install.sh | sh -s -- --controller {site.url} "
        "--session-key-file /etc/voipcloud/session-key"
    )
    expect(page.locator("#key-file-command")).to_contain_text("umask 077")
    for shown in ("#install-command", "#key-file-command", "#agent-command"):
        assert key not in page.locator(shown).inner_text()
    # the agent command for an agent run by hand is there, folded away
    expect(page.locator("#agent-command")).to_be_hidden()
    page.locator("#manual-agent summary").click()
    expect(page.locator("#agent-command")).to_be_visible()
    screenshot(page, "session-key-install-line")
    # what the line downloads answers, without a login
    assert httpx.get(f"{site.url}/agent/install.sh", timeout=30).status_code == 200


def test_an_outdated_agent_is_flagged_in_the_listing_and_view_info(
    admin_page: Page, site: Site
) -> None:
    old = site.add_node("old-agent", roles=("que",))
    current = site.add_node("new-agent", roles=("que",))
    for node, version in ((old, "0.0.1"), (current, __version__)):
        joined = httpx.post(
            f"{site.url}/api/v1/agent/join",
            json={"session_key": site.session_key(node.id), "inventory": {"version": version}},
            timeout=30,
        )
        assert joined.status_code == 200, joined.text
    page = admin_page
    page.goto(site.url + "/")
    flag = page.locator(f"#n{old.id}-outdated")
    expect(flag).to_have_text("agent 0.0.1 outdated")
    expect(page.locator(f"#n{current.id}-outdated")).to_have_count(0)
    screenshot(page, "listing-outdated-agent")
    page.locator(f"#n{old.id}-info").click()
    expect(page.locator("#info-outdated")).to_contain_text(__version__)
