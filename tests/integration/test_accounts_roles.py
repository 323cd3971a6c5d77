"""Accounts and roles (SPEC.md §9) through the real API on SQLite and PostgreSQL.

The table below is written from SPEC.md's words, not from the code: for every operation of
/openapi.json, the least account role that may perform it. The test drives every operation as
admin, operator and viewer (and as a read-scoped token) and checks: allowed where the table
says (never 401/403), refused with 403 `role-forbidden` (`token-read-only`) everywhere else.
An operation missing from the table fails the test: a new route must be classified here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.conftest import LiveApi, make_settings
from tests.integration.accounts_helpers import (
    API,
    PASSWORD,
    add_account,
    api_token,
    events,
    session,
)
from voipcloud.api.app import create_app
from voipcloud.api.deps import declared_permissions

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
SELF = "self"  # every account, on itself: a write of one's own (password, own tokens)
END = "end"  # every credential: ends the session or token presented (logout)
PUBLIC = "public"  # no account: the login, the agent's join
RANK = {VIEWER: 0, OPERATOR: 1, ADMIN: 2}

# SPEC.md §9: admin everything; operator node lifecycle (add, edit, standby, activate,
# deactivate, mark damaged, fix, delete), role assignment and parameters, bulk actions and
# rollouts, reads everything else; viewer reads everything, changes nothing.
EXPECTED: dict[tuple[str, str], str] = {
    ("POST", "/auth/token"): PUBLIC,
    ("POST", "/agent/join"): PUBLIC,
    ("DELETE", "/auth/token"): END,
    ("POST", "/auth/logout-all"): END,
    ("GET", "/auth/me"): VIEWER,
    ("POST", "/auth/password"): SELF,
    ("GET", "/tokens"): VIEWER,
    ("POST", "/tokens"): SELF,
    ("DELETE", "/tokens/{token_id}"): SELF,
    ("GET", "/accounts"): ADMIN,
    ("POST", "/accounts"): ADMIN,
    ("GET", "/accounts/{username}"): ADMIN,
    ("PATCH", "/accounts/{username}"): ADMIN,
    ("DELETE", "/accounts/{username}"): ADMIN,
    ("POST", "/accounts/{username}/password"): ADMIN,
    ("GET", "/nodes"): VIEWER,
    ("POST", "/nodes"): OPERATOR,
    ("GET", "/nodes/{node_id}"): VIEWER,
    ("PATCH", "/nodes/{node_id}"): OPERATOR,
    ("DELETE", "/nodes/{node_id}"): OPERATOR,
    # one operation per node action (the API contract); all node lifecycle (SPEC 9)
    ("POST", "/nodes/{node_id}/actions/standby"): OPERATOR,
    ("POST", "/nodes/{node_id}/actions/activate"): OPERATOR,
    ("POST", "/nodes/{node_id}/actions/deactivate"): OPERATOR,
    ("POST", "/nodes/{node_id}/actions/mark-damaged"): OPERATOR,
    ("POST", "/nodes/{node_id}/actions/fix"): OPERATOR,
    ("POST", "/nodes/{node_id}/actions/regenerate-session-key"): OPERATOR,
    ("GET", "/nodes/{node_id}/events"): VIEWER,
    ("GET", "/roles"): VIEWER,
    ("POST", "/nodes/{node_id}/roles"): OPERATOR,
    ("PATCH", "/nodes/{node_id}/roles/{code}"): OPERATOR,
    ("DELETE", "/nodes/{node_id}/roles/{code}"): OPERATOR,
    ("POST", "/nodes/{node_id}/roles/{code}/remove"): OPERATOR,
    ("GET", "/events"): VIEWER,
    ("GET", "/extensions"): VIEWER,
    ("POST", "/extensions"): ADMIN,
    ("DELETE", "/extensions/{number}"): ADMIN,
    ("GET", "/infrastructure/properties"): VIEWER,
    ("PUT", "/infrastructure/properties"): ADMIN,
    ("POST", "/infrastructure/properties/preview"): ADMIN,
    ("GET", "/infrastructure/properties/schema"): VIEWER,
    ("GET", "/infrastructure/wizard"): VIEWER,
    ("POST", "/infrastructure/wizard"): ADMIN,
    ("POST", "/infrastructure/wizard/plan"): ADMIN,
    ("GET", "/storage"): VIEWER,
    ("PUT", "/storage"): ADMIN,
    ("POST", "/storage/test"): ADMIN,
    ("GET", "/storage/{kind}/resources"): VIEWER,
    ("PUT", "/storage/{kind}/resources/{key}"): ADMIN,
    ("GET", "/storage/{kind}/resources/{key}"): VIEWER,
    ("DELETE", "/storage/{kind}/resources/{key}"): ADMIN,
    ("POST", "/storage/{kind}/migration"): ADMIN,
    ("GET", "/storage/{kind}/migration"): VIEWER,
    ("POST", "/storage/{kind}/migration/pause"): ADMIN,
    # fleet operations (SPEC.md §11), classified before they exist
    ("POST", "/nodes/bulk/{action}"): OPERATOR,
    ("POST", "/nodes/import"): OPERATOR,  # enrolling many nodes (their session keys too)
    ("GET", "/nodes/summary"): VIEWER,
    ("POST", "/nodes/{node_id}/maintenance"): OPERATOR,
    ("DELETE", "/nodes/{node_id}/maintenance"): OPERATOR,
    ("GET", "/rollouts"): VIEWER,
    ("POST", "/rollouts"): OPERATOR,
    ("GET", "/rollouts/{id}"): VIEWER,
    ("POST", "/rollouts/{id}/pause"): OPERATOR,
    ("POST", "/rollouts/{id}/resume"): OPERATOR,
    ("POST", "/rollouts/{id}/cancel"): OPERATOR,
    ("GET", "/webhooks"): VIEWER,
    ("POST", "/webhooks"): ADMIN,
    ("GET", "/webhooks/{id}/deliveries"): VIEWER,
    ("GET", "/webhooks/{id}"): VIEWER,
    ("PATCH", "/webhooks/{id}"): ADMIN,
    ("DELETE", "/webhooks/{id}"): ADMIN,
    ("POST", "/webhooks/{id}/test"): ADMIN,
}

# harmless values: a missing node, a body that is not an object (422 where allowed)
PATH_VALUES = {
    "node_id": "999999",
    "action": "activate",
    "code": "web",
    "username": "nobody-here",
    "token_id": "999999",
    "kind": "faxes",
    "key": "table-test/probe.bin",
    "number": "999",
    "id": "999999",
}


def operations(client: httpx.Client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    found = []
    for path, methods in spec["paths"].items():
        if not path.startswith(API):
            continue
        for method in methods:
            found.append((method.upper(), path.removeprefix(API)))
    return found


def allowed_for(expected: str, role: str, *, read_token: bool = False) -> bool:
    if expected == END:
        return True
    if read_token:
        return expected == VIEWER
    if expected == SELF:
        return True
    return RANK[role] >= RANK[expected]


def call(client: httpx.Client, method: str, template: str) -> httpx.Response:
    path = template
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    if method in ("GET", "DELETE"):
        return client.request(method, API + path)
    return client.request(method, API + path, json=[])


@pytest.fixture
def people(api: LiveApi) -> dict[str, httpx.Client]:
    add_account(api, "olga", OPERATOR)
    add_account(api, "victor", VIEWER)
    clients = {ADMIN: api.client, OPERATOR: session(api.base_url, "olga")}
    clients[VIEWER] = session(api.base_url, "victor")
    return clients


def test_every_operation_is_refused_exactly_where_the_role_says(
    api: LiveApi, people: dict[str, httpx.Client]
) -> None:
    ops = operations(api.client)
    unknown = [op for op in ops if op not in EXPECTED]
    assert not unknown, f"classify these operations in EXPECTED: {unknown}"
    checked = 0
    for role in (VIEWER, OPERATOR, ADMIN):
        client = people[role]
        for method, template in ops:
            expected = EXPECTED[(method, template)]
            if expected in (PUBLIC, END):
                continue
            answer = call(client, method, template)
            checked += 1
            if allowed_for(expected, role):
                assert answer.status_code not in (401, 403), (role, method, template, answer.text)
            else:
                assert answer.status_code == 403, (role, method, template, answer.text)
                body = answer.json()
                assert body["rule"] == "role-forbidden", body
                assert role in body["detail"], body
    # a read-scoped token of an admin: every read, no write
    reader = httpx.Client(
        base_url=api.base_url,
        timeout=30,
        headers={
            "Authorization": "Bearer " + api_token(api.client, "table-reader", "read")["token"]
        },
    )
    for method, template in ops:
        expected = EXPECTED[(method, template)]
        if expected in (PUBLIC, END):
            continue
        answer = call(reader, method, template)
        checked += 1
        if allowed_for(expected, ADMIN, read_token=True):
            assert answer.status_code not in (401, 403), (method, template, answer.text)
        else:
            assert answer.status_code == 403, (method, template, answer.text)
            assert answer.json()["rule"] == "token-read-only"
    # the operations that end the credential: every role may, each with its own session
    for role, username in ((VIEWER, "victor"), (OPERATOR, "olga"), (ADMIN, None)):
        for method, template in ops:
            if EXPECTED[(method, template)] != END:
                continue
            client = (
                session(api.base_url, username)
                if username
                else session(api.base_url, "admin", api.settings.admin_password or "")
            )
            answer = (
                call(client, method, template)
                if method == "DELETE"
                else client.post(API + template)
            )
            assert answer.status_code in (200, 204), (role, method, template, answer.text)
            assert client.get(f"{API}/auth/me").status_code == 401
            checked += 1
    assert checked >= 3 * 45 + 40, checked


def test_every_route_declares_one_permission(tmp_path: Path) -> None:
    """The API and the web declare what each route needs through one dependency."""
    app = create_app(make_settings(tmp_path, None))
    undeclared: list[str] = []
    counted = 0

    def walk(routes: list[Any], prefix: str = "") -> None:
        nonlocal counted
        for route in routes:
            if isinstance(route, APIRoute):
                name = f"{sorted(route.methods)} {route.path}"
                public = route.path.endswith(("/auth/token", "/agent/join", "/login"))
                public = public and "DELETE" not in route.methods
                if public or route.path in ("/healthz", "/readyz"):
                    continue
                counted += 1
                if len(declared_permissions(route.dependant)) != 1:
                    undeclared.append(name)
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes)

    walk(app.routes)
    assert counted >= 80, counted  # API and web routes
    assert not undeclared, f"routes without exactly one permission: {undeclared}"
    app.state.controller.ctx.db.dispose()


def test_viewer_does_not_see_session_keys(api: LiveApi, people: dict[str, httpx.Client]) -> None:
    node = people[OPERATOR].post(
        f"{API}/nodes", json={"hostname": "sip-9.example.com", "private_ip": "10.0.0.9"}
    )
    assert node.status_code == 201, node.text
    node_id = node.json()["node_id"]
    assigned = people[OPERATOR].post(f"{API}/nodes/{node_id}/roles", json={"role": "jabber"})
    assert assigned.status_code == 201, assigned.text
    key = assigned.json()["session_key"]
    assert key
    assert people[OPERATOR].get(f"{API}/nodes/{node_id}").json()["session_key"] == key
    seen = people[VIEWER].get(f"{API}/nodes/{node_id}")
    assert seen.status_code == 200
    assert seen.json()["session_key"] is None
    assert key not in seen.text


def test_the_last_enabled_admin_stays(api: LiveApi) -> None:
    admin = api.client
    for change in ({"role": OPERATOR}, {"role": VIEWER}, {"disabled": True}):
        refused = admin.patch(f"{API}/accounts/admin", json=change)
        assert refused.status_code == 409, refused.text
        assert refused.json()["rule"] == "last-admin"
    refused = admin.delete(f"{API}/accounts/admin")
    assert refused.status_code == 409
    assert refused.json()["rule"] == "last-admin"
    # with a second admin, one may go; then the other is the last again
    add_account(api, "alice", ADMIN)
    alice = session(api.base_url, "alice")
    assert alice.patch(f"{API}/accounts/admin", json={"disabled": True}).status_code == 200
    assert admin.get(f"{API}/auth/me").status_code == 401  # disabling ended its sessions
    last = alice.patch(f"{API}/accounts/alice", json={"role": OPERATOR})
    assert last.status_code == 409
    assert last.json()["rule"] == "last-admin"
    # a disabled admin does not count: enabling it again makes alice removable
    assert alice.patch(f"{API}/accounts/admin", json={"disabled": False}).status_code == 200
    assert alice.delete(f"{API}/accounts/alice").status_code == 204
    assert alice.get(f"{API}/auth/me").status_code == 401
    names = [
        a["username"]
        for a in session(api.base_url, "admin", "correct-horse-battery")
        .get(f"{API}/accounts")
        .json()
    ]
    assert names == ["admin"]


def test_role_changes_apply_at_once_and_disabled_accounts_cannot_sign_in(
    api: LiveApi, people: dict[str, httpx.Client]
) -> None:
    olga = people[OPERATOR]
    new_node = {"hostname": "n1.example.com", "private_ip": "10.0.0.1"}
    assert olga.post(f"{API}/nodes", json=new_node).status_code == 201
    assert api.client.patch(f"{API}/accounts/olga", json={"role": VIEWER}).status_code == 200
    refused = olga.post(f"{API}/nodes", json={**new_node, "hostname": "n2.example.com"})
    assert refused.status_code == 403
    assert refused.json()["rule"] == "role-forbidden"
    assert api.client.patch(f"{API}/accounts/olga", json={"disabled": True}).status_code == 200
    assert olga.get(f"{API}/nodes").status_code == 401
    denied = httpx.post(
        f"{api.base_url}{API}/auth/token", json={"username": "olga", "password": PASSWORD}
    )
    assert denied.status_code == 401
    assert "disabled" in denied.json()["detail"]


def test_accounts_are_checked_and_every_change_and_login_is_an_event(api: LiveApi) -> None:
    admin = api.client
    bad = {"username": "Bad Name", "role": VIEWER, "password": PASSWORD}
    answer = admin.post(f"{API}/accounts", json=bad)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "username"]
    answer = admin.post(f"{API}/accounts", json={**bad, "username": "ok", "role": "root"})
    assert answer.status_code == 422
    add_account(api, "carol", VIEWER)
    again = admin.post(
        f"{API}/accounts", json={"username": "carol", "role": VIEWER, "password": PASSWORD}
    )
    assert again.status_code == 409
    assert again.json()["rule"] == "username-taken"
    assert admin.get(f"{API}/accounts/nobody").status_code == 404
    session(api.base_url, "carol")
    wrong = httpx.post(
        f"{api.base_url}{API}/auth/token", json={"username": "carol", "password": "wrong-one"}
    )
    assert wrong.status_code == 401
    assert admin.patch(f"{API}/accounts/carol", json={"role": OPERATOR}).status_code == 200
    assert admin.delete(f"{API}/accounts/carol").status_code == 204
    found = [(e["operation"], e["actor"], e["reason"]) for e in events(admin)]
    assert ("account-added", "admin:admin", "account carol added with role viewer") in found
    assert ("login", "viewer:carol", "signed in to the API from 127.0.0.1") in found
    assert ("login-failed", "viewer:carol", "wrong password from 127.0.0.1") in found
    assert (
        "account-changed",
        "admin:admin",
        "account carol: role viewer -> operator",
    ) in found
    assert any(op == "account-deleted" and "carol" in reason for op, _, reason in found)
    assert PASSWORD not in str(found)
