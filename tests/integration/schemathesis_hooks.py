"""schemathesis hooks for tests/integration/test_schemathesis.py (loaded by SCHEMATHESIS_HOOKS).

One hook, `filter_failure`, and it drops only "schema-valid request rejected" (ST202) failures
whose 422 names, field by field, a rule listed in EXPLAINED for that very operation: a rule
that JSON Schema cannot state (it compares two fields, depends on the stored state or on the
path, or needs a computation). A 422 with any other field or message still fails the run, and
every other check is untouched.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jsonschema
import schemathesis

# operation id -> [(where, what the 422 says, why the schema cannot say it)]
EXPLAINED: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}


def explain(operations: tuple[str, ...], loc: tuple[str, ...], message: str, why: str) -> None:
    for operation in operations:
        EXPLAINED.setdefault(operation, []).append((loc, message, why))


PROPERTIES = ("set_infrastructure_properties", "preview_infrastructure_properties")
explain(
    PROPERTIES,
    ("body", "rtp_port_max"),
    "the RTP port range is reversed or empty",
    "compares two fields: the end of the RTP range must be above its start",
)
explain(
    PROPERTIES,
    ("body", "rtp_port_min"),
    "overlaps port",
    "compares two fields with the roles' catalogue: the RTP range must avoid their ports",
)
explain(
    PROPERTIES,
    ("body", "private_network"),
    "has host bits set|is not a private range|is not a valid CIDR range",
    "a CIDR range's host bits and the private ranges need address arithmetic",
)
explain(
    PROPERTIES,
    ("body", "dns_servers"),
    "is listed twice",
    "two spellings of one IPv6 address are one address only after normalization",
)
explain(
    (*PROPERTIES, "run_wizard", "plan_wizard"),
    ("body", "timezone"),
    "is not a known time zone",
    "the IANA tz database's names (about 600) are checked by the domain, not listed as an enum",
)
explain(
    ("assign_role", "edit_role_assignment"),
    ("body", "parameters"),
    "unknown parameter for role|must be|is not",
    "a role's parameters depend on the role (in the body, or in the path for an edit); "
    "GET /api/v1/roles lists each role's parameters with their types and bounds",
)
explain(
    ("remove_role_administratively",),
    ("body", "confirm"),
    "Warning:",
    "removing a role from the IC node needs confirm=true, the answer to the warning it "
    "returns; on any other node the same request is accepted (state, not shape)",
)
explain(
    ("set_storage_configuration", "test_storage_configuration"),
    ("body",),
    "each kind needs a directory of its own|is inside|contains",
    "compares the kinds' local directories with each other",
)
explain(
    ("set_storage_configuration", "test_storage_configuration"),
    ("body",),
    "is required when the backend is s3",
    "which s3 settings are needed depends on the backend chosen and on those already stored",
)
explain(
    ("list_events",),
    ("query", "until"),
    "must be later than since",
    "compares two parameters: the end of the period after its start",
)
explain(
    ("put_storage_resource",),
    ("header", "x-checksum-sha256"),
    "does not match the content received",
    "the header must be the SHA-256 of the body: a computation, not a shape",
)
explain(
    ("create_api_token",),
    ("body", "expires_at"),
    "must be in the future|must be at most 366 days ahead",
    "depends on the clock at the time of the request",
)
explain(
    ("create_api_token",),
    ("body", "name"),
    "printable characters",
    "Unicode's printable property (str.isprintable) has no JSON Schema pattern",
)
explain(
    ("add_account", "reset_password"),
    ("body",),
    "must not be the username|is a commonly used password",
    "the password policy refuses the username and a list of common passwords",
)
explain(
    ("start_rollout",),
    ("body", "node_ids"),
    "no such node|give either node_ids or filter",
    "the node ids must name stored nodes; exactly one of node_ids and filter",
)
explain(
    ("start_rollout",),
    ("body", "filter"),
    "matches no node|matches more than",
    "what the filter matches depends on the stored nodes",
)
explain(
    ("start_rollout",),
    ("body", "failure_tolerance"),
    "must be between 0 and",
    "compares with the number of nodes the selection holds (stored state)",
)
explain(
    ("start_rollout",),
    ("body", "include_maintenance"),
    "every chosen node is in maintenance",
    "depends on the stored nodes' maintenance",
)
explain(
    ("bulk_action",),
    ("body",),
    "give either node_ids or filter|give node_ids",
    "exactly one of node_ids and filter (a rule across two fields)",
)
explain(
    ("bulk_action",),
    ("body", "role"),
    "take a role|needs the role",
    "which fields apply depends on the action in the path (role: assign-role and "
    "delete-assignment only, and required there)",
)
explain(
    ("bulk_action",),
    ("body", "parameters"),
    "only assign-role takes parameters|unknown parameter for role|must be|is not",
    "parameters apply to assign-role only, and depend on the role in the body",
)
explain(
    ("bulk_action",),
    ("body", "force"),
    "only deactivate can be forced",
    "force applies to the deactivate action only (the action is in the path)",
)
explain(
    ("bulk_action",),
    ("body", "reason"),
    "a forced deactivation needs a reason",
    "compares two fields: force needs a non-empty reason",
)
explain(
    ("bulk_action",),
    ("body", "filter"),
    "matches [0-9]+ nodes; at most",
    "how many nodes a filter matches depends on the stored nodes",
)
for moment in ("since", "until"):
    explain(
        ("list_events",),
        ("query", moment),
        "is outside the years 1 to 9999 in UTC",
        "a moment near year 1 or 9999 with an offset leaves the calendar once in UTC",
    )


# The run's own account (the `api` fixture signs in as admin). Disabling, demoting or deleting
# it, or resetting its password, ends the run's session, and every later request would be a
# 401 testing nothing; the stateful phase finds the name in GET /api/v1/accounts. These
# operations still run, on every other username: a case aimed at the run's own account goes
# to an account that does not exist instead (a 404, checked like any other answer).
OWN_ACCOUNT = "admin"
STAND_IN = "nobody-schemathesis"
ACCOUNT_WRITES = ("change_account", "delete_account", "reset_password")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.definition.raw.get("operationId") not in ACCOUNT_WRITES:
        return
    username = (case.path_parameters or {}).get("username")
    if str(username).strip().lower() == OWN_ACCOUNT:
        case.path_parameters["username"] = STAND_IN


def _sent_to_the_stand_in(case: Any) -> bool:
    """A case `before_call` moved from the run's own account to the stand-in: its 404 is by
    design. The stateful phase links an account created by POST /api/v1/accounts to these
    writes and reports the 404 as ST302 ("created resource not found") when the link's
    username was the run's own (seen once in a full run: the DELETE went to the stand-in)."""
    operation_id = case.operation.definition.raw.get("operationId")
    return (
        operation_id in ACCOUNT_WRITES and (case.path_parameters or {}).get("username") == STAND_IN
    )


def _detail_entries(response: Any) -> list[dict[str, Any]] | None:
    try:
        body = response.json()
    except Exception:  # not JSON: not an explained refusal
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, list) or not detail:
        return None
    return [entry for entry in detail if isinstance(entry, dict)]


def is_explained(operation_id: str | None, status: int, entries: list[dict[str, Any]]) -> bool:
    rules = EXPLAINED.get(operation_id or "", [])
    if status != 422 or not rules:
        return False
    for entry in entries:
        loc = tuple(str(part) for part in entry.get("loc", []))
        msg = str(entry.get("msg", ""))
        if not any(
            loc[: len(where)] == where and re.search(message, msg) for where, message, _ in rules
        ):
            return False
    return True


# ST201 ("schema-violating request accepted") is reported on the storage settings for bodies
# that conform to the published schema. schemathesis 4.32.5 learns from the server's 422s
# ("error feedback") and tightens its own copy of the schema: after "secret_access_key is
# required when the backend is s3" it marks the field required with minLength 1, then sends
# an empty secret ("leave empty to keep") to a kind whose secret is stored, and reports the 200.
# Earlier forms of the same: "Missing required property: secret_access_key", and "Incorrect
# type" for a kind's `s3`/`local` sent as null (the schema allows null: left unchanged).
# An ST201 is dropped only when the body it names validates against the published request
# schema (JSON Schema 2020-12, the controller's own /openapi.json); a body that violates it
# still fails the run.
STORAGE_SETTINGS = ("set_storage_configuration", "test_storage_configuration")


def request_body_schema(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON request body schema of one operation, with the document's components beside
    it so that its `#/components/...` references resolve."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if not isinstance(body, dict) or "schema" not in body:
        return None
    return {**body["schema"], "components": spec.get("components", {})}


def conforms(schema: dict[str, Any], body: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(body)


def _conforming_request(case: Any) -> bool:
    schema = request_body_schema(case.operation.schema.raw_schema, case.operation.definition.raw)
    return schema is not None and isinstance(case.body, dict) and conforms(schema, case.body)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """False (drop) only for an ST202 whose every field at fault is explained above (and an
    ST201 on a storage body that conforms to the published schema, and an ST302 on the
    stand-in account)."""
    code = getattr(failure, "code", None)
    operation_id = case.operation.definition.raw.get("operationId")
    if code == "ST302" and _sent_to_the_stand_in(case):
        return False
    if code == "ST201" and operation_id in STORAGE_SETTINGS:
        return not _conforming_request(case)
    if code != "ST202":
        return True
    entries = _detail_entries(response)
    if entries is None:
        return True
    if not is_explained(operation_id, response.status_code, entries):
        return True
    record = os.environ.get("VOIPCLOUD_ST_EXPLAINED")
    if record:  # the test lists what was dropped
        fields = ",".join(sorted({".".join(map(str, e.get("loc", []))) for e in entries}))
        line = {"operation": operation_id, "status": response.status_code, "fields": fields}
        with open(record, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
    return False
