"""The published contract (/openapi.json) is complete for outside clients: readable, stable,
unique operation ids; the one `Problem` schema on every error answer, `rule` an enum of
every registered rule code; enums for statuses, roles, sort keys; field rules in the schema;
the upload typed as binary; the agent protocol linked; and /docs and /redoc served from the
controller's own files (no CDN)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveApi, make_settings
from voipcloud.api.app import create_app
from voipcloud.domain import rules
from voipcloud.domain.filters import SORT_KEYS
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus

ROOT = Path(__file__).resolve().parents[2]
READABLE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

# a client generated from the schema calls these: renaming one breaks every such client
STABLE_IDS = {
    "sign_in",
    "sign_out",
    "who_am_i",
    "list_nodes",
    "add_node",
    "get_node",
    "edit_node",
    "delete_node",
    "list_node_events",
    "list_roles",
    "assign_role",
    "edit_role_assignment",
    "delete_role_assignment",
    "remove_role_administratively",
    "list_events",
    "list_extensions",
    "add_extension",
    "delete_extension",
    "agent_join",
    "get_infrastructure_properties",
    "set_infrastructure_properties",
    "run_wizard",
    "get_storage_configuration",
    "set_storage_configuration",
    "put_storage_resource",
    "get_storage_resource",
    "healthz",
    "readyz",
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = create_app(make_settings(tmp_path_factory.mktemp("contract"), None))
    found = app.openapi()
    app.state.controller.ctx.db.dispose()
    return found


def operations(spec: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, methods in spec["paths"].items() for m, op in methods.items()]


def test_operation_ids_are_readable_unique_and_stable(spec: Any) -> None:
    ids = [op["operationId"] for _m, _p, op in operations(spec)]
    assert len(ids) == len(set(ids)), sorted(ids)
    bad = [i for i in ids if not READABLE.match(i) or "api_v1" in i]
    assert not bad, bad
    assert set(ids) >= STABLE_IDS, STABLE_IDS - set(ids)


def test_every_error_answer_is_a_problem_with_the_rule_enum(spec: Any) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["RuleCode"]["enum"] == rules.codes()
    assert set(rules.codes()) >= {"delete-status", "role-forbidden", "database-unavailable"}
    problem = schemas["Problem"]
    assert problem["required"] == ["detail"]
    assert {"$ref": "#/components/schemas/RuleCode"} in problem["properties"]["rule"]["anyOf"]
    counted = 0
    for method, path, op in operations(spec):
        for status, answer in op["responses"].items():
            if int(status) < 400:
                continue
            counted += 1
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)
        if path.startswith("/api/v1/"):
            assert {"401", "503"} <= set(op["responses"]), (method, path)
            if method != "get":
                assert "409" in op["responses"], (method, path)
            if "requestBody" in op:
                assert {"413", "422"} <= set(op["responses"]), (method, path)
    assert counted > 250, counted
    assert "HTTPValidationError" not in schemas


def test_statuses_the_issue_found_undocumented_are_documented(spec: Any) -> None:
    events = spec["paths"]["/api/v1/events"]["get"]["responses"]
    assert {"401", "403", "404", "422", "503"} <= set(events)
    join = spec["paths"]["/api/v1/agent/join"]["post"]["responses"]
    assert {"401", "413", "422", "503"} <= set(join)
    sign_in = spec["paths"]["/api/v1/auth/token"]["post"]["responses"]
    assert "Retry-After" in sign_in["429"]["headers"]


def test_the_upload_is_binary_and_the_protocol_is_linked(spec: Any) -> None:
    put = spec["paths"]["/api/v1/storage/{kind}/resources/{key}"]["put"]
    content = put["requestBody"]["content"]
    assert content == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }
    assert "docs/protocol.md" in spec["info"]["description"]
    protocol = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8").lower()
    for subject in ("join", "hello", "close code", "version"):
        assert subject in protocol, subject


def _parameter(spec: Any, path: str, name: str, method: str = "get") -> Any:
    for parameter in spec["paths"][path][method]["parameters"]:
        if parameter["name"] == name:
            return parameter["schema"]
    raise AssertionError(f"{name} not a parameter of {path}")


def _enum(spec: Any, schema: Any) -> list[str]:
    for option in schema.get("anyOf", [schema]):
        if "$ref" in option:
            option = spec["components"]["schemas"][option["$ref"].rsplit("/", 1)[-1]]
        if "enum" in option:
            return list(option["enum"])
    raise AssertionError(f"no enum in {schema}")


def test_filters_and_codes_are_enums(spec: Any) -> None:
    nodes = "/api/v1/nodes"
    assert _enum(spec, _parameter(spec, nodes, "status")) == [s.value for s in NodeStatus]
    assert set(_enum(spec, _parameter(spec, nodes, "role"))) == set(ROLES)
    sorts = set(_enum(spec, _parameter(spec, nodes, "sort")))
    assert sorts == set(SORT_KEYS) | {f"-{k}" for k in SORT_KEYS}
    node = spec["components"]["schemas"]["NodePublic"]["properties"]
    assert _enum(spec, node["status"]) == [s.value for s in NodeStatus]


def test_field_rules_are_in_the_schema(spec: Any) -> None:
    create = spec["components"]["schemas"]["NodeCreate"]["properties"]
    assert create["hostname"]["maxLength"] == 253
    assert "pattern" in create["hostname"]
    assert create["private_ip"]["anyOf"] == [{"format": "ipv4"}, {"format": "ipv6"}]
    key = _parameter(spec, "/api/v1/storage/{kind}/resources/{key}", "key")
    assert "pattern" in key
    assert "maxLength" in key


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_docs_and_redoc_name_only_the_controllers_own_files(api: LiveApi) -> None:
    client = api.anonymous()
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower(), html
        assert "https://" not in html, html
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
        assert assets, html
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200, asset
            assert len(answer.content) > 100_000, asset  # the real bundle, not a stub
    assert client.get("/docs/oauth2-redirect").status_code == 200
