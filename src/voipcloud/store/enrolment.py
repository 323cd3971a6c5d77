"""Rows of enrolment in bulk: many nodes with their roles and events in a few statements, and
many agents' joins in one transaction (services/imports.py, services/agents.py).

Every statement here is one multi-row insert or one executemany of a statement built once
(see STACK-NOTES): the node counters' and the search index's triggers fire per row as for a
single insert, so what the listing counts and finds stays right.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from voipcloud.domain.statuses import NodeStatus
from voipcloud.store.tables import events, nodes, role_assignments

IN_LIST = 500  # values per IN (...) list: well under SQLite's and PostgreSQL's limits


def live_hostnames(conn: Connection, hostnames: Iterable[str]) -> set[str]:
    """Which of these hostnames a live (not Deleted) node has (uq_nodes_live_hostname)."""
    wanted = sorted(set(hostnames))
    found: set[str] = set()
    for start in range(0, len(wanted), IN_LIST):
        chunk = wanted[start : start + IN_LIST]
        found.update(
            conn.execute(
                select(nodes.c.hostname).where(
                    nodes.c.hostname.in_(chunk), nodes.c.status != NodeStatus.DELETED.value
                )
            ).scalars()
        )
    return found


def insert_nodes(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert the nodes (column values) in one multi-row statement; their ids, in order."""
    if not rows:
        return []
    result = conn.execute(
        insert(nodes).returning(nodes.c.id, sort_by_parameter_order=True), list(rows)
    )
    return [int(i) for i in result.scalars()]


def insert_assignments(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(role_assignments), list(rows))


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Audit events (the columns of `events`), as `store.events.append` writes each."""
    if rows:
        conn.execute(insert(events), list(rows))


# ------------------------------------------------------------------------------------ joins


@dataclass(frozen=True, slots=True)
class KeyOwner:
    node_id: int
    status: NodeStatus


def key_owners(conn: Connection, digests: Iterable[str]) -> dict[str, KeyOwner]:
    """Session-key digest -> the node holding that key now (a revoked or deleted node's key
    is gone from the row, so it finds nothing)."""
    wanted = sorted(set(digests))
    found: dict[str, KeyOwner] = {}
    for start in range(0, len(wanted), IN_LIST):
        chunk = wanted[start : start + IN_LIST]
        rows = conn.execute(
            select(nodes.c.session_key_digest, nodes.c.id, nodes.c.status).where(
                nodes.c.session_key_digest.in_(chunk)
            )
        )
        for digest, node_id, status in rows:
            found[digest] = KeyOwner(int(node_id), NodeStatus(status))
    return found


_JOINED = (
    update(nodes)
    .where(nodes.c.id == bindparam("node_id"))
    .values(
        agent_token_digest=bindparam("token_digest"),
        os=bindparam("os"),
        kernel=bindparam("kernel"),
        container_id=bindparam("container_id"),
        agent_version=bindparam("agent_version"),
        components=bindparam("components", type_=nodes.c.components.type),
        inventory_digest=bindparam("inventory_digest"),
        updated_at=bindparam("now", type_=nodes.c.updated_at.type),
    )
)


def record_joins(conn: Connection, joins: Sequence[dict[str, Any]], *, now: datetime) -> None:
    """Each joined agent's credential and reported inventory (keys: node_id, token_digest, os,
    kernel, container_id, agent_version, components, inventory_digest), in one statement
    batch."""
    if joins:
        conn.execute(_JOINED, [{**j, "now": now} for j in joins])
