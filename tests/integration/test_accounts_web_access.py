"""The web interface refuses (403 page) exactly what the account's role may not do, on every
page and form post, whatever the page shows. The table is written from SPEC.md §9."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi.routing import APIRoute

from tests.conftest import LiveApi, make_settings
from tests.integration.accounts_helpers import add_account, csrf_of, web_login
from voipcloud.api.app import create_app

VIEWER, OPERATOR, ADMIN, ANY = "viewer", "operator", "admin", "any"
SECRETS = OPERATOR  # session keys: operators see them, viewers do not
RANK = {VIEWER: 0, OPERATOR: 1, ADMIN: 2}

EXPECTED: dict[tuple[str, str], str] = {
    ("POST", "/logout"): ANY,
    ("GET", "/"): VIEWER,
    ("GET", "/nodes/listing"): VIEWER,
    ("GET", "/nodes/new"): OPERATOR,
    ("POST", "/nodes"): OPERATOR,
    ("GET", "/nodes/{node_id}/edit"): OPERATOR,
    ("POST", "/nodes/{node_id}/edit"): OPERATOR,
    ("GET", "/nodes/{node_id}/info"): VIEWER,
    ("GET", "/nodes/{node_id}/actions"): OPERATOR,  # a listing row's Actions menu
    ("GET", "/nodes/{node_id}/actions/force-deactivate"): OPERATOR,
    ("POST", "/nodes/{node_id}/actions/force-deactivate"): OPERATOR,
    ("POST", "/nodes/{node_id}/actions/{action}"): OPERATOR,
    ("GET", "/nodes/{node_id}/actions/{action}"): OPERATOR,
    ("GET", "/nodes/{node_id}/actions/mark-damaged"): OPERATOR,
    ("GET", "/nodes/{node_id}/delete"): OPERATOR,
    ("POST", "/nodes/{node_id}/delete"): OPERATOR,
    # fleet operations: maintenance from Quick info, the listing's bulk action bar
    ("POST", "/nodes/{node_id}/maintenance"): OPERATOR,
    ("POST", "/nodes/{node_id}/maintenance/leave"): OPERATOR,
    ("POST", "/nodes/bulk"): OPERATOR,
    ("POST", "/nodes/import"): OPERATOR,  # Add Node's "Import many" (a CSV upload)
    ("GET", "/nodes/{node_id}/roles/new"): OPERATOR,
    ("POST", "/nodes/{node_id}/roles"): OPERATOR,
    ("GET", "/nodes/{node_id}/session-key"): SECRETS,
    ("GET", "/nodes/{node_id}/roles/{code}/edit"): OPERATOR,
    ("POST", "/nodes/{node_id}/roles/{code}/edit"): OPERATOR,
    ("GET", "/nodes/{node_id}/roles/{code}/delete"): OPERATOR,
    ("POST", "/nodes/{node_id}/roles/{code}/delete"): OPERATOR,
    ("GET", "/nodes/{node_id}/roles/{code}/remove"): OPERATOR,
    ("POST", "/nodes/{node_id}/roles/{code}/remove"): OPERATOR,
    ("GET", "/events"): VIEWER,
    ("GET", "/infrastructure/properties"): VIEWER,
    ("POST", "/infrastructure/properties/preview"): ADMIN,
    ("POST", "/infrastructure/properties"): ADMIN,
    ("GET", "/wizard"): ADMIN,
    ("POST", "/wizard/plan"): ADMIN,
    ("POST", "/wizard/run"): ADMIN,
    ("GET", "/wizard/progress"): ADMIN,
    ("GET", "/wizard/status"): ADMIN,
    ("GET", "/storage"): VIEWER,
    ("POST", "/storage/{kind}"): ADMIN,
    ("POST", "/storage/{kind}/test"): ADMIN,
    ("GET", "/storage/{kind}/migration"): VIEWER,
    ("POST", "/storage/{kind}/migration"): ADMIN,
    ("POST", "/storage/{kind}/migration/pause"): ADMIN,
    # my account and the Accounts page
    ("GET", "/account"): VIEWER,
    ("POST", "/account/password"): ANY,
    ("POST", "/account/tokens"): ANY,
    ("POST", "/account/tokens/{token_id}/revoke"): ANY,
    ("POST", "/account/logout-everywhere"): ANY,
    ("GET", "/accounts"): ADMIN,
    ("POST", "/accounts"): ADMIN,
    ("POST", "/accounts/{username}"): ADMIN,
    ("POST", "/accounts/{username}/password"): ADMIN,
    ("POST", "/accounts/{username}/delete"): ADMIN,
    # notifications and the audit export
    ("GET", "/webhooks"): VIEWER,
    ("POST", "/webhooks"): ADMIN,
    ("GET", "/webhooks/{webhook_id}"): VIEWER,
    ("POST", "/webhooks/{webhook_id}"): ADMIN,
    ("GET", "/webhooks/{webhook_id}/deliveries"): VIEWER,
    ("POST", "/webhooks/{webhook_id}/test"): ADMIN,
    ("POST", "/webhooks/{webhook_id}/delete"): ADMIN,
    ("GET", "/rollouts"): VIEWER,
    ("POST", "/rollouts"): OPERATOR,
    ("GET", "/rollouts/{rollout_id}"): VIEWER,
    ("POST", "/rollouts/{rollout_id}/{command}"): OPERATOR,
    ("GET", "/events/export"): VIEWER,
}
VALUES = {"node_id": "1", "code": "ic", "kind": "faxes", "action": "standby"}
VALUES |= {"username": "admin", "token_id": "999999", "webhook_id": "999999"}
VALUES |= {"rollout_id": "999999", "command": "pause"}


def web_routes(tmp_path: Path) -> list[tuple[str, str]]:
    app = create_app(make_settings(tmp_path, None))
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            # web pages: out of the OpenAPI schema and served by voipcloud.web (the API's
            # own hidden routes, such as the 405 of /nodes/summary, are the API's table's)
            if (
                isinstance(route, APIRoute)
                and not route.include_in_schema
                and route.endpoint.__module__.startswith("voipcloud.web")
            ):
                found.extend((m, route.path) for m in route.methods if route.path != "/login")
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes)

    walk(app.routes)
    app.state.controller.ctx.db.dispose()
    return found


def fill(template: str) -> str:
    for name, value in VALUES.items():
        template = template.replace("{" + name + "}", value)
    return template


def test_web_refuses_exactly_where_the_role_says(api: LiveApi, tmp_path: Path) -> None:
    routes = web_routes(tmp_path)
    unknown = [r for r in routes if r not in EXPECTED]
    assert not unknown, f"classify these pages in EXPECTED: {unknown}"
    add_account(api, "olga", OPERATOR)
    add_account(api, "victor", VIEWER)
    checked = 0
    for role, username in ((VIEWER, "victor"), (OPERATOR, "olga")):
        web = web_login(api.base_url, username)
        csrf = csrf_of(web)
        for method, template in routes:
            expected = EXPECTED[(method, template)]
            allowed = expected == ANY or RANK[role] >= RANK[expected]
            if method == "POST" and allowed:
                continue  # a permitted post would change something: the API test covers it
            answer: httpx.Response = web.request(
                method, fill(template), headers={"X-CSRF-Token": csrf}
            )
            checked += 1
            if allowed:
                assert answer.status_code not in (401, 403), (role, method, template)
                assert answer.status_code < 500
            else:
                assert answer.status_code == 403, (role, method, template, answer.status_code)
                assert "may not" in answer.text, answer.text[:300]
        # still signed in: no refusal ended the session
        assert web.get("/").status_code == 200
    assert checked >= 60, checked
