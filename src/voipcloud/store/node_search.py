"""The Node Listing's search clause and totals, served by indexes on both databases.

`q` matches a node when it is a substring of the hostname, a prefix of the private or public
IP, or (digits only) the NodeID; any case (stored hostnames and IPs are lower case, `q` is
lowered). One clause, `search(q)`, compiles differently per database (migration 0008):

- PostgreSQL: `hostname LIKE '%q%'` is served by the pg_trgm GIN index, the IP prefixes by
  `varchar_pattern_ops` B-trees. 2 characters give pg_trgm nothing to look up: the GIN index
  of the host names' pairs of adjacent characters (`hostname_pairs`, migration 0018) proposes
  the rows instead. A single character has no index: the planner scans the table, whose rows
  hold the host names and IPs (migration 0013: they were out of line, a TOAST lookup per
  node), and a broad one stops early at the cap.
- SQLite: the hostname part asks the FTS5 trigram index (`nodes_search`) for the rows, or
  for a `q` of 2 characters the table of the host names' pairs (`node_pairs`, migration
  0018); the IP prefixes are `GLOB 'q*'` ranges on their B-trees. A single character has
  neither: the hostname part is then a `LIKE`, and the count (and the page of few matches)
  read the covering index `ix_nodes_search_cover` (hostname, status, both IPs) by name
  (`from_cover`), never the wide rows: a scan of about 60 bytes a node, bounded by the fleet's
  size (docs/benchmarks.md has its cost).
- A `q` that cannot begin a stored IP address (a character other than hex digits, dots and
  colons before any `%`) has no IP terms: nothing to look up, nor to test on each node.

The trigram index folds case (Unicode-wide) where `LIKE` folds ASCII only: for a `q` that is
not ASCII the index only proposes rows and the `LIKE` decides, so results are identical.

Totals: with no filter but the status and the role, the listing's total is the sum of
`node_counts` or `node_role_counts` (a few rows kept by triggers in the writing transaction:
exact, whatever the fleet's size). Otherwise (a search, maintenance, an exact hostname) it is
counted through the indexes up to `COUNT_CAP` matches and no further: a filter matching more
answers "more than 1,000" (`Total.exact` False; the API's `total_exact`, the page's wording), so
that a broad search costs at most about a thousand visits instead of one per match. On SQLite
a search of every live node by host name alone streams the FTS5 index's matches for that
count (`_hostname_alone`).

The page: a filter matching more than `COUNT_CAP` nodes is common enough that walking the sort's
index in order and checking each node stops early (at 2 % or more of 50,000 nodes, a page of 25
is found within about 1,250 nodes); so on SQLite its search terms are then written so that no
index serves them (`+column`) and the planner walks the sort's index instead of fetching every
match from the search's indexes and sorting them all. Fewer matches: the search's indexes give
them and at most `COUNT_CAP` are sorted. On PostgreSQL a search's count, and a page of few
matches, are read through the index bitmaps (`page_plan`, `_bitmap_only`); a page of many is
planned freely (it walks the sort key's index).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Select,
    Text,
    and_,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.numbers import is_whole
from voipcloud.domain.statuses import NodeStatus
from voipcloud.store.planner import methods_off, off_for_one
from voipcloud.store.tables import node_counts, node_role_counts, nodes

TRIGRAM = 3
PAIR = 2
# PostgreSQL: the host name's pairs of adjacent characters, generated and indexed (migration
# 0018; not declared in store/tables.py: SQLite has no arrays)
_PAIRS = literal_column("nodes.hostname_pairs", ARRAY(Text))
# SQLite: the same pairs, a row each, in a table kept by triggers (migration 0018)
_SQLITE_PAIRS = table("node_pairs", column("pair"), column("node_id"))
COVER_INDEX = "ix_nodes_search_cover"  # host name, status, both IPs (store/tables.py)
# a filtered total counts this many matches at most; beyond, "more than COUNT_CAP"
COUNT_CAP = 1000
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


class _Unindexed(ColumnElement[Any]):
    """`+column` on SQLite: the same value, which no index serves (the planner's documented
    way to keep it from driving a query from that column's index); the column elsewhere."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_Unindexed)
def _compile_unindexed_other(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_Unindexed, "sqlite")
def _compile_unindexed_sqlite(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


@functools.lru_cache(maxsize=512)
def search(q: str, *, walk: bool = False) -> ColumnElement[bool]:
    """Nodes that `q` finds (q already stripped): see the module docstring. `walk`: a check
    of each node along another index (SQLite: no index serves these terms). Built once for
    each `q` and kept (a clause is immutable): a listing polls its search every 2 s, and
    building both databases' forms each time was 0.5-0.65 ms of a listing of `q=42` or
    `q=fra1` at 50,000 nodes (SQLite, measured in one process, alternating)."""
    q = q.lower()
    hostname_like = nodes.c.hostname.contains(q, autoescape=True)
    private_prefix = nodes.c.private_ip.startswith(q, autoescape=True)
    public_prefix = nodes.c.public_ip.startswith(q, autoescape=True)
    by_id = [nodes.c.id == int(q)] if is_whole(q, max_digits=9) else []

    node_id = _Unindexed(nodes.c.id) if walk else nodes.c.id
    private_ip = _Unindexed(nodes.c.private_ip) if walk else nodes.c.private_ip
    public_ip = _Unindexed(nodes.c.public_ip) if walk else nodes.c.public_ip
    sqlite_hostname = hostname_like  # a single character: no index
    if len(q) >= PAIR:  # the trigrams' FTS5 index, or the pairs' table
        in_index = node_id.in_(
            select(_FTS.c.rowid).where(_FTS.c.nodes_search.op("MATCH")(_fts_phrase(q)))
            if len(q) >= TRIGRAM
            else select(_SQLITE_PAIRS.c.node_id).where(_SQLITE_PAIRS.c.pair == q)
        )
        # ASCII: the index's answer is the LIKE's answer; otherwise the LIKE decides
        sqlite_hostname = in_index if q.isascii() else and_(in_index, hostname_like)
    pattern = _glob_literal(q) + "*"
    sqlite_ips = [
        and_(private_ip.op("GLOB")(pattern), private_prefix),
        and_(public_ip.op("GLOB")(pattern), public_prefix),
    ]
    ips = [private_prefix, public_prefix]
    if not may_prefix_an_ip(q):  # no IP to look up, nor to test on each node of a scan
        sqlite_ips = ips = []
    sqlite_id = [node_id == int(q)] if by_id else []
    # a pair: the index of the host names' pairs proposes the rows (the LIKE first: the filter
    # that rechecks the rows an OR proposes stops there for those that do not match)
    hostname = and_(hostname_like, _PAIRS.contains([q])) if len(q) == PAIR else hostname_like
    return _PerDialect(
        sqlite=or_(sqlite_hostname, *sqlite_ips, *sqlite_id),
        other=or_(hostname, *ips, *by_id),
    )


_IP_CHARACTERS = frozenset("0123456789abcdef.:")


def may_prefix_an_ip(q: str) -> bool:
    """Whether `q` (lower case) can begin a stored IP address: those are as Python's
    `ipaddress` writes them (lower-case hex digits, dots and colons, then for a scoped IPv6
    address `%` and its zone, which may be anything)."""
    return _IP_CHARACTERS.issuperset(q.split("%", 1)[0])


@dataclass(frozen=True, slots=True)
class Total:
    """A listing's total: exact, or (`exact` False) more than `count` nodes match."""

    count: int
    exact: bool = True


def _kept_total(
    conn: Connection, flt: NodeFilter, by_status: Mapping[str, int] | None
) -> int | None:
    """The total from the kept counts when nothing but the status and the role (and the sort
    and paging) narrows the listing; None otherwise. Without a role, from `by_status` (the
    nodes per status, Deleted included, read in the caller's transaction) when given."""
    plain = dataclasses.replace(flt, status=None, role=None, sort="id", limit=1, offset=0)
    if plain != NodeFilter(limit=1):
        return None
    if flt.role is None and by_status is not None:
        if flt.status is not None:
            return by_status.get(flt.status.value, 0)
        return sum(n for s, n in by_status.items() if s != NodeStatus.DELETED.value)
    counts = node_counts if flt.role is None else node_role_counts
    query = select(func.coalesce(func.sum(counts.c.delta), 0))
    if flt.role is not None:
        query = query.where(node_role_counts.c.role == flt.role)
    if flt.status is None:
        query = query.where(counts.c.status != NodeStatus.DELETED.value)
    else:
        query = query.where(counts.c.status == flt.status.value)
    return int(conn.execute(query).scalar_one())


def total(
    conn: Connection,
    flt: NodeFilter,
    where: list[Any],
    *,
    by_status: Mapping[str, int] | None = None,
) -> Total:
    """The listing's total for `flt`, whose conditions are `where`: exact from the kept counts
    (`by_status`: the nodes per status already read in this transaction, see `_kept_total`),
    else counted through the indexes up to `COUNT_CAP` (see the module docstring)."""
    kept = _kept_total(conn, flt, by_status)
    if kept is not None:
        return Total(kept)
    hostname = _hostname_alone(flt) if conn.dialect.name == "sqlite" else None
    if hostname is not None:
        counted = conn.execute(
            _FTS_COUNT, {"phrase": _fts_phrase(hostname), "cap": COUNT_CAP + 1}
        ).scalar_one()
        return Total(min(counted, COUNT_CAP), exact=counted <= COUNT_CAP)
    matches = select(literal(1)).select_from(nodes).where(*where).limit(COUNT_CAP + 1)
    query = select(func.count()).select_from(from_cover(matches, flt).subquery())
    if conn.dialect.name == "postgresql" and _indexed_on_postgresql(flt.q):
        # the search's custom plans set with the planner's settings (one round trip), and the
        # settings back on by the count itself once it is planned (none more)
        on_again = off_for_one(conn, *_BITMAP_ONLY, also=_CUSTOM_PLANS)
        counted = int(conn.execute(query.add_columns(*on_again)).one()[0])
    else:
        custom_plans(conn, flt)
        counted = int(conn.execute(query).scalar_one())
    return Total(min(counted, COUNT_CAP), exact=counted <= COUNT_CAP)


# SQLite, a live node's host name searched, nothing else: the matches streamed from the FTS5
# index, each node looked up by its rowid (CROSS JOIN: in this order), stopping at the cap
_FTS_COUNT = text(
    "SELECT count(*) FROM (SELECT 1 FROM nodes_search CROSS JOIN nodes "
    "ON nodes.id = nodes_search.rowid WHERE nodes_search MATCH :phrase "
    "AND nodes.status != 'Deleted' LIMIT :cap)"
)


_FTS_PAGE = (
    "SELECT nodes.id FROM nodes_search CROSS JOIN nodes ON nodes.id = nodes_search.rowid "
    "WHERE nodes_search MATCH :phrase AND nodes.status != 'Deleted' "
    "ORDER BY nodes_search.rowid {direction} LIMIT :limit OFFSET :offset"
)


def hostname_page(conn: Connection, flt: NodeFilter) -> list[int] | None:
    """SQLite, a search by host name alone (`_hostname_alone`) sorted by NodeID: the page's
    NodeIDs from the FTS5 index in its own order (its rowid is the NodeID, either direction),
    each node looked up for its status, stopping after the page: 0.1 ms for `q=fra1` at 50,000
    nodes, against 2.1 ms reading the index's whole answer into an IN list beside the walk of
    the NodeIDs. None for any other search, sort or database."""
    hostname = _hostname_alone(flt) if conn.dialect.name == "sqlite" else None
    if hostname is None or flt.sort.removeprefix("-") != "id":
        return None
    statement = text(_FTS_PAGE.format(direction="DESC" if flt.sort.startswith("-") else "ASC"))
    found = conn.execute(
        statement,
        {"phrase": _fts_phrase(hostname), "limit": flt.limit, "offset": flt.offset},
    )
    return [int(node_id) for node_id in found.scalars()]


def _hostname_alone(flt: NodeFilter) -> str | None:
    """The search (lower case) when its only term is the host name's (at least a trigram,
    ASCII: the index's answer is the LIKE's; a character no IP address holds, so no IP or
    NodeID term), of every live node (no other filter); None otherwise. Its capped count
    streams the FTS5 index's matches and stops at the cap: 0.7 ms for `q=fra1` (12,502
    matches) at 50,000 nodes, against 3.1 ms when the index's whole answer was read into the
    IN list first. With a status the IN list stays faster (4.1 against 7.7 ms for `q=ams2`,
    StandBy: a sixth of the matches), as the stream visits six nodes for each one counted."""
    if not flt.q or len(flt.q) < TRIGRAM:
        return None
    q = flt.q.lower()
    if not q.isascii() or may_prefix_an_ip(q):
        return None
    plain = dataclasses.replace(flt, q=None, sort="id", limit=1, offset=0)
    return q if plain == NodeFilter(limit=1) else None


def from_cover(statement: Select[Any], flt: NodeFilter) -> Select[Any]:
    """SQLite, a `q` of 1 character (neither a trigram nor a pair): `statement` reads the
    nodes through `ix_nodes_search_cover` (host name, status, both IPs: ~60 bytes a node),
    never the ~8 KiB rows. The planner otherwise walks `ix_nodes_live_id` (the live nodes'
    partial index) and reads each row to evaluate the LIKE: 48-61 ms for a search of 2 rare
    characters at 50,000 nodes (before the pairs of migration 0018) against 6-27 ms through
    the index, and 222 ms for a page of few matches by NodeID, which it read from the table
    in rowid order."""
    if flt.q and len(flt.q) < PAIR:
        return statement.with_hint(nodes, f"INDEXED BY {COVER_INDEX}", "sqlite")
    return statement


def custom_plans(conn: Connection, flt: NodeFilter) -> None:
    """PostgreSQL, a search: the rest of this transaction plans each statement for its own
    values (`plan_cache_mode`). psycopg prepares a statement on the server from its fifth run,
    and PostgreSQL may then keep a generic plan, made without the values. A search's count is
    one statement whatever `q` is: after a few searches of 1-2 characters (a scan, whatever
    the values) the generic plan was that scan, and it served every search after them: a host
    name the trigram index finds in 1 ms took 300-400 ms at 50,000 nodes, a NodeID 160 ms
    (docs/benchmarks.md, "The listing's third pass"). Only here: the channels' statements,
    the same shape at every beat and hello, keep the plans PostgreSQL caches for them."""
    if conn.dialect.name == "postgresql" and flt.q:
        conn.exec_driver_sql(f"SELECT {_CUSTOM_PLANS}")


def page_plan(conn: Connection, flt: NodeFilter, counted: Total) -> AbstractContextManager[None]:
    """How the page of a search is read on PostgreSQL: through the search's index bitmaps when
    they propose few rows (an exact total: at most COUNT_CAP), or when the sort key's index is
    another table's (`last_seen`, after `_presence_walk` of store/nodes.py ended before the
    page: the matches, not every node, are then sorted); otherwise as the planner
    likes (many matches: it walks the sort key's index and stops early)."""
    indexed = _indexed_on_postgresql(flt.q)
    unindexed_key = flt.sort.removeprefix("-") == "last_seen"
    if conn.dialect.name == "postgresql" and indexed and (counted.exact or unindexed_key):
        return _bitmap_only(conn)
    return nullcontext()


def _indexed_on_postgresql(q: str | None) -> bool:
    """PostgreSQL: an index proposes the nodes whose host name holds `q` (the trigrams from 3
    characters, the pairs at 2); a single character has none, and is a scan."""
    return q is not None and len(q) >= PAIR


def _bitmap_only(conn: Connection) -> AbstractContextManager[None]:
    """PostgreSQL: the statements inside read a search's matches through its indexes' bitmaps
    (`_BITMAP_ONLY`)."""
    return methods_off(conn, *_BITMAP_ONLY)


# A search's capped count and its page of few matches through the indexes' bitmaps (trigram,
# IP prefixes, NodeID), visiting only the rows they propose. Given the LIMIT, the planner
# otherwise prefers a sequential or primary-key scan that it expects to stop early; but it
# prices the three LIKEs per row far below their cost and assumes the matches spread evenly,
# so that scan read ~37,000 rows for a search with 1,333 matches (180 ms against 13 ms at
# 50,000 nodes on a loaded machine).
_BITMAP_ONLY = ("seqscan", "indexscan")
_CUSTOM_PLANS = "set_config('plan_cache_mode', 'force_custom_plan', true)"


def status_counts(conn: Connection) -> dict[str, int]:
    """Nodes per status (Deleted included), from the counts the triggers keep."""
    rows = conn.execute(
        select(node_counts.c.status, func.sum(node_counts.c.delta)).group_by(node_counts.c.status)
    )
    return {status: int(count) for status, count in rows if count}
