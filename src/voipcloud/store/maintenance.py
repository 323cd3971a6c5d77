"""Maintenance mode rows: the flag on a node, the status counters, and the flag's history as
the event log records it (for muting notifications)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Connection, func, literal, select, union_all

from voipcloud.domain.model import Node
from voipcloud.domain.statuses import NodeStatus
from voipcloud.store import nodes as node_rows
from voipcloud.store.tables import events, extensions, node_counts, nodes

ENTER = "enter-maintenance"
LEAVE = "leave-maintenance"


def set_flag(
    conn: Connection,
    node: Node,
    *,
    reason: str | None,
    by: str | None,
    since: datetime | None,
    now: datetime,
) -> bool:
    """Enter (values) or leave (Nones) maintenance, as a compare-and-set on the node's
    row_version: False when another transaction changed the node since it was read."""
    return node_rows.compare_and_set(
        conn,
        node,
        now=now,
        maintenance_reason=reason,
        maintenance_by=by,
        maintenance_since=since,
    )


@dataclass(frozen=True, slots=True)
class StatusCount:
    status: NodeStatus
    nodes: int
    in_maintenance: int


@dataclass(frozen=True, slots=True)
class Summary:
    """The status counters: nodes per status, how many of the live ones are in maintenance;
    and the extensions provisioned (the listing shows them, the rulebook weighs them)."""

    by_status: list[StatusCount]
    extension_count: int = 0

    def nodes_by_status(self) -> dict[str, int]:
        """The nodes per status (Deleted included), by the status's value."""
        return {c.status.value: c.nodes for c in self.by_status}

    @property
    def live(self) -> int:
        return sum(c.nodes for c in self.by_status if c.status is not NodeStatus.DELETED)

    @property
    def in_maintenance(self) -> int:
        return sum(c.in_maintenance for c in self.by_status if c.status is not NodeStatus.DELETED)

    def count(self, status: NodeStatus) -> int:
        return next(c.nodes for c in self.by_status if c.status is status)


_EXTENSIONS = "extensions"  # the row of the counters' statement that counts them (no status)


def summary(conn: Connection) -> Summary:
    """The status counters and the extension count, read in the caller's transaction: how
    many nodes in each status (the counts the triggers keep, migration 0008), how many of them
    in maintenance (ix_nodes_maintenance: only those rows), and how many extensions. No scan
    of the nodes, though the listing asks on every poll; one statement, one round trip."""
    kept = select(
        node_counts.c.status, func.sum(node_counts.c.delta), literal(0, BigInteger)
    ).group_by(node_counts.c.status)
    flagged = (
        select(nodes.c.status, literal(0, BigInteger), func.count())
        .where(nodes.c.maintenance_since.is_not(None))
        .group_by(nodes.c.status)
    )
    provisioned = select(literal(_EXTENSIONS), func.count(), literal(0, BigInteger)).select_from(
        extensions
    )
    totals: dict[str, int] = defaultdict(int)
    kept_in: dict[str, int] = defaultdict(int)
    for status, counted, flagged_count in conn.execute(union_all(kept, flagged, provisioned)):
        totals[str(status)] += int(counted or 0)
        kept_in[str(status)] += int(flagged_count or 0)
    by_status = [
        StatusCount(status, totals[status.value], kept_in[status.value]) for status in NodeStatus
    ]
    return Summary(by_status, extension_count=totals[_EXTENSIONS])


def in_maintenance_before(
    conn: Connection, node_ids: Iterable[int], before_event_id: int
) -> dict[int, bool]:
    """Whether each node was in maintenance just before the event `before_event_id`, from
    the last Enter/Leave Maintenance event the log holds before it (nodes without one: no)."""
    ids = sorted(set(node_ids))
    if not ids:
        return {}
    last = (
        select(events.c.node_id, func.max(events.c.id).label("last_id"))
        .where(
            events.c.node_id.in_(ids),
            events.c.operation.in_((ENTER, LEAVE)),
            events.c.id < before_event_id,
        )
        .group_by(events.c.node_id)
        .subquery()
    )
    rows = conn.execute(
        select(events.c.node_id, events.c.operation).join(last, events.c.id == last.c.last_id)
    )
    found = {int(node_id): operation == ENTER for node_id, operation in rows}
    return {node_id: found.get(node_id, False) for node_id in ids}


def count_among(conn: Connection, node_ids: list[int]) -> int:
    """How many of these nodes are in maintenance."""
    if not node_ids:
        return 0
    query = (
        select(func.count())
        .select_from(nodes)
        .where(nodes.c.id.in_(sorted(set(node_ids))), nodes.c.maintenance_since.is_not(None))
    )
    return int(conn.execute(query).scalar_one())
