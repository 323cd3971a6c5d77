"""The Node Listing's search clause and totals, served by indexes on both databases.

`q` matches a node when it is a substring of the hostname, a prefix of the private or public
IP, or (digits only) the NodeID; any case (stored hostnames and IPs are lower case, `q` is
lowered). One clause, `search(q)`, compiles differently per database (migration 0008):

- PostgreSQL: `hostname LIKE '%q%'` is served by the pg_trgm GIN index, the IP prefixes by
  `varchar_pattern_ops` B-trees. Fewer than 3 characters give pg_trgm nothing to look up; the
  planner then scans `ix_nodes_search_cover` (index-only where the visibility map allows) or
  the table.
- SQLite: the hostname part asks the FTS5 trigram index (`nodes_search`) for the rows, the IP
  prefixes are `GLOB 'q*'` ranges on their B-trees. A `q` of fewer than 3 characters has no
  trigram: the hostname part is then a `LIKE` that SQLite evaluates over the covering index
  `ix_nodes_search_cover` (hostname, status, both IPs) alone, never the wide rows: a scan of
  about 60 bytes a node, bounded by the fleet's size (docs/benchmarks.md has its cost).

The trigram index folds case (Unicode-wide) where `LIKE` folds ASCII only: for a `q` that is
not ASCII the index only proposes rows and the `LIKE` decides, so results are identical.

Totals: with no filter but the status, the listing's total is the sum of `node_counts` (a few
rows kept by triggers in the writing transaction); otherwise it is counted through the indexes
(exact; a search matching thousands of nodes costs a visit to each of them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    and_,
    column,
    false,
    func,
    or_,
    select,
    table,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.numbers import is_whole
from voipcloud.domain.statuses import NodeStatus
from voipcloud.store.tables import node_counts, nodes

TRIGRAM = 3
_FTS = table("nodes_search", column("rowid"), column("nodes_search"))


class _PerDialect(ColumnElement[bool]):
    """A condition written one way for SQLite and another for every other database."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # no "= 1" after it where booleans are integers (SQLite)
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's own declaration)
        ("sqlite", InternalTraversal.dp_clauseelement),
        ("other", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, *, sqlite: ColumnElement[bool], other: ColumnElement[bool]) -> None:
        self.sqlite = sqlite
        self.other = other


@compiles(_PerDialect)
def _compile_other(element: _PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return "(" + compiler.process(element.other, **kw) + ")"


@compiles(_PerDialect, "sqlite")
def _compile_sqlite(element: _PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return "(" + compiler.process(element.sqlite, **kw) + ")"


def _glob_literal(text: str) -> str:
    """`text` as a GLOB pattern matching itself (GLOB is case-sensitive, like the stored IPs)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _fts_phrase(text: str) -> str:
    """`text` as one FTS5 phrase: its trigrams, in a row."""
    return '"' + text.replace('"', '""') + '"'


def search(q: str) -> ColumnElement[bool]:
    """Nodes that `q` finds (q already stripped): see the module docstring."""
    q = q.lower()
    hostname_like = nodes.c.hostname.contains(q, autoescape=True)
    private_prefix = nodes.c.private_ip.startswith(q, autoescape=True)
    public_prefix = nodes.c.public_ip.startswith(q, autoescape=True)
    by_id = [nodes.c.id == int(q)] if is_whole(q, max_digits=9) else []

    if len(q) >= TRIGRAM:
        in_index = nodes.c.id.in_(
            select(_FTS.c.rowid).where(_FTS.c.nodes_search.op("MATCH")(_fts_phrase(q)))
        )
        # ASCII: the index's answer is the LIKE's answer; otherwise the LIKE decides
        sqlite_hostname = in_index if q.isascii() else and_(in_index, hostname_like)
    else:
        sqlite_hostname = hostname_like
    pattern = _glob_literal(q) + "*"
    sqlite_ips = [
        and_(nodes.c.private_ip.op("GLOB")(pattern), private_prefix),
        and_(nodes.c.public_ip.op("GLOB")(pattern), public_prefix),
    ]
    if not q.isascii():  # stored IPs are ASCII: nothing to look up
        sqlite_ips = [false()]
    return _PerDialect(
        sqlite=or_(sqlite_hostname, *sqlite_ips, *by_id),
        other=or_(hostname_like, private_prefix, public_prefix, *by_id),
    )


def _counted_by_status(flt: NodeFilter) -> bool:
    """True when nothing but the status (and paging) narrows the listing."""
    plain = dataclasses.replace(flt, status=None, sort="id", limit=1, offset=0)
    return plain == NodeFilter(limit=1)


def total(conn: Connection, flt: NodeFilter, where: list[Any]) -> int:
    """The listing's total for `flt`, whose conditions are `where`."""
    if _counted_by_status(flt):
        query = select(func.coalesce(func.sum(node_counts.c.delta), 0))
        if flt.status is None:
            query = query.where(node_counts.c.status != NodeStatus.DELETED.value)
        else:
            query = query.where(node_counts.c.status == flt.status.value)
        return int(conn.execute(query).scalar_one())
    return int(conn.execute(select(func.count()).select_from(nodes).where(*where)).scalar_one())


def status_counts(conn: Connection) -> dict[str, int]:
    """Nodes per status (Deleted included), from the counts the triggers keep."""
    rows = conn.execute(
        select(node_counts.c.status, func.sum(node_counts.c.delta)).group_by(node_counts.c.status)
    )
    return {status: int(count) for status, count in rows if count}
