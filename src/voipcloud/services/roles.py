"""Role use cases: assign, edit parameters, delete assignment, administrative remove."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from voipcloud.domain import policy, versions
from voipcloud.domain.errors import ConcurrentChange, InvalidInput, NotFound
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Node, RoleAssignment
from voipcloud.domain.policy import removal_warning as _warning
from voipcloud.domain.roles import (
    ROLES,
    SECRET_MASK,
    EffectiveValue,
    Role,
    check_consistency,
    effective_parameters,
    validate_parameters,
)
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services import transitions
from voipcloud.services.context import CONTROLLER_ACTOR, Context
from voipcloud.services.nodes import NodeService, node_facts
from voipcloud.services.secrets_box import ENCRYPTED, seal, unseal
from voipcloud.services.transitions import Change
from voipcloud.store import infrastructure
from voipcloud.store import roles as role_rows


def removal_warning(role: Role, hostname: str, others: tuple[str, ...] = ()) -> str:
    """Administrative Remove's warning (the policy's text; `others`: who else carries it)."""
    return _warning(role.code, hostname, others)


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
        self,
        node_id: int,
        *,
        actor: str,
        role: str,
        parameters: dict[str, Any],
        leave_out_maintenance: bool = False,
    ) -> AssignResult:
        """Assign a role. `leave_out_maintenance`: a selection's (a bulk action's) call, which
        refuses a node in maintenance (policy.decide)."""
        spec, explicit = self.check_request(role, parameters)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            # the extension count is read under the lock that adding an extension takes
            infrastructure.lock(conn)
            policy.decide(
                Operation.ASSIGN_ROLE,
                node_facts(conn, node),
                role=spec.code,
                leave_out_maintenance=leave_out_maintenance,
            ).check()
            self._check_effective(conn, node, spec, explicit)
            role_rows.add(
                conn,
                node_id=node.id,
                role=spec.code,
                parameters=self.encrypt(spec, explicit),
                now=now,
            )
            key = None if node.has_session_key else self._nodes.new_session_key()
            node = transitions.apply(
                conn,
                node,
                Change(
                    Operation.ASSIGN_ROLE,
                    actor,
                    reason=assigned_reason(spec.code),
                    new_configuration=True,
                    session_key=key,
                ),
                now=now,
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
            policy.decide(Operation.EDIT_ROLE, node_facts(conn, node), role=spec.code).check()
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
                parameters=self.encrypt(spec, after),
                now=now,
                version=assignment.row_version,
            ):
                raise ConcurrentChange(node.hostname)
            summary = ", ".join(f"{spec.code}.{n}" for n in changed) or "none"
            structural = [n for n in changed if not spec.is_customer_connectivity(n)]
            node = transitions.apply(
                conn,
                node,
                Change(
                    Operation.EDIT_ROLE,
                    actor,
                    reason=f"parameters changed: {summary}",
                    new_configuration=bool(changed),
                ),
                now=now,
            )
            if node.status is NodeStatus.ONLINE and structural:
                reason = "role parameter changed: " + ", ".join(
                    f"{spec.code}.{n}" for n in structural
                )
                node = transitions.apply(
                    conn,
                    node,
                    Change(Operation.CONFIGURATION_CHANGED, CONTROLLER_ACTOR, reason=reason),
                    now=now,
                )
            return node

    def unassign(
        self,
        node_id: int,
        *,
        actor: str,
        role: str,
        expected: versions.Expected | None = None,
        leave_out_maintenance: bool = False,
    ) -> Node:
        spec = _known_role(role)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            assignment = _assignment(conn, node, spec)
            # If-Match; the node's compare-and-set below serializes it with any role change
            versions.check(expected, versions.assignment_snapshot(node.hostname, spec, assignment))
            policy.decide(
                Operation.DELETE_ASSIGNMENT,
                node_facts(conn, node),
                role=spec.code,
                leave_out_maintenance=leave_out_maintenance,
            ).check()
            role_rows.remove(conn, node_id=node.id, role=spec.code)
            return transitions.apply(
                conn,
                node,
                Change(
                    Operation.DELETE_ASSIGNMENT,
                    actor,
                    reason=f"role {spec.code} unassigned",
                    new_configuration=True,
                ),
                now=now,
            )

    def admin_remove(self, node_id: int, *, actor: str, role: str, confirm: bool) -> Node:
        spec = _known_role(role)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            infrastructure.lock(conn)  # the extension count holds until the commit
            decision = policy.decide(Operation.ADMIN_REMOVE, node_facts(conn, node), role=spec.code)
            decision.check()
            _assignment(conn, node, spec)
            if not confirm:
                raise InvalidInput.one(("body", "confirm"), decision.confirm or "confirm it")
            role_rows.remove(conn, node_id=node.id, role=spec.code)
            return transitions.apply(
                conn,
                node,
                Change(
                    Operation.ADMIN_REMOVE,
                    actor,
                    reason=f"role {spec.code} removed from the Infrastructure Controller node",
                    new_configuration=True,
                ),
                now=now,
            )

    # secrets at rest (role parameters and the Infrastructure Properties share the format)
    def reveal(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Stored values with the encrypted ones decrypted."""
        return unseal(self._ctx.box, stored)

    def conceal(self, values: dict[str, Any], *, secret: frozenset[str]) -> dict[str, Any]:
        """Values ready to store: the ones named in `secret` encrypted."""
        return seal(self._ctx.box, values, secret=secret)

    # Assign Role's checks, also run by the import of many nodes (services/imports.py)
    def check_request(self, role: str, parameters: dict[str, Any]) -> tuple[Role, dict[str, Any]]:
        """The role (422 naming `role` when unknown) and its explicit parameters, validated
        (422 naming each one at fault); a None value (the default) is left out."""
        spec = _known_role(role, in_path=False)
        clean = validate_parameters(spec, parameters)
        return spec, {k: v for k, v in clean.items() if v is not None}

    @staticmethod
    def check_effective(
        spec: Role, explicit: dict[str, Any], *, properties: dict[str, Any], public_ip: str | None
    ) -> None:
        """The effective parameters (explicit, properties, defaults) hold together (422)."""
        effective = effective_parameters(spec, explicit, properties=properties, public_ip=public_ip)
        errors = check_consistency(spec, effective)
        if errors:
            raise InvalidInput(errors)

    # helpers
    def _check_effective(
        self, conn: Connection, node: Node, spec: Role, explicit: dict[str, Any]
    ) -> None:
        self.check_effective(
            spec,
            explicit,
            properties=self.reveal(infrastructure.properties(conn)),
            public_ip=node.public_ip,
        )

    def encrypt(self, spec: Role, explicit: dict[str, Any]) -> dict[str, Any]:
        """Explicit parameters ready to store: the role's secret ones encrypted."""
        return {
            name: {ENCRYPTED: self._ctx.box.encrypt(str(value)).decode()}
            if spec.is_secret(name)
            else value
            for name, value in explicit.items()
        }


def assigned_reason(code: str) -> str:
    """The event's reason of Assign Role."""
    return f"role {code} assigned"


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
