"""The Configuration Wizard (SPEC.md section 5): when it may run, what it asks, what it plans.

The standard single-node roles are every role of the catalogue (`SINGLE_NODE_ROLES`, beside
`ic` which the node already holds): one machine carries the whole platform, and the roles it
no longer needs are later taken off with Administrative Remove. The wizard only adds roles
the node lacks (an existing assignment keeps its explicit values) and assigns them with their
defaults, so they follow the Infrastructure Properties it sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from voipcloud.domain import policy
from voipcloud.domain.errors import FieldError, InvalidInput
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Node
from voipcloud.domain.policy import Decision, NodeFacts
from voipcloud.domain.properties import SPECS, validate_value
from voipcloud.domain.roles import (
    CONTROLLER_ROLE,
    ROLES,
    SECRET_MASK,
    SINGLE_NODE_ROLES,
    effective_parameters,
)
from voipcloud.domain.validation import normalize_ip

# The properties the wizard may set besides the two it must ask for.
OPTIONAL_INPUTS = ("management_hostname", "infrastructure_name", "timezone")


@dataclass(frozen=True, slots=True)
class WizardInput:
    system_domain: str
    public_ip: str
    private_ip: str | None = None  # None: keep the IC node's detected private IP
    properties: Mapping[str, Any] | None = None  # optional: management_hostname, ...

    def property_changes(self) -> dict[str, Any]:
        changes = {"system_domain": self.system_domain, **(self.properties or {})}
        changes.setdefault("management_hostname", self.system_domain)
        return changes


def validate_input(
    raw: Mapping[str, Any], *, loc: tuple[str | int, ...] = ("body",)
) -> WizardInput:
    """The wizard's answers normalized, or InvalidInput naming each field at fault."""
    errors: list[FieldError] = []
    clean: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name in ("system_domain", "public_ip"):
        if not raw.get(name):
            what = "domain" if name == "system_domain" else "public IP address"
            errors.append(FieldError((*loc, name), f"the wizard needs the system {what}"))
    for name, value in raw.items():
        if value is None or value == "":
            continue
        try:
            if name in ("public_ip", "private_ip"):
                if not isinstance(value, str):
                    raise ValueError("must be a string")
                clean[name] = normalize_ip(value)
            elif name == "system_domain" or name in OPTIONAL_INPUTS:
                normalized = validate_value(SPECS[name], value)
                if name == "system_domain":
                    clean[name] = normalized
                else:
                    extra[name] = normalized
            else:
                raise ValueError("unknown field")
        except ValueError as exc:
            errors.append(FieldError((*loc, name), str(exc)))
    if errors:
        raise InvalidInput(errors)
    return WizardInput(
        system_domain=clean["system_domain"],
        public_ip=clean["public_ip"],
        private_ip=clean.get("private_ip"),
        properties=extra,
    )


def check_available(facts: NodeFacts) -> Decision:
    """The rulebook's answer: may the wizard run on the IC node (`facts`) now?"""
    return policy.decide(Operation.WIZARD, facts)


@dataclass(frozen=True, slots=True)
class PlannedParameter:
    name: str
    label: str
    value: Any
    source: str  # explicit, default, property:<name>, node:public_ip


@dataclass(frozen=True, slots=True)
class PlannedRole:
    code: str
    name: str
    already_assigned: bool
    parameters: list[PlannedParameter]


@dataclass(frozen=True, slots=True)
class WizardPlan:
    hostname: str
    private_ip: str
    public_ip: str
    properties: dict[str, Any]  # the properties the wizard sets (normalized)
    roles: list[PlannedRole]  # every role the node will carry, `ic` first
    skipped: dict[str, str]  # role code -> why the wizard leaves it out

    @property
    def new_roles(self) -> list[str]:
        return [r.code for r in self.roles if not r.already_assigned]


def make_plan(
    controller: Node,
    answers: WizardInput,
    facts: NodeFacts,
    *,
    properties_after: Mapping[str, Any],
    explicit: Mapping[str, Mapping[str, Any]],
) -> WizardPlan:
    """What the wizard will do to the IC node; `explicit` holds its current assignments.

    Each role it adds is asked of the rulebook as an Assign Role on the node as the wizard
    leaves it (its public IP set): a role the rules refuse is left out, with the reason."""
    skipped: dict[str, str] = {}
    codes = [CONTROLLER_ROLE]
    node = replace(facts, has_public_ip=True)
    for code in SINGLE_NODE_ROLES:
        if code not in explicit:
            decision = policy.decide(Operation.ASSIGN_ROLE, node, role=code)
            if not decision.allowed:
                skipped[code] = decision.reason or "refused"
                continue
            node = replace(node, roles=node.roles | {code})
        codes.append(code)
    roles = []
    for code in codes:
        role = ROLES[code]
        values = explicit.get(code, {})
        effective = effective_parameters(
            role, values, properties=properties_after, public_ip=answers.public_ip
        )
        roles.append(
            PlannedRole(
                code=code,
                name=role.name,
                already_assigned=code in explicit,
                parameters=[
                    PlannedParameter(
                        name=p.name,
                        label=p.label,
                        value=SECRET_MASK if p.secret else effective[p.name].value,
                        source=effective[p.name].source,
                    )
                    for p in role.parameters
                ],
            )
        )
    changes = answers.property_changes()
    return WizardPlan(
        hostname=controller.hostname,
        private_ip=answers.private_ip or controller.private_ip,
        public_ip=answers.public_ip,
        properties={name: properties_after[name] for name in changes},
        roles=roles,
        skipped=skipped,
    )
