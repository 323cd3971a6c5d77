"""The kept counts (`node_counts`, `node_role_counts`) on PostgreSQL: their compaction.

Triggers append a signed row to these tables in every transaction that adds, deletes or moves
a node between statuses (or assigns a role), and fold them into one row per key every 1,024th
row (migrations 0008, 0009, 0017). The listing's totals and status counters are sums over
them, read on every poll. On PostgreSQL each fold leaves the rows it deleted behind as dead
versions, and writes its own rows where there is room, often the table's end: without a vacuum
(a server may run without autovacuum) the table only grows, and every poll reads all of it
(after 50,000 nodes were added in one transaction: 300 pages, 1.3 ms a poll, for 217 rows).
`compact` keeps it to a page or two. SQLite needs none of this: a deleted row's page goes
back to the file's free list at once.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from voipcloud.store.database import owns

# each table, the key of its fold's advisory lock (the triggers' own: one fold at a time), and
# the columns its rows are summed by
_TABLES = (
    ("node_counts", 715008, "status"),
    ("node_role_counts", 715009, "role, status"),
)
_FOLD = (
    "WITH folded AS (DELETE FROM {table} RETURNING {keys}, delta) "
    "INSERT INTO {table} ({keys}, delta) SELECT {keys}, SUM(delta) FROM folded GROUP BY {keys}"
)


# a table to fold: a key with several rows (`_UNFOLDED`), or, when a vacuum follows, rows spread
# over more pages than a table of one row per key needs (`_SPREAD`: a fold writes them again
# where the vacuum before it found room, the table's first pages, so that the vacuum after it
# can give the rest back)
_UNFOLDED = "count(*) > count(DISTINCT ({keys}))"
_SPREAD = "pg_relation_size('{table}') > {pages} * current_setting('block_size')::bigint"
_TO_FOLD = "SELECT {wanted} FROM {table}"
FOLDED_PAGES = 2  # node_role_counts: at most 11 roles x 8 statuses, 88 rows, one page


def fold(conn: Connection, *, spread_over: int | None = None) -> int:
    """Every committed row of both tables folded into one per key, as the triggers fold them:
    one statement each, so that rows of transactions still open (invisible to it) are neither
    summed nor deleted. A table already one row per key, or that another transaction is
    folding at the moment, is left alone; with `spread_over`, one of a row per key on more
    pages than that (its rows at the end of pages a large import left) is written again, for
    the vacuum that follows to give those pages back. Returns how many tables were folded."""
    folded = 0
    for table, lock, keys in _TABLES:
        wanted = _UNFOLDED.format(keys=keys)
        if spread_over is not None:
            wanted += " OR " + _SPREAD.format(table=table, pages=spread_over)
        if not conn.exec_driver_sql(_TO_FOLD.format(wanted=wanted, table=table)).scalar():
            continue
        if conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({lock})").scalar():
            conn.exec_driver_sql(_FOLD.format(table=table, keys=keys))
            folded += 1
    return folded


def compact(engine: Engine) -> bool:
    """PostgreSQL: both tables vacuumed, folded, and vacuumed again, so that the dead versions
    are reclaimed and the folded rows written into the room the first vacuum found; the second
    vacuum then gives the pages after them back (SKIP_LOCKED: never queued behind another
    vacuum). Giving pages back takes the tables' exclusive lock for a moment, which holds up a
    listing's read and a node's change (their triggers write here); PostgreSQL gives it up as
    soon as another session waits for it (it checks every 20 ms), and the first vacuum does
    not take it at all. Both ask for the index cleanup (`INDEX_CLEANUP ON`): when dead row
    pointers sit on under 2 % of a table's pages, as after a fold in a table a large import
    grew (300 pages), PostgreSQL 14 and later skip it, keep the pointers, and with them every
    page from the first that holds one: the table never shrank. False on SQLite, and when the
    role connected does not own the tables: they are then folded but not vacuumed (PostgreSQL
    would skip them with a warning only its log shows)."""
    if engine.dialect.name != "postgresql":
        return False
    tables = ", ".join(table for table, _lock, _keys in _TABLES)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        owner = owns(conn, *(table for table, _lock, _keys in _TABLES))
        if owner:
            conn.exec_driver_sql(f"VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, TRUNCATE false) {tables}")
    with engine.begin() as conn:  # rows spread over pages moved only if a vacuum follows
        fold(conn, spread_over=FOLDED_PAGES if owner else None)
    if owner:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) {tables}")
    return owner
