"""PostgreSQL keeps the columns searches scan inside the node's row (migration 0013), and plans
a search's statements for their own values (store/node_search.py), however often they run.

Both were found at 50,000 nodes (docs/benchmarks.md, "The listing's third pass"): a host name
moved out of line cost a TOAST lookup per node in every scan (a 1-character search: 222 ms
instead of 15), and from a search's sixth run PostgreSQL used a generic plan that could not use
the trigram index (300 ms instead of 4). The tests measure what a scan reads and which plan a
repeated search gets, not time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Connection, event, insert, text

from voipcloud.domain.filters import NodeFilter
from voipcloud.store import node_search
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database, alembic_config
from voipcloud.store.tables import nodes

# PostgreSQL alone: the `database_url` fixture's PostgreSQL case only
pytestmark = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
COUNT = 300
NOW = datetime(2026, 12, 1, tzinfo=UTC)
# ~8 KiB of JSON, as a real agent's inventory: the row's large value, which must leave it
COMPONENTS = [{"name": f"package-{i:03d}", "version": f"1.{i}.0-1"} for i in range(200)]


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _fill(conn: Connection, first: int, count: int = COUNT, components: object = None) -> None:
    conn.execute(
        insert(nodes),
        [
            {
                "id": first + n,
                "hostname": f"sip-{first + n:05d}.fra1.voip.example",
                "private_ip": f"10.{n // 65536}.{n // 256 % 256}.{n % 256}",
                "status": "Online",
                "is_controller": False,
                "config_generation": 1,
                "components": COMPONENTS if components is None else components,
                "session_key_digest": f"{first + n:064x}",
                "agent_token_digest": f"{first + n:064x}",
                "os": "Debian GNU/Linux 12 (bookworm)",
                "kernel": "Linux 6.1.0-21-amd64",
                "inventory_digest": f"{first + n:064x}",
                "created_at": NOW,
                "updated_at": NOW,
                "row_version": 1,
            }
            for n in range(count)
        ],
    )


def _pages_read(conn: Connection, statement: str) -> tuple[int, int]:
    """Pages a statement read (buffers hit or read), and the pages of the nodes' heap."""
    conn.exec_driver_sql("ANALYZE nodes")
    plan = conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}")).scalar()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    read = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    heap = conn.exec_driver_sql("SELECT pg_relation_size('nodes') / 8192").scalar_one()
    return read, int(heap)


# the host names (a short search), the credentials (a sweep) and the OS (a hello) of every node
SCAN = (
    "SELECT count(*) FROM nodes WHERE hostname LIKE '%zq%' OR session_key_digest = 'x' "
    "OR agent_token_digest = 'x' OR inventory_digest = 'x' OR os = 'x'"
)


def test_a_scan_of_host_names_reads_the_heap_alone(db: Database) -> None:
    with db.engine.begin() as conn:
        _fill(conn, 1000)
    with db.engine.begin() as conn:
        read, heap = _pages_read(conn, SCAN)
        storage = dict(
            conn.exec_driver_sql(
                "SELECT attname, attstorage FROM pg_attribute WHERE attrelid = 'nodes'::regclass "
                "AND attname IN ('hostname', 'session_key_digest', 'components')"
            ).all()
        )
        toast = conn.exec_driver_sql(
            "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'nodes'"
        ).scalar_one()
    assert storage == {"hostname": "m", "session_key_digest": "m", "components": "x"}
    assert toast > 0  # the components did leave the rows
    assert read <= heap + 5, f"{read} pages read for a heap of {heap}"


def test_the_migration_moves_values_already_out_of_line_back(db: Database) -> None:
    config = alembic_config()
    with db.engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0012")
        conn.commit()
        _fill(conn, 5000)  # written by the old rule: host names and digests out of line
        conn.commit()
        before, heap_before = _pages_read(conn, SCAN)
        conn.commit()
        command.upgrade(config, "head")
        conn.commit()
        after, heap_after = _pages_read(conn, SCAN)
        conn.commit()
    assert before > 2 * COUNT, f"the old rule read {before} pages ({heap_before} of heap)"
    assert after <= heap_after + 5, f"{after} pages read for a heap of {heap_after}"
    with db.read() as conn:  # no value changed
        names = conn.execute(text("SELECT hostname FROM nodes WHERE id >= 5000 ORDER BY id"))
        expected = [f"sip-{n:05d}.fra1.voip.example" for n in range(5000, 5300)]
        assert list(names.scalars()) == expected


def _plan_after_short_searches(conn: Connection, q: str) -> str:
    """The plan of the listing's capped count of a search, prepared on the server as psycopg
    does from a statement's fifth run, for `q` after eight searches of 2 characters (which this
    statement, without the pairs of migration 0018, reads by a scan). A search of 3 or more
    characters is counted with scans disabled, as `node_search._bitmap_only` does, so that its
    index bitmaps are used."""
    conn.exec_driver_sql(
        "PREPARE search(varchar, varchar) AS SELECT count(*) FROM (SELECT 1 FROM nodes "
        "WHERE status != 'Deleted' AND (hostname LIKE $1 OR private_ip LIKE $2) LIMIT 1001) s"
    )
    try:
        for _ in range(8):
            conn.execute(text("EXECUTE search('%zq%', 'zq%')")).scalar()
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_indexscan = off")
        plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) EXECUTE search('%{q}%', '{q}%')")).scalar()
    finally:
        conn.exec_driver_sql("DEALLOCATE search")
        conn.exec_driver_sql("RESET enable_seqscan")
        conn.exec_driver_sql("RESET enable_indexscan")
    return json.dumps(plan)


def test_a_search_after_short_ones_still_uses_the_trigram_index(db: Database) -> None:
    with db.engine.begin() as conn:  # enough nodes for an index to beat a scan
        _fill(conn, 10_000, count=20_000, components=[])
        conn.exec_driver_sql("ANALYZE nodes")
    with db.engine.connect() as conn:
        with conn.begin():  # what the listing does before a search
            node_search.custom_plans(conn, NodeFilter(q="sip-1234"))
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
            assert "ix_nodes_hostname_trgm" in _plan_after_short_searches(conn, "sip-1234")
        with conn.begin():  # the setting was the transaction's; PostgreSQL's default: the cause
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "auto"
            assert "ix_nodes_hostname_trgm" not in _plan_after_short_searches(conn, "sip-1234")
    with db.read() as conn:  # the listing itself, short searches first, then a selective one
        for _ in range(8):
            node_rows.list_page(conn, NodeFilter(q="zq"))
        page = node_rows.list_page(conn, NodeFilter(q="sip-1234"))
    assert [n.hostname for n in page.items] == [
        f"sip-{n:05d}.fra1.voip.example" for n in range(12340, 12350)
    ]


def test_other_statements_keep_their_generic_plans(db: Database) -> None:
    """The channels' statements (the same shape at every beat and hello) are not re-planned
    each time: only a search asks for plans of its own."""
    with db.read() as conn:
        node_rows.list_page(conn, NodeFilter(status=None))
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "auto"


@pytest.mark.parametrize("q", ["sip-1234", "zq", "z"])
def test_a_listed_search_plans_the_rest_of_its_transaction_for_its_values(
    db: Database, q: str
) -> None:
    """The search's custom plans are set by its total: with the planner's settings for a count
    through the trigram or pair index (one statement, one round trip fewer a search), apart
    for a search of 1 character (no index); and the planner's settings are back once the
    count is read, by the count itself (no statement of their own: another round trip)."""
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    with db.read() as conn:
        event.listen(conn, "after_cursor_execute", seen)
        node_rows.list_page(conn, NodeFilter(q=q))
        event.remove(conn, "after_cursor_execute", seen)
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
        assert conn.exec_driver_sql("SHOW enable_seqscan").scalar() == "on"
    assert sum("plan_cache_mode" in s for s in statements) == 1
    setting = next(s for s in statements if "plan_cache_mode" in s)
    assert ("enable_seqscan" in setting) == (len(q) >= node_search.PAIR)
    on_again = [s for s in statements if "'enable_seqscan', 'on'" in s]
    assert [s.startswith("SELECT count(*)") for s in on_again] == (
        [True] if len(q) >= node_search.PAIR else []
    )


def test_a_search_is_counted_as_planned_with_scans_off_and_they_are_on_after(
    db: Database,
) -> None:
    """The count turns the scans on again in its own select list (`planner.off_for_one`): it is
    planned before it runs, so with them off. Its very statement, run again under EXPLAIN
    ANALYZE after the same setting: no sequential scan of a table of a few hundred nodes
    (which the planner reads by one whenever it may), and the scans on once it has run."""
    with db.engine.begin() as conn:
        _fill(conn, 10_000, count=300, components=[])
        conn.exec_driver_sql("ANALYZE nodes")
    flt = NodeFilter(q="sip-101")
    seen: list[tuple[str, object]] = []

    def count(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        if statement.startswith("SELECT count(*)"):
            seen.append((statement, params))

    with db.read() as conn:
        event.listen(conn, "after_cursor_execute", count)
        total = node_search.total(conn, flt, node_rows._where(flt))
        event.remove(conn, "after_cursor_execute", count)
    assert total.count == 100  # sip-10100 .. sip-10199 of 10,000 .. 10,299
    ((statement, params),) = seen
    assert "set_config('enable_seqscan', 'on', true)" in statement
    with db.engine.connect() as conn, conn.begin():
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute(
            "SELECT set_config('enable_seqscan', 'off', true), "
            "set_config('enable_indexscan', 'off', true)"
        )
        plan = driver.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params).fetchone()
        assert plan is not None
        assert "Seq Scan" not in json.dumps(plan[0])
        assert "Bitmap" in json.dumps(plan[0])
        assert driver.execute("SHOW enable_seqscan").fetchone() == ("on",)
        assert driver.execute("SHOW enable_indexscan").fetchone() == ("on",)


def _nodes_read(conn: Connection) -> int:
    """The rows of `nodes` this transaction has read so far, by scans and through indexes
    (bitmaps included)."""
    return int(
        conn.exec_driver_sql(
            "SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables "
            "WHERE relname = 'nodes'"
        ).scalar_one()
    )


def test_a_search_of_two_characters_is_read_through_the_pairs_index(db: Database) -> None:
    """Migration 0018: a 2-character search asks the GIN index of the host names' pairs for
    its rows, and reads no other node (pg_trgm has no trigram for it; it was a scan of the
    table); the pairs follow a renamed host name. A single character is still a scan."""
    with db.engine.begin() as conn:
        _fill(conn, 10_000, count=20_000, components=[])
        conn.exec_driver_sql("UPDATE nodes SET hostname = 'qx-' || hostname WHERE id < 10003")
        conn.exec_driver_sql("ANALYZE nodes")
    with db.read() as conn:
        before = _nodes_read(conn)
        none = node_rows.list_page(conn, NodeFilter(q="zq"))
        assert _nodes_read(conn) == before  # no node read
        few = node_rows.list_page(conn, NodeFilter(q="qx"))
        # the three: counted, their NodeIDs for the page, their rows (pg_trgm's index would
        # propose every node to each)
        assert _nodes_read(conn) <= before + 9
        node_rows.list_page(conn, NodeFilter(q="z"))
        assert _nodes_read(conn) >= before + 20_000  # one character: every node read
    assert (none.total, none.items) == (0, [])
    assert [n.id for n in few.items] == [10_000, 10_001, 10_002]
    with db.engine.begin() as conn:  # renamed: the pairs are the new name's
        conn.exec_driver_sql("UPDATE nodes SET hostname = substr(hostname, 4) WHERE id = 10001")
    with db.read() as conn:
        assert [n.id for n in node_rows.list_page(conn, NodeFilter(q="qx")).items] == [
            10_000,
            10_002,
        ]
        pairs = conn.exec_driver_sql("SELECT hostname_pairs FROM nodes WHERE id = 10000").scalar()
    assert pairs[:4] == ["qx", "x-", "-s", "si"]
