"""Every rule code an answer can name, in one registry.

A refusal's body is `{"detail", "rule"}`: `detail` is the sentence for people, `rule` the
stable code for programs. The codes are raised in many places (the status table, the policy,
the services, the database's constraints, the permission table, the outage and throttling
answers); this module lists them all, so the API's schema can declare `rule` as an enum
(`api/contract.py`) and a test (tests/unit/test_rule_registry.py) can check that every code
raised anywhere in the source is registered here.

To add a rule: raise it where it is decided, and add one line below.
"""

from __future__ import annotations

from dataclasses import dataclass

from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.storage import FailureReason


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    status: int  # the HTTP status of an answer naming it
    summary: str


_CONFLICTS = {
    # lifecycle and policy (domain/lifecycle.py, domain/policy.py)
    "operation-in-progress": "the node has a pending operation; wait for its agent to report",
    "unknown-operation": "no such node action",
    "controller-not-deletable": "the Infrastructure Controller node cannot be deleted",
    "activate-needs-role": "Activate needs at least one assigned role",
    "no-role-assignable": "every role the node may carry is already assigned",
    "controller-role-reserved": "the ic role belongs to the Infrastructure Controller node only",
    "role-already-assigned": "the node already carries this role",
    "public-ip-required": "the role (or the node's roles) needs a public IP",
    "dd-extension-limit": "Distributed Database only while at most three extensions exist",
    "admin-remove-role": "Administrative Remove is not available for this role",
    "admin-remove-controller-only": "Administrative Remove works on the IC node only",
    "admin-remove-extensions": "Administrative Remove needs fewer than three extensions",
    "wizard-single-node": "the Configuration Wizard runs only with the IC node alone",
    "no-controller-node": "there is no Infrastructure Controller node",
    # maintenance mode (domain/policy.py)
    "node-in-maintenance": "a bulk action or rollout leaves nodes in maintenance out "
    "unless they are included explicitly",
    "maintenance-deleted": "a Deleted node cannot enter maintenance",
    "maintenance-already-on": "the node is already in maintenance",
    "maintenance-not-on": "the node is not in maintenance",
    # accounts and tokens
    "last-admin": "the last enabled administrator is kept",
    "username-taken": "another account has this username",
    "username-unique": "another account took this username at the same time",
    "token-name-taken": "another token of this account has this name",
    # extensions, storage
    "extension-unique": "the extension number exists already",
    "storage-location-in-use": "another kind already stores into this location",
    "storage-migration-running": "a storage migration is running",
    "storage-resource-busy": "the resource is being migrated",
    # webhooks (services/webhooks.py)
    "webhook-disabled": "a disabled webhook sends nothing, not even a test; enable it first",
    # rollouts (domain/rollouts.py)
    "rollout-pause-state": "only a running rollout can be paused",
    "rollout-resume-state": "only a paused rollout can be resumed",
    "rollout-cancel-state": "only a running or paused rollout can be cancelled",
    # the database's constraints, as races between two requests (store/errors.py)
    "hostname-unique": "another live node has this hostname",
    "single-controller-node": "there can be only one Infrastructure Controller node",
    "session-key-unique": "the new session key collided; try again",
    "agent-credential-unique": "the new agent credential collided; try again",
    "token-unique": "the new API token collided; try again",
    "infrastructure-exists": "the infrastructure properties were created at the same time",
    "storage-config-exists": "the storage configuration was created at the same time",
    "storage-resource-exists": "the resource was created at the same time",
    "already-exists": "another request created the same thing at the same time",
    "concurrent-change": "another request changed the same data at the same time",
}

_OTHERS = [
    Rule("role-forbidden", 403, "the account's role does not hold the permission"),
    Rule("token-read-only", 403, "a read-only API token cannot change anything"),
    Rule("login-throttled", 429, "too many failed sign-ins from this address; see Retry-After"),
    Rule("database-unavailable", 503, "the database is unavailable; nothing changed"),
    Rule("schema-outdated", 503, "GET /readyz: the database schema is not the current one"),
    Rule("starting", 503, "GET /readyz: the first-start work is not done yet"),
    Rule("stale-version", 412, "If-Match names an older version; `changed` names the fields"),
]


def _status_rules() -> list[Rule]:
    """`<operation>-status`: the status table refuses the operation in the node's status."""
    return [
        Rule(f"{op.value}-status", 409, f"the node's status does not allow {op.value}")
        for op in Operation
    ]


RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in [
        *_status_rules(),
        *(Rule(code, 409, summary) for code, summary in _CONFLICTS.items()),
        *_OTHERS,
        # a storage backend's failure (storage.BackendFailure): `storage-<reason>`, 409
        *(
            Rule(f"storage-{r.value}", 409, "the storage backend refused or failed")
            for r in FailureReason
        ),
    ]
}


def codes() -> list[str]:
    """Every registered code, sorted: the enum of the API's `Problem.rule`."""
    return sorted(RULES)
