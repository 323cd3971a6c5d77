"""The one place where a node's status changes: plan from the table, compare-and-set, event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from voipcloud.domain import lifecycle
from voipcloud.domain.errors import ConcurrentChange, NotFound
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Node
from voipcloud.store import events
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database

# Node ids are 32-bit integers in the database; a larger one names no node (and must not
# reach the database, which would refuse the query itself).
MAX_NODE_ID = 2**31 - 1


def load(conn: Connection, node_id: int) -> Node:
    node = node_rows.get(conn, node_id) if 0 < node_id <= MAX_NODE_ID else None
    if node is None:
        raise NotFound(f"Node {node_id} does not exist.")
    return node


def apply(
    conn: Connection,
    node: Node,
    operation: Operation,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    check_busy: bool = True,
    event_reason: str | None = None,
    **values: Any,
) -> Node:
    """Run `operation` on `node` as read in this transaction; returns the node after it.

    Raises RuleViolation when the table forbids it, ConcurrentChange when another
    transaction changed the node since it was read.
    """
    target = lifecycle.plan(operation, node.status, hostname=node.hostname)
    if check_busy:
        lifecycle.check_not_busy(operation, node.pending_operation, hostname=node.hostname)
    if target is not node.status:
        values.setdefault("status_reason", reason)
    if not node_rows.compare_and_set(conn, node, now=now, status=target.value, **values):
        raise ConcurrentChange(node.hostname)
    Database.mark_changed(conn, node.id)
    events.append(
        conn,
        at=now,
        actor=actor,
        node_id=node.id,
        operation=operation.value,
        status_before=node.status.value,
        status_after=target.value,
        reason=event_reason if event_reason is not None else reason,
    )
    return load(conn, node.id)
