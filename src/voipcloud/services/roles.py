"""Role use cases: assign, edit parameters, delete assignment, administrative remove."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from voipcloud.domain import lifecycle, versions
from voipcloud.domain.errors import ConcurrentChange, InvalidInput, NotFound, RuleViolation
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Node, RoleAssignment
from voipcloud.domain.roles import (
    CONTROLLER_ROLE,
    DISTRIBUTED_DATABASE_ROLE,
    ROLES,
    SECRET_MASK,
    EffectiveValue,
    PublicIp,
    Role,
    check_consistency,
    effective_parameters,
    validate_parameters,
)
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services import transitions
from voipcloud.services.context import CONTROLLER_ACTOR, Context
from voipcloud.services.nodes import NodeService
from voipcloud.services.secrets_box import ENCRYPTED, seal, unseal
from voipcloud.store import extensions, infrastructure
from voipcloud.store import roles as role_rows

DD_MAX_EXTENSIONS = 3  # dd may be assigned while at most this many extensions exist
ADMIN_REMOVE_MAX_EXTENSIONS = 2  # "less than three extensions"


def removal_warning(role: Role, hostname: str) -> str:
    return (
        f"Warning: the {role.name} role will be removed from the Infrastructure Controller "
        f"node {hostname}, whatever its status, and its agent will stop it. Make sure another "
        "node carries this role before you continue."
    )


@dataclass(frozen=True, slots=True)
class AssignedRole:
    role: Role
    assignment: RoleAssignment
    effective: dict[str, EffectiveValue]


@dataclass(frozen=True, slots=True)
class AssignResult:
    node: Node
    session_key: str | None


class RoleService:
    def __init__(self, ctx: Context, nodes: NodeService) -> None:
        self._ctx = ctx
        self._nodes = nodes

    # reads
    def assigned(self, node_id: int, *, reveal_secrets: bool = False) -> list[AssignedRole]:
        with self._ctx.db.read() as conn:
            node = transitions.load(conn, node_id)
            return self.assigned_in(conn, node, reveal_secrets=reveal_secrets)

    def assigned_in(
        self, conn: Connection, node: Node, *, reveal_secrets: bool
    ) -> list[AssignedRole]:
        """The node's roles and effective parameters, read in the caller's transaction."""
        properties = self.reveal(infrastructure.properties(conn))
        result = []
        for assignment in role_rows.for_node(conn, node.id):
            role = ROLES[assignment.role]
            explicit = self.reveal(assignment.parameters)
            effective = effective_parameters(
                role, explicit, properties=properties, public_ip=node.public_ip
            )
            if not reveal_secrets:
                effective = {
                    name: EffectiveValue(SECRET_MASK, value.source)
                    if role.is_secret(name) and value.value
                    else value
                    for name, value in effective.items()
                }
            result.append(AssignedRole(role, assignment, effective))
        return result

    # changes
    def assign(
        self, node_id: int, *, actor: str, role: str, parameters: dict[str, Any]
    ) -> AssignResult:
        spec = _known_role(role, in_path=False)
        clean = validate_parameters(spec, parameters)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            lifecycle.plan(Operation.ASSIGN_ROLE, node.status, hostname=node.hostname)
            if spec.code == CONTROLLER_ROLE:
                raise RuleViolation(
                    "controller-role-reserved",
                    "The Infrastructure Controller role belongs to the controller's own node; "
                    "it cannot be assigned to another node.",
                )
            if spec.code in node.roles:
                raise RuleViolation(
                    "role-already-assigned",
                    f"Node {node.hostname} already has the {spec.name} role; "
                    "edit its parameters instead.",
                )
            if spec.public_ip is PublicIp.REQUIRED and not node.public_ip:
                raise RuleViolation(
                    "public-ip-required",
                    f"The {spec.name} role needs a public IP and node {node.hostname} has none; "
                    "set the node's public IP first.",
                )
            if spec.code == DISTRIBUTED_DATABASE_ROLE:
                infrastructure.lock(conn)
                count = extensions.count(conn)
                if count > DD_MAX_EXTENSIONS:
                    raise RuleViolation(
                        "dd-extension-limit",
                        "The Distributed Database role can be assigned only while at most "
                        f"{DD_MAX_EXTENSIONS} extensions are provisioned; there are {count}.",
                    )
            explicit = {k: v for k, v in clean.items() if v is not None}
            self._check_effective(conn, node, spec, explicit)
            role_rows.add(
                conn,
                node_id=node.id,
                role=spec.code,
                parameters=self._encrypt(spec, explicit),
                now=now,
            )
            values: dict[str, Any] = {"config_generation": node.config_generation + 1}
            if not node.has_session_key:
                values.update(self._nodes.session_key_values(node))
            node = transitions.apply(
                conn,
                node,
                Operation.ASSIGN_ROLE,
                actor=actor,
                now=now,
                event_reason=f"role {spec.code} assigned",
                **values,
            )
        details = self._nodes.get(node.id)
        return AssignResult(node=details.node, session_key=details.session_key)

    def edit(
        self,
        node_id: int,
        *,
        actor: str,
        role: str,
        parameters: dict[str, Any],
        expected: versions.Expected | None = None,
    ) -> Node:
        spec = _known_role(role)
        clean = validate_parameters(spec, parameters)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            assignment = _assignment(conn, node, spec)
            # If-Match: set_parameters below is a compare-and-set on this same version
            versions.check(expected, versions.assignment_snapshot(node.hostname, spec, assignment))
            lifecycle.plan(Operation.EDIT_ROLE, node.status, hostname=node.hostname)
            lifecycle.check_not_busy(
                Operation.EDIT_ROLE, node.pending_operation, hostname=node.hostname
            )
            properties = self.reveal(infrastructure.properties(conn))
            before = self.reveal(assignment.parameters)
            after = dict(before)
            for name, value in clean.items():
                if value is None:
                    after.pop(name, None)
                elif not (value == SECRET_MASK and spec.is_secret(name)):
                    after[name] = value
            self._check_effective(conn, node, spec, after)
            old = effective_parameters(
                spec, before, properties=properties, public_ip=node.public_ip
            )
            new = effective_parameters(spec, after, properties=properties, public_ip=node.public_ip)
            changed = sorted(n for n in new if new[n].value != old[n].value)
            if after == before and not changed:
                return node
            if not role_rows.set_parameters(
                conn,
                node_id=node.id,
                role=spec.code,
                parameters=self._encrypt(spec, after),
                now=now,
                version=assignment.row_version,
            ):
                raise ConcurrentChange(node.hostname)
            summary = ", ".join(f"{spec.code}.{n}" for n in changed) or "none"
            structural = [n for n in changed if not spec.is_customer_connectivity(n)]
            node = transitions.apply(
                conn,
                node,
                Operation.EDIT_ROLE,
                actor=actor,
                now=now,
                event_reason=f"parameters changed: {summary}",
                config_generation=node.config_generation + (1 if changed else 0),
            )
            if node.status is NodeStatus.ONLINE and structural:
                reason = "role parameter changed: " + ", ".join(
                    f"{spec.code}.{n}" for n in structural
                )
                node = transitions.apply(
                    conn,
                    node,
                    Operation.CONFIGURATION_CHANGED,
                    actor=CONTROLLER_ACTOR,
                    now=now,
                    reason=reason,
                )
            return node

    def unassign(
        self,
        node_id: int,
        *,
        actor: str,
        role: str,
        expected: versions.Expected | None = None,
    ) -> Node:
        spec = _known_role(role)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            assignment = _assignment(conn, node, spec)
            # If-Match; the node's compare-and-set below serializes it with any role change
            versions.check(expected, versions.assignment_snapshot(node.hostname, spec, assignment))
            lifecycle.plan(Operation.DELETE_ASSIGNMENT, node.status, hostname=node.hostname)
            if spec.code == CONTROLLER_ROLE:
                raise RuleViolation(
                    "controller-role-reserved",
                    "The Infrastructure Controller role cannot be taken off the controller's node.",
                )
            role_rows.remove(conn, node_id=node.id, role=spec.code)
            return transitions.apply(
                conn,
                node,
                Operation.DELETE_ASSIGNMENT,
                actor=actor,
                now=now,
                event_reason=f"role {spec.code} unassigned",
                config_generation=node.config_generation + 1,
            )

    def admin_remove(self, node_id: int, *, actor: str, role: str, confirm: bool) -> Node:
        spec = _known_role(role)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            if not spec.admin_removable:
                allowed = ", ".join(r.name for r in ROLES.values() if r.admin_removable)
                raise RuleViolation(
                    "admin-remove-role",
                    f"Administrative Remove is not available for the {spec.name} role; "
                    f"it applies only to {allowed}.",
                )
            if not node.is_controller:
                raise RuleViolation(
                    "admin-remove-controller-only",
                    f"Administrative Remove applies only to roles on the Infrastructure "
                    f"Controller node; node {node.hostname} is not it. Use Delete Assignment.",
                )
            _assignment(conn, node, spec)
            infrastructure.lock(conn)
            count = extensions.count(conn)
            if count > ADMIN_REMOVE_MAX_EXTENSIONS:
                raise RuleViolation(
                    "admin-remove-extensions",
                    "Administrative Remove is available only while fewer than three extensions "
                    f"are provisioned; there are {count}.",
                )
            if not confirm:
                raise InvalidInput.one(("body", "confirm"), removal_warning(spec, node.hostname))
            role_rows.remove(conn, node_id=node.id, role=spec.code)
            return transitions.apply(
                conn,
                node,
                Operation.ADMIN_REMOVE,
                actor=actor,
                now=now,
                event_reason=f"role {spec.code} removed from the Infrastructure Controller node",
                config_generation=node.config_generation + 1,
            )

    # secrets at rest (role parameters and the Infrastructure Properties share the format)
    def reveal(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Stored values with the encrypted ones decrypted."""
        return unseal(self._ctx.box, stored)

    def conceal(self, values: dict[str, Any], *, secret: frozenset[str]) -> dict[str, Any]:
        """Values ready to store: the ones named in `secret` encrypted."""
        return seal(self._ctx.box, values, secret=secret)

    # helpers
    def _check_effective(
        self, conn: Connection, node: Node, spec: Role, explicit: dict[str, Any]
    ) -> None:
        effective = effective_parameters(
            spec,
            explicit,
            properties=self.reveal(infrastructure.properties(conn)),
            public_ip=node.public_ip,
        )
        errors = check_consistency(spec, effective)
        if errors:
            raise InvalidInput(errors)

    def _encrypt(self, spec: Role, explicit: dict[str, Any]) -> dict[str, Any]:
        return {
            name: {ENCRYPTED: self._ctx.box.encrypt(str(value)).decode()}
            if spec.is_secret(name)
            else value
            for name, value in explicit.items()
        }


def _known_role(code: str, *, in_path: bool = True) -> Role:
    spec = ROLES.get(code)
    if spec is None:
        if in_path:
            raise NotFound(f"There is no role {code!r}; known roles: {', '.join(ROLES)}.")
        raise InvalidInput.one(("body", "role"), f"unknown role; known: {', '.join(ROLES)}")
    return spec


def _assignment(conn: Connection, node: Node, spec: Role) -> RoleAssignment:
    for assignment in role_rows.for_node(conn, node.id):
        if assignment.role == spec.code:
            return assignment
    raise NotFound(f"Node {node.hostname} has no {spec.name} role.")
