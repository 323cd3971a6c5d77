"""The API's published contract (`/openapi.json`), complete enough for generated clients.

FastAPI derives the schema from the routes; this module adds what it cannot know:

- **operation ids**: readable and stable (`list_nodes`, `add_node`, `activate_node`), the
  route function's name unless `OPERATION_IDS` names it better; unique (checked here);
- **errors**: every 4xx/5xx an operation can answer, each with the one `Problem` schema
  (`detail`: a sentence, or the list of fields at fault for a 422; `rule`: the `RuleCode`
  enum, generated from `domain/rules.py`); `Retry-After`, `ETag` and `WWW-Authenticate`
  headers where they are sent;
- **the agent's WebSocket**, which OpenAPI cannot describe, is linked from the description
  (docs/protocol.md).

Which statuses an operation can answer follows from what it is (tests/integration/
test_schemathesis.py checks the server never answers an undocumented one):
401 for every `/api/v1` operation (a missing or wrong credential), 403 where an account's
role or token scope is checked, 404 where something is looked up, 409 for every write, 412
with `If-Match`, 413 with a body, 414 with a query or path parameter (uvicorn's 8 KiB
request line), 422 with any input, 429 for the password checks, 503 where
the database is used.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute

from voipcloud.domain import rules

PROTOCOL_DOC = "docs/protocol.md"

# (METHOD, path) -> operation id, where the route function's own name is not the best one
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/auth/token"): "sign_in",
    ("DELETE", "/api/v1/auth/token"): "sign_out",
    ("GET", "/api/v1/tokens"): "list_api_tokens",
    ("POST", "/api/v1/tokens"): "create_api_token",
    ("DELETE", "/api/v1/tokens/{token_id}"): "revoke_api_token",
    ("GET", "/api/v1/nodes/{node_id}/events"): "list_node_events",
    ("GET", "/api/v1/roles"): "list_roles",
    ("PATCH", "/api/v1/nodes/{node_id}/roles/{code}"): "edit_role_assignment",
    ("DELETE", "/api/v1/nodes/{node_id}/roles/{code}"): "delete_role_assignment",
    ("POST", "/api/v1/nodes/{node_id}/roles/{code}/remove"): "remove_role_administratively",
    ("POST", "/api/v1/agent/join"): "agent_join",
    ("GET", "/api/v1/infrastructure/properties"): "get_infrastructure_properties",
    ("PUT", "/api/v1/infrastructure/properties"): "set_infrastructure_properties",
    ("POST", "/api/v1/infrastructure/properties/preview"): "preview_infrastructure_properties",
    ("GET", "/api/v1/infrastructure/properties/schema"): "get_infrastructure_properties_schema",
    ("GET", "/api/v1/infrastructure/wizard"): "detect_wizard_setup",
    ("POST", "/api/v1/infrastructure/wizard"): "run_wizard",
    ("POST", "/api/v1/infrastructure/wizard/plan"): "plan_wizard",
    ("GET", "/api/v1/storage"): "get_storage_configuration",
    ("PUT", "/api/v1/storage"): "set_storage_configuration",
    ("POST", "/api/v1/storage/test"): "test_storage_configuration",
    ("GET", "/api/v1/storage/{kind}/resources"): "list_storage_resources",
    ("PUT", "/api/v1/storage/{kind}/resources/{key}"): "put_storage_resource",
    ("GET", "/api/v1/storage/{kind}/resources/{key}"): "get_storage_resource",
    ("DELETE", "/api/v1/storage/{kind}/resources/{key}"): "delete_storage_resource",
    ("POST", "/api/v1/storage/{kind}/migration"): "start_storage_migration",
    ("GET", "/api/v1/storage/{kind}/migration"): "get_storage_migration",
    ("POST", "/api/v1/storage/{kind}/migration/pause"): "pause_storage_migration",
    ("POST", "/api/v1/webhooks/{id}/test"): "send_webhook_test",
    ("GET", "/api/v1/webhooks/{id}/deliveries"): "list_webhook_deliveries",
    ("GET", "/api/v1/rollouts"): "list_rollouts",
    ("POST", "/api/v1/rollouts"): "start_rollout",
    ("GET", "/api/v1/rollouts/{id}"): "get_rollout",
    ("POST", "/api/v1/rollouts/{id}/pause"): "pause_rollout",
    ("POST", "/api/v1/rollouts/{id}/resume"): "resume_rollout",
    ("POST", "/api/v1/rollouts/{id}/cancel"): "cancel_rollout",
    ("GET", "/healthz"): "healthz",
    ("GET", "/readyz"): "readyz",
    ("GET", "/metrics"): "get_metrics",
}

# where the password is checked: repeated failures from one address are throttled
THROTTLED = {("POST", "/api/v1/auth/token"), ("POST", "/api/v1/auth/password")}
# no credential of an account: the login (401 for a wrong password) and the agent's join
# (401 for a wrong session key) check their own
UNGUARDED = {("POST", "/api/v1/auth/token"), ("POST", "/api/v1/agent/join")}

DESCRIPTIONS = {
    401: "Not authenticated: no credential, or a wrong, expired or revoked one",
    403: "The account's role or the token's scope forbids it; `rule` says which",
    404: "No such node, role assignment, account, token, extension, webhook, rollout or resource",
    409: "Not allowed in the current state; `rule` names the rule, `detail` says why",
    412: "`If-Match` names an older version: nothing was written; `rule` is `stale-version`, "
    "`changed` names the fields that changed, `ETag` is the current one",
    413: "The request body is larger than the limit",
    414: "The request line (path and query) is longer than the server reads (8 KiB); "
    "answered by the HTTP layer, before the API, in text/plain",
    422: "Invalid input: `detail` lists each field at fault (`loc`) and what is wrong (`msg`)",
    429: "Too many failed attempts from this address; see Retry-After",
    503: "The database is unavailable: nothing was changed; try again after Retry-After",
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    412: {"ETag": {"schema": {"type": "string"}, "description": "the current version"}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    503: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}

PROBLEM = "#/components/schemas/Problem"
SCHEMAS: dict[str, dict[str, Any]] = {
    "RuleCode": {
        "title": "RuleCode",
        "type": "string",
        "enum": rules.codes(),
        "description": "The rule a refusal names (domain/rules.py).",
    },
    "FieldProblem": {
        "title": "FieldProblem",
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {
                "title": "Loc",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "description": "where: body, query, path or header, then the field",
            },
            "msg": {"title": "Msg", "type": "string"},
            "type": {"title": "Type", "type": "string"},
        },
    },
    "Problem": {
        "title": "Problem",
        "type": "object",
        "required": ["detail"],
        "description": "Every error answer: `detail` says what happened and what to do "
        "(for a 422, the list of fields at fault); `rule` names the rule of a refusal.",
        "properties": {
            "detail": {
                "title": "Detail",
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/FieldProblem"}},
                ],
            },
            "rule": {"anyOf": [{"$ref": "#/components/schemas/RuleCode"}, {"type": "null"}]},
            "changed": {
                "title": "Changed",
                "type": "array",
                "items": {"type": "string"},
                "description": "412 only: the fields changed since the version in If-Match",
            },
        },
    },
}


def operation_id(route: APIRoute) -> str:
    """The generate_unique_id_function of the app (FastAPI's default appends path and
    method: `add_node_api_v1_nodes_post`)."""
    for method in sorted(route.methods or ()):
        named = OPERATION_IDS.get((method, route.path_format))
        if named:
            return named
    return route.name


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The 4xx/5xx this operation can answer (see the module's docstring)."""
    if path == "/readyz":
        return {503}
    if not path.startswith("/api/v1/"):
        return {401, 403} if path == "/metrics" else set()
    found = {401, 503}
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    if (method, path) not in UNGUARDED:
        found |= {403, 404}
    elif path == "/api/v1/agent/join":
        found.add(404)
    if method != "GET" or path.startswith("/api/v1/storage"):
        found.add(409)
    if any(p["in"] == "header" and p["name"].lower() == "if-match" for p in parameters):
        found.add(412)
    if has_body:
        found.add(413)
    if parameters or has_body:
        found.add(422)
    if (method, path) in THROTTLED:
        found.add(429)
    if any(p["in"] in ("query", "path") for p in parameters):
        found.add(414)  # the server's HTTP layer: a request line over 8 KiB
    return found


def _document_errors(spec: dict[str, Any]) -> None:
    for path, methods in spec.get("paths", {}).items():
        for method, operation in methods.items():
            responses = operation.setdefault("responses", {})
            wanted = error_statuses(method.upper(), path, operation)
            for status in list(responses):
                if status.isdigit() and int(status) >= 400 and int(status) not in wanted:
                    del responses[status]  # FastAPI's default, for an operation without input
            for status in sorted(wanted):
                given = responses.get(str(status), {})
                answer: dict[str, Any] = {
                    "description": given.get("description") or DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": {"$ref": PROBLEM}}},
                }
                if status == 414:  # answered before the app, by the HTTP layer
                    answer["content"]["text/plain"] = {"schema": {"type": "string"}}
                if status in HEADERS:
                    answer["headers"] = HEADERS[status]
                responses[str(status)] = answer
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(SCHEMAS)


# pydantic leaves a Query(ge=..., le=...) on a type with a validator (params.Whole) under its
# Python names; JSON Schema calls them minimum and maximum
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _parameter_bounds(spec: dict[str, Any]) -> None:
    """Publish a parameter's bounds under their JSON Schema names (a client would otherwise
    send limit=5000 and be refused)."""

    def fix(schema: dict[str, Any]) -> None:
        for python, json_name in _BOUNDS.items():
            if python in schema:
                schema[json_name] = schema.pop(python)
        for branch in schema.get("anyOf", []):
            fix(branch)

    for methods in spec.get("paths", {}).values():
        for operation in methods.values():
            for parameter in operation.get("parameters", []):
                fix(parameter.get("schema", {}))


def _optional_headers(spec: dict[str, Any]) -> None:
    """An optional header is a string, left out when not sent: HTTP has no null header, so
    the `anyOf [..., null]` FastAPI derives from `str | None` is dropped (a client would send
    the text "null")."""
    for methods in spec.get("paths", {}).values():
        for operation in methods.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if parameter["in"] != "header" or "anyOf" not in schema:
                    continue
                kept = [s for s in schema["anyOf"] if s != {"type": "null"}]
                if len(kept) == 1:
                    del schema["anyOf"]
                    parameter["schema"] = {**kept[0], **schema}


def _check_operation_ids(spec: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for path, methods in spec.get("paths", {}).items():
        for method, operation in methods.items():
            oid = operation["operationId"]
            if oid in seen:
                raise RuntimeError(f"operation id {oid} of {method} {path} is also {seen[oid]}")
            seen[oid] = f"{method} {path}"


def install(app: FastAPI) -> None:
    """Replace `app.openapi` with the completed schema (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            _document_errors(spec)
            _optional_headers(spec)
            _parameter_bounds(spec)
            _check_operation_ids(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented way to customise it


DESCRIPTION = (
    "The controller's REST API. Sign in with `POST /api/v1/auth/token` and send "
    "`Authorization: Bearer <token>`. Every error answer is a `Problem` "
    '(`{"detail", "rule"?}`); `rule` is one of the `RuleCode` values.\n\n'
    "Node agents join with `POST /api/v1/agent/join` and then hold the WebSocket "
    "`/api/v1/agent/channel` (`Authorization: Bearer <agent_token>`): its messages, their "
    f"order, close codes and protocol versions are described in `{PROTOCOL_DOC}`."
)


ASSETS = "/static/apidocs"


# The documentation pages may load only the controller's own files: the vendored bundles still
# name a few outside addresses (ReDoc's "powered by" logo), which the browser then never asks.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; font-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)


def _own_assets_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def install_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` from the vendored assets (web/static/apidocs): they
    work without internet. The app is built with docs_url=None and redoc_url=None."""
    openapi_url = app.openapi_url or "/openapi.json"

    # plain routes, public as FastAPI's own: the page holds no data, /openapi.json neither
    async def swagger_ui(_request: Request) -> HTMLResponse:
        return _own_assets_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} API",
                swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS}/swagger-ui.css",
                swagger_favicon_url="data:,",
                oauth2_redirect_url="/docs/oauth2-redirect",
            )
        )

    async def swagger_ui_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(_request: Request) -> HTMLResponse:
        return _own_assets_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} API",
                redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                redoc_favicon_url="data:,",
                with_google_fonts=False,
            )
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/docs/oauth2-redirect", swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
