"""Infrastructure Properties (SPEC.md section 7) and how their changes reach the nodes.

Saving properties is one transaction: the new set is validated, every live node's effective
role configuration is computed before and after, and each Online node whose configuration
moves is marked Damaged ("infrastructure change: system domain changed") through the
transition table, with its event. A dry run computes the same answer and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from voipcloud.domain import versions
from voipcloud.domain.errors import RuleViolation
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Node
from voipcloud.domain.properties import (
    SECRET_PROPERTIES,
    SPECS,
    changed_names,
    masked,
    validate_changes,
)
from voipcloud.domain.property_changes import ParameterChange, change_reason, role_changes
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services import transitions
from voipcloud.services.context import CONTROLLER_ACTOR, Context
from voipcloud.services.nodes import NodeService
from voipcloud.services.roles import RoleService
from voipcloud.services.wizard import WizardService
from voipcloud.store import events, infrastructure
from voipcloud.store import nodes as node_rows
from voipcloud.store import roles as role_rows


@dataclass(frozen=True, slots=True)
class NodeImpact:
    """A live node whose effective role configuration a property change moves."""

    node_id: int
    hostname: str
    status_before: NodeStatus
    status_after: NodeStatus
    reason: str
    changes: list[ParameterChange]

    @property
    def marked_damaged(self) -> bool:
        return self.status_before is not self.status_after


@dataclass(frozen=True, slots=True)
class PropertiesChange:
    properties: dict[str, Any]  # the set after the change, secrets masked
    changed: list[str]  # names of the properties whose value changes
    affected: list[NodeImpact]  # Online nodes marked Damaged (or that would be)
    others: list[NodeImpact]  # not Online: they take the new values at their next apply
    applied: bool  # False for a preview


class InfrastructureService:
    def __init__(self, ctx: Context, *, nodes: NodeService, roles: RoleService) -> None:
        self.ctx = ctx
        self.nodes = nodes
        self.roles = roles
        self.wizard = WizardService(ctx, nodes=nodes, roles=roles, infrastructure=self)

    # reads
    def properties(self) -> dict[str, Any]:
        """The current set, secrets masked (they are write-only)."""
        with self.ctx.db.read() as conn:
            return masked(self.read(conn))

    def updated_at(self) -> datetime | None:
        with self.ctx.db.read() as conn:
            return infrastructure.updated_at(conn)

    # changes
    def version(self) -> versions.Snapshot:
        """The properties as read now, with their version (the API's ETag)."""
        with self.ctx.db.read() as conn:
            return self.snapshot(conn)

    def snapshot(self, conn: Connection) -> versions.Snapshot:
        return versions.properties_snapshot(infrastructure.version(conn), masked(self.read(conn)))

    def update(
        self,
        *,
        actor: str,
        changes: dict[str, Any],
        dry_run: bool = False,
        expected: versions.Expected | None = None,
    ) -> PropertiesChange:
        """Validate and save `changes` (absent fields keep their value); mark the Online
        nodes whose configuration moves Damaged. With `dry_run`, say what would happen.
        `expected` (If-Match, a form's version): refused with StaleVersion when the
        properties changed since; the write is a compare-and-set on that version."""
        now = self.ctx.clock()
        opener = self.ctx.db.read if dry_run else self.ctx.db.write
        with opener() as conn:
            if not dry_run:
                infrastructure.lock(conn)
            current = self.snapshot(conn)
            before = self.read(conn)
            # invalid input is a 422 whatever the precondition says (RFC 9110 13.2.1: a request
            # that would fail anyway is answered as such, not with 412)
            after = validate_changes(before, changes)
            if not dry_run:
                versions.check(expected, current)
            return self.save(
                conn,
                before=before,
                after=after,
                actor=actor,
                now=now,
                dry_run=dry_run,
                version=int(current.version),
            )

    # building blocks, also used by the Configuration Wizard inside its own transaction
    def read(self, conn: Connection) -> dict[str, Any]:
        return self.roles.reveal(infrastructure.properties(conn))

    def save(
        self,
        conn: Connection,
        *,
        before: dict[str, Any],
        after: dict[str, Any],
        actor: str,
        now: datetime,
        dry_run: bool = False,
        version: int | None = None,
    ) -> PropertiesChange:
        changed = changed_names(before, after)
        impacts = self._impacts(conn, before, after) if changed else []
        affected = [i for i in impacts if i.marked_damaged]
        others = [i for i in impacts if not i.marked_damaged]
        if changed and not dry_run:
            if not infrastructure.set_properties(
                conn,
                properties=self.roles.conceal(after, secret=SECRET_PROPERTIES),
                now=now,
                version=version,
            ):
                raise RuleViolation(
                    "concurrent-change",
                    "The Infrastructure Properties were changed by another request at the same "
                    "time; reload them and try again.",
                )
            labels = ", ".join(SPECS[name].label for name in changed)
            marked = ", ".join(i.hostname for i in affected) or "none"
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="infrastructure-properties",
                reason=f"changed: {labels}; nodes marked Damaged: {marked}",
            )
            for impact in affected:
                self._mark_damaged(conn, impact, now=now)
        return PropertiesChange(
            properties=masked(after),
            changed=changed,
            affected=affected,
            others=others,
            applied=not dry_run,
        )

    def _impacts(
        self, conn: Connection, before: dict[str, Any], after: dict[str, Any]
    ) -> list[NodeImpact]:
        impacts = []
        for node in node_rows.all_live(conn):
            changes: list[ParameterChange] = []
            for assignment in role_rows.for_node(conn, node.id):
                changes += role_changes(
                    ROLES[assignment.role],
                    self.roles.reveal(assignment.parameters),
                    before=before,
                    after=after,
                    public_ip=node.public_ip,
                )
            if changes:
                online = node.status is NodeStatus.ONLINE
                impacts.append(
                    NodeImpact(
                        node_id=node.id,
                        hostname=node.hostname,
                        status_before=node.status,
                        status_after=NodeStatus.DAMAGED if online else node.status,
                        reason=change_reason(changes),
                        changes=changes,
                    )
                )
        return impacts

    def _mark_damaged(self, conn: Connection, impact: NodeImpact, *, now: datetime) -> Node:
        node = transitions.load(conn, impact.node_id)
        moved = ", ".join(f"{c.role}.{c.parameter}" for c in impact.changes)
        return transitions.apply(
            conn,
            node,
            transitions.Change(
                Operation.CONFIGURATION_CHANGED,
                CONTROLLER_ACTOR,
                reason=f"{impact.reason} ({moved}); use Fix Node to re-apply",
                status_reason=impact.reason,
                new_configuration=True,
            ),
            now=now,
        )
