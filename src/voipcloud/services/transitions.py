"""The one place where a node's status changes: plan from the table, compare-and-set, event.

A transition is described by one typed record, `Change`: the operation, who runs it, why
(the event's reason), what the node shows afterwards (its status reason), and what else moves
with it (node fields, a pending operation started or ended, a new configuration generation,
a new or revoked session key).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection

from voipcloud.domain import lifecycle
from voipcloud.domain.errors import ConcurrentChange, NotFound
from voipcloud.domain.lifecycle import Operation, PendingOperation
from voipcloud.domain.model import Node
from voipcloud.domain.statuses import NodeStatus
from voipcloud.store import events
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database

# Node ids are 32-bit integers in the database; a larger one names no node (and must not
# reach the database, which would refuse the query itself).
MAX_NODE_ID = 2**31 - 1
NODE_FIELDS: Final = frozenset({"hostname", "private_ip", "public_ip", "container_id"})


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A new session key (encrypted, digest), or `None`s to revoke it."""

    encrypted: bytes | None
    digest: str | None
    end_agent_login: bool  # the agent that joined with the old key must join again


@dataclass(frozen=True, slots=True)
class Change:
    """One transition of one node, typed."""

    operation: Operation
    actor: str
    # why: recorded in the event (and, when the status changes, shown as the node's reason)
    reason: str | None = None
    # what the node shows afterwards; UNCHANGED: `reason` when the status changes, else as is
    status_reason: str | _Unchanged | None = UNCHANGED
    fields: dict[str, Any] = field(default_factory=dict)  # hostname, private_ip, public_ip, ...
    start: PendingOperation | None = None  # a pending operation for the node's agent
    end_pending: bool = False  # the pending operation is over
    new_configuration: bool = False  # the agent must reconcile (config_generation + 1)
    session_key: SessionKey | None = None
    check_busy: bool = True  # False: an outcome of the pending operation itself

    def values(self, node: Node, status_changes: bool, now: datetime) -> dict[str, Any]:
        unknown = set(self.fields) - NODE_FIELDS
        if unknown:  # pragma: no cover - a programming error
            raise ValueError(f"not node fields: {sorted(unknown)}")
        values: dict[str, Any] = dict(self.fields)
        if not isinstance(self.status_reason, _Unchanged):
            values["status_reason"] = self.status_reason
        elif status_changes:
            values["status_reason"] = self.reason
        if self.start is not None:
            values.update(
                pending_operation=self.start.value,
                operation_id=str(uuid.uuid4()),
                operation_started_at=now,
            )
        elif self.end_pending:
            values.update(pending_operation=None, operation_id=None, operation_started_at=None)
        if self.new_configuration:
            values["config_generation"] = node.config_generation + 1
        if self.session_key is not None:
            values["session_key_encrypted"] = self.session_key.encrypted
            values["session_key_digest"] = self.session_key.digest
            if self.session_key.end_agent_login:
                values["agent_token_digest"] = None
        return values


def planned_status(operation: Operation, status: NodeStatus, *, hostname: str) -> NodeStatus:
    """The status `operation` leaves a node in `status` with (RuleViolation when the table
    forbids it): what a writer of many new nodes at once records (services/imports.py)."""
    return lifecycle.plan(operation, status, hostname=hostname)


def load(conn: Connection, node_id: int) -> Node:
    node = node_rows.get(conn, node_id) if 0 < node_id <= MAX_NODE_ID else None
    if node is None:
        raise NotFound(f"Node {node_id} does not exist.")
    return node


def apply(conn: Connection, node: Node, change: Change, *, now: datetime) -> Node:
    """Run `change` on `node` as read in this transaction; returns the node after it.

    Raises RuleViolation when the table forbids it, ConcurrentChange when another
    transaction changed the node since it was read.
    """
    target = lifecycle.plan(change.operation, node.status, hostname=node.hostname)
    if change.check_busy:
        lifecycle.check_not_busy(change.operation, node.pending_operation, hostname=node.hostname)
    values = change.values(node, target is not node.status, now)
    if not node_rows.compare_and_set(conn, node, now=now, status=target.value, **values):
        raise ConcurrentChange(node.hostname)
    Database.mark_changed(conn, node.id)
    events.append(
        conn,
        at=now,
        actor=change.actor,
        node_id=node.id,
        operation=change.operation.value,
        status_before=node.status.value,
        status_after=target.value,
        reason=change.reason,
    )
    return load(conn, node.id)
