"""The Node Listing's rows carry no action buttons: a row's Actions menu loads them when it opens
(GET /nodes/{id}/actions), decided on the node as it is then. The menu offers every row action,
the allowed ones as buttons, the refused ones disabled with the rulebook's rule and reason, the
same answers the API gives; only an account that may change nodes gets a menu."""

from __future__ import annotations

import html
import re

from tests.conftest import ADMIN_PASSWORD, LiveApi
from tests.integration.accounts_helpers import add_account, web_login
from voipcloud.web.views import ROW_ACTIONS

API = "/api/v1"
# the listing's action keys -> the names the API's `actions` use (the operations')
API_NAME = {key: operation.value for key, operation, _label in ROW_ACTIONS}


def add_node(api: LiveApi, hostname: str, address: str, roles: tuple[str, ...] = ()) -> int:
    answer = api.client.post(f"{API}/nodes", json={"hostname": hostname, "private_ip": address})
    assert answer.status_code == 201, answer.text
    node_id = int(answer.json()["node_id"])
    for role in roles:
        assigned = api.client.post(f"{API}/nodes/{node_id}/roles", json={"role": role})
        assert assigned.status_code == 201, assigned.text
    return node_id


def shown_actions(fragment: str, node_id: int) -> dict[str, tuple[bool, str, str]]:
    """What the menu shows: action key -> (offered, rule, reason) from its elements."""
    found: dict[str, tuple[bool, str, str]] = {}
    for tag in re.findall(r"<(?:a|span|button)\b[^>]*\bdata-action=\"[^\"]+\"[^>]*>", fragment):
        key = re.search(r'data-action="([^"]+)"', tag)
        assert key, tag
        assert f'id="n{node_id}-{key.group(1)}"' in tag, tag
        disabled = 'aria-disabled="true"' in tag
        rule = re.search(r'data-rule="([^"]*)"', tag)
        title = re.search(r'title="([^"]*)"', tag)
        found[key.group(1)] = (
            not disabled,
            rule.group(1) if rule else "",
            html.unescape(title.group(1)) if title else "",
        )
    return found


def test_the_menu_offers_what_the_api_allows_and_refuses_the_rest_with_its_reason(
    api: LiveApi,
) -> None:
    bare = add_node(api, "menu-bare", "10.31.0.1")
    spare = add_node(api, "menu-spare", "10.31.0.2", roles=("que",))
    api.client.post(f"{API}/nodes/{spare}/actions/standby").raise_for_status()
    web = web_login(api.base_url, "admin", ADMIN_PASSWORD)
    for node_id in (1, bare, spare):
        answer = web.get(f"/nodes/{node_id}/actions", params={"next": "/?q=menu"})
        assert answer.status_code == 200, answer.text[:300]
        shown = shown_actions(answer.text, node_id)
        assert set(shown) == {key for key, _op, _label in ROW_ACTIONS}  # never hidden
        decided = {a["name"]: a for a in api.client.get(f"{API}/nodes/{node_id}").json()["actions"]}
        for key, (offered, rule, reason) in shown.items():
            said = decided[API_NAME[key]]
            assert offered is said["allowed"], (node_id, key)
            if not offered:
                assert (rule, reason) == (said["rule"], said["reason"]), (node_id, key)
        # the actions come back to the listing page they were opened from
        assert "next=%2F%3Fq%3Dmenu" in answer.text or "next=/%3Fq%3Dmenu" in answer.text
    # the sibling case: what a status change makes available shows in the next menu opened
    before = shown_actions(web.get(f"/nodes/{spare}/actions").text, spare)
    assert before["standby"][0] is False
    api.client.post(f"{API}/nodes/{spare}/actions/deactivate").raise_for_status()
    after = shown_actions(web.get(f"/nodes/{spare}/actions").text, spare)
    assert after["standby"][0] is True


def test_the_listing_rows_have_a_menu_and_no_decided_buttons(api: LiveApi) -> None:
    node_id = add_node(api, "menu-row", "10.31.0.3", roles=("jabber",))
    web = web_login(api.base_url, "admin", ADMIN_PASSWORD)
    page = web.get("/").text
    row = page[page.index(f'id="node-{node_id}"') :]
    row = row[: row.index("</tr>")]
    assert f'id="n{node_id}-menu"' in row
    assert f'hx-get="/nodes/{node_id}/actions?next=' in row
    assert f'id="n{node_id}-actions"' in row
    assert re.findall(r'data-action="([^"]+)"', row) == ["info"]  # View Info stays in the row


def test_a_viewer_gets_no_menu_and_may_not_load_one(api: LiveApi) -> None:
    node_id = add_node(api, "menu-viewer", "10.31.0.4")
    add_account(api, "vera", "viewer")
    viewer = web_login(api.base_url, "vera")
    page = viewer.get("/").text
    assert f'id="node-{node_id}"' in page
    assert f'id="n{node_id}-menu"' not in page
    assert viewer.get(f"/nodes/{node_id}/actions").status_code == 403


def test_a_menu_of_a_missing_node_is_not_found_and_next_stays_on_this_site(
    api: LiveApi,
) -> None:
    web = web_login(api.base_url, "admin", ADMIN_PASSWORD)
    assert web.get("/nodes/999999/actions").status_code == 404
    for foreign in ("//evil.example/x", "/\t/evil.example/x"):  # a tab: browsers drop it
        answer = web.get("/nodes/1/actions", params={"next": foreign})
        assert answer.status_code == 200
        assert "evil.example" not in answer.text, foreign
        assert 'name="next" value="/"' in answer.text or "next=/" in answer.text
