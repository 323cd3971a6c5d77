"""Node rows: reads, inserts and compare-and-set updates."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Select,
    and_,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.lifecycle import PendingOperation
from voipcloud.domain.model import Component, Maintenance, Node, Page
from voipcloud.domain.statuses import NodeStatus
from voipcloud.store import node_search
from voipcloud.store.database import owns
from voipcloud.store.planner import methods_off
from voipcloud.store.tables import node_presence, nodes, nodes_with_presence, role_assignments
from voipcloud.store.types import sqlite_text

_SECRET_COLUMNS = ("session_key_encrypted", "session_key_digest", "agent_token_digest")
_COLUMNS = [c for c in nodes.c if c.name not in _SECRET_COLUMNS]
# Listings never show the components, and decoding them was most of a page's cost.
_LISTING_COLUMNS = [c for c in _COLUMNS if c.name != "components"]
_HAS_KEY = nodes.c.session_key_digest.is_not(None).label("has_session_key")
# the node's last-seen time, from its presence row (every node has exactly one: migration 0015)
_LAST_SEEN = node_presence.c.last_seen


def _node_select(columns: list[Any]) -> Select[Any]:
    """A node's columns and its last-seen time (`_node` reads both)."""
    return select(*columns, _HAS_KEY, _LAST_SEEN).select_from(nodes_with_presence)


def _in_order(columns: Iterable[Any], sort: str) -> list[Any]:
    """`columns` in the direction of the listing's sort (`-key`: descending)."""
    descending = sort.startswith("-")
    return [c.desc() if descending else c.asc() for c in columns]


def _sort_columns(key: str) -> list[Any]:
    """The columns a listing sort key orders by: the key, then the NodeID for ties. The
    last-seen time is in the presence row, and so its tie is the presence row's NodeID (the
    same value): SQLite then walks `ix_node_presence_last_seen` (last_seen, node_id) in order,
    0.1 ms for a first page at 50,000 nodes, against 8.6 ms sorting every live node when the
    tie named the node's own column."""
    if key == "id":
        return [nodes.c.id]
    if key == "last_seen":
        return [_LAST_SEEN, node_presence.c.node_id]
    return [nodes.c[key], nodes.c.id]


def _node(data: RowMapping, roles: list[str]) -> Node:
    return Node(
        id=data["id"],
        hostname=data["hostname"],
        private_ip=data["private_ip"],
        public_ip=data["public_ip"],
        container_id=data["container_id"],
        status=NodeStatus(data["status"]),
        status_reason=data["status_reason"],
        is_controller=bool(data["is_controller"]),
        has_session_key=bool(data["has_session_key"]),
        pending_operation=PendingOperation(data["pending_operation"])
        if data["pending_operation"]
        else None,
        operation_id=data["operation_id"],
        operation_started_at=data["operation_started_at"],
        config_generation=data["config_generation"],
        agent_version=data["agent_version"],
        os=data["os"],
        kernel=data["kernel"],
        # `in`, not `get`: a listing's rows have no components column, and a RowMapping's `get`
        # of a column it lacks raises and catches an error inside (25 to 100 a page)
        components=[Component(c["name"], c["version"]) for c in data["components"] or []]
        if "components" in data
        else [],
        last_seen=data["last_seen"],
        created_at=data["created_at"],
        updated_at=data["updated_at"],
        row_version=data["row_version"],
        roles=roles,
        maintenance=Maintenance(
            reason=data["maintenance_reason"] or "",
            by=data["maintenance_by"] or "",
            since=data["maintenance_since"],
        )
        if data["maintenance_since"] is not None
        else None,
    )


def roles_of(conn: Connection, node_ids: Iterable[int]) -> dict[int, list[str]]:
    ids = list(node_ids)
    result: dict[int, list[str]] = defaultdict(list)
    if not ids:
        return result
    rows = conn.execute(
        select(role_assignments.c.node_id, role_assignments.c.role)
        .where(role_assignments.c.node_id.in_(ids))
        .order_by(
            role_assignments.c.node_id, role_assignments.c.created_at, role_assignments.c.role
        )
    )
    for node_id, role in rows:
        result[node_id].append(role)
    return result


# PostgreSQL: a node's roles beside its row, in the order they were assigned (the order
# `roles_of` reads): one statement and round trip for both, in every node read and every page
_ROLES = (
    select(
        func.array_agg(
            aggregate_order_by(
                role_assignments.c.role, role_assignments.c.created_at, role_assignments.c.role
            )
        )
    )
    .where(role_assignments.c.node_id == nodes.c.id)
    .scalar_subquery()
    .label("roles")
)


def _read(conn: Connection, columns: list[Any], *where: Any) -> dict[int, Node]:
    """The nodes `where` selects, by NodeID, with their roles: read in the same statement on
    PostgreSQL (`_ROLES`); on SQLite by a second one (in-process: no round trip to save)."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_node_select([*columns, _ROLES]).where(*where))
        return {row.id: _node(row._mapping, list(row.roles or ())) for row in rows}
    found = conn.execute(_node_select(columns).where(*where)).all()
    roles = roles_of(conn, [row.id for row in found])
    return {row.id: _node(row._mapping, roles[row.id]) for row in found}


def get(conn: Connection, node_id: int) -> Node | None:
    return _read(conn, _COLUMNS, nodes.c.id == node_id).get(node_id)


def get_controller(conn: Connection) -> Node | None:
    node_id = conn.execute(select(nodes.c.id).where(nodes.c.is_controller)).scalar()
    return None if node_id is None else get(conn, node_id)


def get_by_key_digest(conn: Connection, digest: str) -> Node | None:
    node_id = conn.execute(select(nodes.c.id).where(nodes.c.session_key_digest == digest)).scalar()
    return None if node_id is None else get(conn, node_id)


def encrypted_session_key(conn: Connection, node_id: int) -> bytes | None:
    value = conn.execute(
        select(nodes.c.session_key_encrypted).where(nodes.c.id == node_id)
    ).scalar()
    return bytes(value) if value is not None else None


def live_hostname_owner(conn: Connection, hostname: str) -> int | None:
    return conn.execute(
        select(nodes.c.id).where(
            nodes.c.hostname == hostname, nodes.c.status != NodeStatus.DELETED.value
        )
    ).scalar()


def count_live(conn: Connection) -> int:
    return conn.execute(
        select(func.count()).select_from(nodes).where(nodes.c.status != NodeStatus.DELETED.value)
    ).scalar_one()


def insert_node(
    conn: Connection,
    *,
    hostname: str,
    private_ip: str,
    public_ip: str | None,
    container_id: str | None,
    is_controller: bool,
    now: datetime,
) -> int:
    result = conn.execute(
        insert(nodes)
        .values(
            hostname=hostname,
            private_ip=private_ip,
            public_ip=public_ip,
            container_id=container_id,
            status=NodeStatus.OFFLINE.value,
            is_controller=is_controller,
            config_generation=1,
            created_at=now,
            updated_at=now,
            row_version=1,
        )
        .returning(nodes.c.id)
    )
    return int(result.scalar_one())


def compare_and_set(conn: Connection, node: Node, *, now: datetime, **values: Any) -> bool:
    """Write `values` only if nobody changed the node since `node` was read."""
    result = conn.execute(
        update(nodes)
        .where(nodes.c.id == node.id, nodes.c.row_version == node.row_version)
        .values(row_version=node.row_version + 1, updated_at=now, **values)
    )
    return result.rowcount == 1


# 'Deleted' written into the statement, not bound: SQLite then sees at planning that the
# partial indexes on live nodes (ix_nodes_live_id, uq_nodes_live_hostname) cover the condition
_LIVE = nodes.c.status != literal(NodeStatus.DELETED.value, literal_execute=True)


def _where(flt: NodeFilter, *, walk: bool = False) -> list[Any]:
    clauses: list[Any] = []
    if flt.status is None:
        clauses.append(_LIVE)
    else:
        clauses.append(nodes.c.status == flt.status.value)
    if flt.hostname:  # exact: ix_nodes_search_cover
        clauses.append(nodes.c.hostname == flt.hostname)
    if flt.maintenance is not None:
        in_maintenance = nodes.c.maintenance_since.is_not(None)
        clauses.append(in_maintenance if flt.maintenance else ~in_maintenance)
    if flt.role:
        clauses.append(
            exists().where(
                and_(role_assignments.c.node_id == nodes.c.id, role_assignments.c.role == flt.role)
            )
        )
    if flt.q:  # hostname substring, IP prefix or NodeID, through the indexes (node_search.py)
        clauses.append(node_search.search(flt.q, walk=walk))
    return clauses


# A role filter's page, sorted by NodeID, is read from the role's index (role, node_id) in its
# order: it stops after a page. Sorted by another key, a role with few nodes (ROLE_SORTED_MAX)
# has them all read from the role's index and sorted. A common role walks the sort key's index
# instead, checking each node's role, as far as the page would reach if the role's nodes were
# spread evenly along the key, times WALK_MARGIN, plus WALK_SLACK entries (a sixth of 50,000
# nodes: ~800 entries for the first page). A walk that ends before it found the page -- the
# role's nodes cluster at the key's far end, e.g. host names that begin with the role, sorted
# the other way -- is followed by the role's nodes read and sorted. Sorting every node of a
# common role was the rule before: 50-190 ms at 50,000 nodes for a role of 8,333 sorted by
# status, address, creation or last seen, which the walk finds within ~150 index entries
# (docs/benchmarks.md, "The listing's fourth pass").
ROLE_SORTED_MAX = 1_000
WALK_MARGIN = 4
WALK_SLACK = 200


def _role_sorted(flt: NodeFilter, total: node_search.Total) -> bool:
    """The page is read from the role's index: by NodeID, or few enough to sort them all."""
    if not flt.role or flt.q:
        return False
    return flt.sort.removeprefix("-") == "id" or (total.exact and total.count <= ROLE_SORTED_MAX)


def _role_walk(
    conn: Connection,
    flt: NodeFilter,
    total: node_search.Total,
    by_status: Mapping[str, int] | None = None,
) -> list[int] | None:
    """A common role's page along the sort key's index, walking at most the budget's entries:
    its NodeIDs, or None when the walk ended before the page did (see ROLE_SORTED_MAX)."""
    key = flt.sort.removeprefix("-")
    others = dataclasses.replace(flt, role=None)  # the nodes walked: the filter but its role
    where = _where(others)
    # kept counts (no scan), or capped at COUNT_CAP with another filter (maintenance): the
    # reach is then an estimate, and a walk that falls short only ends in the role's sort
    walking = node_search.total(conn, others, where, by_status=by_status).count
    reach = (flt.offset + flt.limit) * walking // max(total.count, 1)
    budget = int(WALK_MARGIN * reach) + WALK_SLACK
    sort_columns = _sort_columns(key)
    walked = select(nodes.c.id, sort_columns[0].label("key"))
    if key == "last_seen":
        walked = walked.select_from(nodes_with_presence)
    walked_page = (
        walked.where(*where)
        .order_by(*_in_order(sort_columns, flt.sort))
        .limit(budget)
        .subquery("walked")
    )
    carries = exists().where(
        role_assignments.c.node_id == walked_page.c.id, role_assignments.c.role == flt.role
    )
    order = _in_order((walked_page.c.key, walked_page.c.id), flt.sort)
    statement = select(walked_page.c.id).where(carries).order_by(*order)
    ids = [int(i) for i in conn.execute(statement.limit(flt.limit).offset(flt.offset)).scalars()]
    if len(ids) == flt.limit or (total.exact and flt.offset + len(ids) >= total.count):
        return ids  # a whole page, or the last one (known only from an exact count)
    return None


def _presence_walk(
    conn: Connection,
    flt: NodeFilter,
    total: node_search.Total,
    where: list[Any],
    by_status: Mapping[str, int] | None = None,
) -> list[int] | None:
    """PostgreSQL, sorted by the last-seen time: the page from the first presence rows in that
    order (every node's, Deleted ones too), as many as the page would reach if the matches were
    spread evenly along it, times WALK_MARGIN, plus WALK_SLACK; each checked against the filter.
    None when the walk ended before the page did, or would read them all anyway.

    The order's index is the presence rows' (`ix_node_presence_last_seen`, migration 0016),
    the filter's columns are the nodes': the planner joined every matching node with its
    presence row and sorted them, a hash join of 47,500 nodes with 50,000 presence rows, 22-44
    ms at 50,000 nodes, for a page the first ~900 presence rows hold. The walk reads those
    entries of the index (0.2 ms; a top-N sort of every presence row before 0016: 6.5 ms)."""
    if total.exact and total.count <= flt.offset:
        return []
    # every node, Deleted ones too: from the counters the caller read, else the kept counts
    everyone = sum((by_status or node_search.status_counts(conn)).values())
    reach = (flt.offset + flt.limit) * everyone // max(total.count, 1)
    # a capped count ("more than 1,000") is below the true one: its reach is already past the
    # expected one (12 times for a quarter of 50,000 nodes), no margin on top
    budget = int((WALK_MARGIN if total.exact else 1) * reach) + WALK_SLACK
    if budget >= everyone:
        return None
    keys = (node_presence.c.last_seen, node_presence.c.node_id)
    walked = select(*keys).order_by(*_in_order(keys, flt.sort)).limit(budget).subquery("walked")
    order = _in_order((walked.c.last_seen, walked.c.node_id), flt.sort)
    statement = (
        select(walked.c.node_id)
        .select_from(walked.join(nodes, nodes.c.id == walked.c.node_id))
        .where(*where)
        .order_by(*order)
        .limit(flt.limit)
        .offset(flt.offset)
    )
    ids = [int(i) for i in conn.execute(statement).scalars()]
    if len(ids) == flt.limit or (total.exact and flt.offset + len(ids) >= total.count):
        return ids  # a whole page, or the last one
    return None


def _carrying(flt: NodeFilter) -> Any:
    """The NodeIDs of the role's nodes, from the role's index."""
    return select(role_assignments.c.node_id).where(role_assignments.c.role == flt.role)


def _live_by_hostname(flt: NodeFilter) -> bool:
    """Every live node of a role, sorted by host name, nothing else filtered: the page is read
    from the role's host-name index (`ix_role_assignments_role_hostname`, migration 0019: each
    assignment carries its node's host name), in order, each node's status checked through its
    primary key, whatever the role's size; the budgeted walk (`_role_walk`) is not tried.
    Host names that begin with the role cluster its nodes at one end of the nodes' own
    host-name index: `que` sorted by -hostname walked the 31,668 nodes that come first, with
    the role's NodeIDs held in memory (before 0019): 7.2 ms a page through the store at 50,000
    nodes on PostgreSQL, 7.6 ms on SQLite; from the role's index 2.8 and 1.5 ms
    (docs/benchmarks.md, "The listing's twelfth pass"). A live host name is unique: (host name,
    NodeID) is the order the other paths give."""
    plain = dataclasses.replace(flt, role=None, sort="hostname", limit=1, offset=0)
    return (
        bool(flt.role)
        and flt.sort.removeprefix("-") == "hostname"
        and plain == NodeFilter(sort="hostname", limit=1)
    )


def _role_driven(
    flt: NodeFilter, *, by_hostname: bool
) -> tuple[Any, list[Any], list[ColumnElement[Any]] | None]:
    """The page's NodeIDs read from the role's assignments: (the SELECT without WHERE, the
    WHERE, the columns to sort by if not the sort key's own). Sorted by NodeID: a join that
    PostgreSQL walks in the role index's order and stops after a page. Live nodes by host name:
    along the role's host-name index (`_live_by_hostname`). Otherwise the role's NodeIDs are a
    subquery PostgreSQL cannot flatten (OFFSET 0); flattened, the planner walked the sort key's
    index and probed each node's role, expecting the role's nodes spread along it -- 31,694
    probes for a page of `que` sorted by -hostname (139 ms at 50,000 nodes)."""
    where = _where(dataclasses.replace(flt, role=None))
    joined = role_assignments.join(nodes, nodes.c.id == role_assignments.c.node_id)
    if flt.sort.removeprefix("-") == "id":
        return (
            select(nodes.c.id).select_from(joined),
            [*where, role_assignments.c.role == flt.role],
            [role_assignments.c.node_id],
        )
    if by_hostname:
        query = select(role_assignments.c.node_id).select_from(joined)
        # named for SQLite, whose choice between the role's two indexes follows its statistics
        query = query.with_hint(
            role_assignments, "INDEXED BY ix_role_assignments_role_hostname", "sqlite"
        )
        order: list[ColumnElement[Any]] = [role_assignments.c.hostname, role_assignments.c.node_id]
        return query, [*where, role_assignments.c.role == flt.role], order
    carrying = _carrying(flt).offset(0).subquery("carrying")
    held = carrying.join(nodes, nodes.c.id == carrying.c.node_id)
    return select(nodes.c.id).select_from(held), where, None


# The listing as it opens (every live node by NodeID) on SQLite: from ix_nodes_live_id alone.
# SQLite's planner prices a row by its declared columns, not its ~8 KiB of reported
# components, and prefers the table itself: a deep page (offset 24,975) then reads 25,000 rows
# (15-22 ms at 50,000 nodes) instead of 25,000 index entries (1 ms).
_SQLITE_LIVE_BY_ID = {
    False: text(
        "SELECT id FROM nodes INDEXED BY ix_nodes_live_id WHERE status != 'Deleted' "
        "ORDER BY id ASC LIMIT :limit OFFSET :offset"
    ),
    True: text(
        "SELECT id FROM nodes INDEXED BY ix_nodes_live_id WHERE status != 'Deleted' "
        "ORDER BY id DESC LIMIT :limit OFFSET :offset"
    ),
}


def _all_live_by_id(flt: NodeFilter) -> bool:
    """Every live node, by NodeID in either direction (any other sort is not this path)."""
    if flt.sort.removeprefix("-") != "id":
        return False
    plain = dataclasses.replace(flt, sort="id", limit=1, offset=0)
    return plain == NodeFilter(limit=1)


def list_page(
    conn: Connection, flt: NodeFilter, *, by_status: Mapping[str, int] | None = None
) -> Page[Node]:
    """One page of the listing. `by_status`: the nodes per status, already read in this
    transaction (the listing's counters), from which a plain listing's total is taken. A
    search's statements are planned for their values from its total on
    (`node_search.custom_plans`)."""
    where = _where(flt)
    total = node_search.total(conn, flt, where, by_status=by_status)
    if flt.q and not total.exact:  # many matches: along the sort's index, stopping early
        where = _where(flt, walk=True)
    key = flt.sort.removeprefix("-")
    # ties in the key's direction too, so that one index, (key, id), serves both directions
    columns = _sort_columns(key)
    # the page's NodeIDs first, then their rows: a sort or a skipped offset moves NodeIDs (and
    # the sort key, often from an index alone), never the wide rows
    query = select(nodes.c.id)
    walked = None
    if key == "last_seen" and conn.dialect.name == "postgresql":
        walked = _presence_walk(conn, flt, total, where, by_status)
    elif key == "id":  # SQLite, a host name alone: from the FTS5 index in NodeID order
        walked = node_search.hostname_page(conn, flt)
    by_role = bool(flt.role) and not flt.q  # a search checks the role of each match instead
    common_role = by_role and not _role_sorted(flt, total)
    by_hostname = by_role and _live_by_hostname(flt)
    if walked is None and common_role and not by_hostname:
        walked = (
            []
            if total.exact and total.count <= flt.offset
            else _role_walk(conn, flt, total, by_status)
        )
    if walked is None and by_role:
        query, where, role_columns = _role_driven(flt, by_hostname=by_hostname)
        columns = role_columns or columns
    descending = flt.sort.startswith("-")
    order = _in_order(columns, flt.sort)
    if key == "last_seen":  # the presence row beside each node (one each)
        query = query.join(node_presence, node_presence.c.node_id == nodes.c.id)
    statement: Any = query.where(*where).order_by(*order).limit(flt.limit).offset(flt.offset)
    if total.exact:  # few matches: read them all through the search's index and sort them
        statement = node_search.from_cover(statement, flt)
    params = {}
    if conn.dialect.name == "sqlite" and _all_live_by_id(flt):
        statement = _SQLITE_LIVE_BY_ID[descending]
        params = {"limit": flt.limit, "offset": flt.offset}
    if walked is not None:
        ids = walked
    elif total.exact and total.count <= flt.offset:
        ids = []  # nothing on this page (no match at all, or a page past the last)
    else:
        with node_search.page_plan(conn, flt, total):
            ids = list(conn.execute(statement, params).scalars())
    found = _read(conn, _LISTING_COLUMNS, nodes.c.id.in_(ids)) if ids else {}
    items = [found[i] for i in ids]
    if not total.exact and items and len(items) < flt.limit:  # the last page: all are known
        total = node_search.Total(flt.offset + len(items))
    return Page(items=items, total=total.count, total_exact=total.exact)


def matching_ids(conn: Connection, flt: NodeFilter, *, at_most: int) -> tuple[list[int], int]:
    """The ids of the nodes `flt` matches (sort and page ignored), in id order, at most
    `at_most` of them; and how many it matches in all."""
    node_search.custom_plans(conn, flt)
    where = _where(flt)
    total = conn.execute(select(func.count()).select_from(nodes).where(*where)).scalar_one()
    ids = conn.execute(select(nodes.c.id).where(*where).order_by(nodes.c.id).limit(at_most))
    return [int(i) for i in ids.scalars()], int(total)


def other_live(
    conn: Connection, *, besides: int, first: int, role: str | None = None
) -> tuple[list[tuple[str, str]], int]:
    """The first live nodes other than `besides` (carrying `role`), as (hostname, status) in
    NodeID order, and how many there are in all: through the indexes, whatever the fleet's size."""
    flt = NodeFilter(role=role, limit=first)
    query = select(nodes.c.hostname, nodes.c.status).where(_LIVE, nodes.c.id != besides)
    if role is not None:  # from the role's index, in NodeID order: a rare role (ic) costs nothing
        query = query.select_from(
            role_assignments.join(nodes, nodes.c.id == role_assignments.c.node_id)
        ).where(role_assignments.c.role == role)
    rows = conn.execute(query.order_by(nodes.c.id).limit(first)).all()
    if len(rows) < first:
        return [(r.hostname, r.status) for r in rows], len(rows)
    # the live total (with the role) from the kept counts, less this node if it is one of them
    besides_counted = conn.execute(
        select(func.count()).select_from(nodes).where(*_where(flt), nodes.c.id == besides)
    ).scalar_one()
    total = node_search.total(conn, flt, _where(flt)).count - besides_counted
    return [(r.hostname, r.status) for r in rows], total


def existing_ids(conn: Connection, node_ids: Iterable[int]) -> set[int]:
    """Which of these NodeIDs name a node (Deleted ones too)."""
    wanted = sorted({i for i in node_ids if 0 < i < 2**31})
    found: set[int] = set()
    for start in range(0, len(wanted), 1000):  # bounded IN lists
        chunk = wanted[start : start + 1000]
        found.update(
            int(i) for i in conn.execute(select(nodes.c.id).where(nodes.c.id.in_(chunk))).scalars()
        )
    return found


def all_live(conn: Connection) -> list[Node]:
    rows = conn.execute(
        _node_select(_COLUMNS)
        .where(nodes.c.status != NodeStatus.DELETED.value)
        .order_by(nodes.c.id)
    ).all()
    roles = roles_of(conn, [row.id for row in rows])
    return [_node(row._mapping, roles[row.id]) for row in rows]


def with_pending_operation(conn: Connection) -> list[Node]:
    ids = conn.execute(select(nodes.c.id).where(nodes.c.pending_operation.is_not(None))).scalars()
    return [node for node_id in list(ids) if (node := get(conn, node_id)) is not None]


def find_by_agent_token(conn: Connection, digest: str) -> tuple[int, NodeStatus] | None:
    row = conn.execute(
        select(nodes.c.id, nodes.c.status).where(nodes.c.agent_token_digest == digest)
    ).first()
    return None if row is None else (row.id, NodeStatus(row.status))


def set_agent_token(conn: Connection, node_id: int, digest: str | None) -> None:
    conn.execute(update(nodes).where(nodes.c.id == node_id).values(agent_token_digest=digest))


def set_inventory(
    conn: Connection,
    node_id: int,
    *,
    now: datetime,
    os: str,
    kernel: str,
    container_id: str | None,
    agent_version: str,
    components: list[dict[str, str]],
    inventory_digest: str,
) -> None:
    """What the agent reports, with the digest of the report (`nodes.inventory_digest`). Not a
    compare-and-set: it never races an administrator's rule."""
    conn.execute(
        update(nodes)
        .where(nodes.c.id == node_id)
        .values(
            os=os,
            kernel=kernel,
            container_id=container_id,
            agent_version=agent_version,
            components=components,
            inventory_digest=inventory_digest,
            updated_at=now,
        )
    )


# the presence rows, not the nodes' (tables.py, `node_presence`: narrow rows a beat rewrites)
# SQLite: one statement over a JSON array of [NodeID, time] pairs. The batch of one UPDATE a
# node it replaces held the interpreter's lock while it bound each node's values: a flush of
# 5,000 heartbeats 56 ms, the other threads (the requests) held up to 41 ms at a time; as one
# statement 33 ms and 10 ms (the lock is let go while SQLite runs it). SQLite 3.33 (UPDATE
# FROM) with JSON1, both in the SQLite Python 3.11 ships with on Debian 12 (3.40).
_TOUCH_MANY_SQLITE = text(
    "UPDATE node_presence SET last_seen = json_extract(v.value, '$[1]') "
    "FROM json_each(:seen) AS v WHERE node_presence.node_id = json_extract(v.value, '$[0]')"
)


# PostgreSQL: one statement over two arrays. At 12,500 channels per process a batch of one
# UPDATE a node spent 44 % of a worker's interpreter time building one parameter dict per node
# and having SQLAlchemy process it (py-spy, 50,000 agents on `serve --workers 4`). The arrays
# go in the binary format (psycopg's `%b`): the driver's text adaptation of 5,000 times,
# element by element, held the interpreter's lock for ~26 ms a flush, and text literals built
# here (`isoformat` a time) ~4.5 ms; the driver's binary dumpers take ~0.8 ms an array. The
# statement goes to the driver as it is (`exec_driver_sql`): text() would write `%(name)s`.
_TOUCH_MANY_PG = (
    "UPDATE node_presence SET last_seen = v.seen "
    "FROM unnest(%b::bigint[], %b::timestamptz[]) AS v(id, seen) "
    "WHERE node_presence.node_id = v.id"
)


def touch_last_seen(conn: Connection, seen: dict[int, datetime]) -> None:
    """Many heartbeats in one statement (both databases). In node id order: two controllers
    flushing overlapping nodes (an agent that moved between them) lock the rows in the same
    order."""
    if not seen:
        return
    ids = sorted(seen)
    if conn.dialect.name == "postgresql":
        times = [seen[i] for i in ids]
        if any(t.tzinfo is None for t in times):  # as UTCDateTime refuses one
            raise ValueError("naive datetime given to a UTC column")
        # each row found through the primary key: left to itself the planner hashes the whole
        # table to join a tenth of it (50,000 rows, 5,000 beats: 44.6 against 36.4 ms executing)
        with methods_off(conn, "hashjoin", "mergejoin"):
            conn.exec_driver_sql(_TOUCH_MANY_PG, (ids, times))
    else:
        pairs = [[i, sqlite_text(seen[i])] for i in ids]
        conn.execute(_TOUCH_MANY_SQLITE, {"seen": json.dumps(pairs)})


def vacuum_presence(engine: Engine) -> bool:
    """PostgreSQL: VACUUM `node_presence`, outside a transaction as it must be. Each flush's
    update of a row writes an entry of `ix_node_presence_last_seen` (migration 0016); the old
    versions and their entries are dead until a vacuum, and a server may run without
    autovacuum. False on SQLite, which updates a row and its index entries in place, and when
    the role connected is not the table's owner (PostgreSQL would skip it with a warning only
    its log shows)."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not owns(conn, "node_presence"):
            return False
        # SKIP_LOCKED: not queued behind an autovacuum or an ANALYZE of the table (the next
        # round comes in 30 s); TRUNCATE false: never the brief exclusive lock that gives
        # empty pages at the table's end back, which would stop the listing's reads
        conn.exec_driver_sql("VACUUM (SKIP_LOCKED, TRUNCATE false) node_presence")
    return True


def ids_matching(conn: Connection, flt: NodeFilter, *, limit: int) -> list[int]:
    """Every node id the listing's filter matches (no page), in id order, at most `limit`."""
    node_search.custom_plans(conn, flt)
    rows = conn.execute(
        select(nodes.c.id).where(*_where(flt)).order_by(nodes.c.id).limit(limit)
    ).scalars()
    return list(rows)


def brief(conn: Connection, node_ids: Iterable[int]) -> dict[int, tuple[str, str, str | None]]:
    """Node id -> (hostname, status, maintenance reason or None when not in maintenance)."""
    ids = list(node_ids)
    if not ids:
        return {}
    rows = conn.execute(
        select(
            nodes.c.id,
            nodes.c.hostname,
            nodes.c.status,
            nodes.c.maintenance_since,
            nodes.c.maintenance_reason,
        ).where(nodes.c.id.in_(ids))
    )
    return {
        r.id: (r.hostname, r.status, (r.maintenance_reason or "") if r.maintenance_since else None)
        for r in rows
    }
