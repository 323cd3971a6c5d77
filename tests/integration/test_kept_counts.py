"""The kept counts the listing sums on every poll (`node_counts`, `node_role_counts`): folded
whichever row of a change is the 1,024th (migration 0017), and, on PostgreSQL, compacted by the
controller (store/kept_counts.py), so that a poll reads a page or two however long the fleet
has run."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, insert, select, text, update

from tests.integration.infrastructure_helpers import running_infra
from tests.support import databases
from voipcloud.api import app as app_module
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store import kept_counts, node_search
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database, sqlite_url
from voipcloud.store.tables import node_role_counts, nodes, role_assignments

NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
FOLD_EVERY = 1024


def _add_nodes(conn: Connection, count: int, *, first: int = 1) -> list[int]:
    return [
        node_rows.insert_node(
            conn,
            hostname=f"counted-{number}",
            private_ip=f"10.8.{number // 250}.{number % 250 + 1}",
            public_ip=None,
            container_id=None,
            is_controller=False,
            now=NOW,
        )
        for number in range(first, first + count)
    ]


def _assign(conn: Connection, ids: list[int], role: str | Callable[[int], str]) -> None:
    """Each node gets a role (`role`: one for all, or a function of the NodeID)."""
    conn.execute(
        insert(role_assignments),
        [
            {
                "node_id": i,
                "role": role(i) if callable(role) else role,
                "parameters": {},
                "created_at": NOW,
                "updated_at": NOW,
            }
            for i in ids
        ],
    )


def _last_id_odd(conn: Connection, table: str) -> None:
    """The table's next rows start at an even id, so that each change's pair of rows is (even,
    odd): the row under the new status or role is never a multiple of 1,024 (what hid the bug).
    SQLite's triggers fold on each row and need no such setting."""
    if conn.dialect.name != "postgresql":
        return
    top = conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one()
    odd = top + 1 if top % 2 == 0 else top + 2
    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {odd})"))


def _rows(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _kept_by_status(conn: Connection) -> dict[str, int]:
    return {s: n for s, n in node_search.status_counts(conn).items() if n}


def _counted_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(nodes.c.status, func.count()).group_by(nodes.c.status))
    return {str(status): int(count) for status, count in rows}


def _kept_by_role(conn: Connection) -> dict[tuple[str, str], int]:
    role, status = node_role_counts.c.role, node_role_counts.c.status
    rows = conn.execute(
        select(role, status, func.sum(node_role_counts.c.delta)).group_by(role, status)
    )
    return {(str(role), str(status)): int(n) for role, status, n in rows if n}


def _counted_by_role(conn: Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        select(role_assignments.c.role, nodes.c.status, func.count())
        .join(nodes, nodes.c.id == role_assignments.c.node_id)
        .group_by(role_assignments.c.role, nodes.c.status)
    )
    return {(str(role), str(status)): int(n) for role, status, n in rows}


def test_status_changes_fold_the_node_counts(database_url: str) -> None:
    """A status change appends two rows (-1 under the old status, +1 under the new); the table
    folds when either is the 1,024th. Before 0017 PostgreSQL checked only the second: with the
    pairs on (even, odd) ids, 1,100 changes left 2,200 more rows and the table never folded
    again."""
    db = Database(database_url)
    try:
        with db.write() as conn:
            ids = _add_nodes(conn, 20)
            _last_id_odd(conn, "node_counts")
        statuses = (NodeStatus.ONLINE.value, NodeStatus.OFFLINE.value)
        for change in range(55):  # 20 nodes x 55 = 1,100 changes, 2,200 rows
            with db.write() as conn:
                conn.execute(
                    update(nodes).where(nodes.c.id.in_(ids)).values(status=statuses[change % 2])
                )
        with db.read() as conn:
            assert _rows(conn, "node_counts") < FOLD_EVERY + 16
            assert _kept_by_status(conn) == _counted_by_status(conn)
    finally:
        db.dispose()


def test_roles_moved_fold_the_role_counts(database_url: str) -> None:
    """The sibling: an assignment moved to another role appends two rows to node_role_counts
    (-1 under the old role, +1 under the new), and folds the table when either is the 1,024th."""
    db = Database(database_url)
    try:
        with db.write() as conn:
            ids = _add_nodes(conn, 20)
            _assign(conn, ids, "sip")
            _last_id_odd(conn, "node_role_counts")
        roles = ("sip", "pbx")
        for move in range(55):  # 20 assignments x 55 moves = 2,200 rows
            with db.write() as conn:
                conn.execute(
                    update(role_assignments)
                    .where(role_assignments.c.node_id.in_(ids))
                    .values(role=roles[(move + 1) % 2])
                )
        with db.read() as conn:
            assert _rows(conn, "node_role_counts") < FOLD_EVERY + 64
            assert _kept_by_role(conn) == _counted_by_role(conn)
    finally:
        db.dispose()


def _pages(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT pg_relation_size('{table}') / 8192")).scalar_one())


@pytest.mark.postgres
def test_compaction_keeps_the_counts_to_a_page_or_two(postgres_template: str) -> None:
    """5,000 nodes added in one transaction leave 5,000 rows appended and folded away, dead
    until a vacuum, and the folded rows at the table's end: a poll read every page. Compacted
    (vacuum, fold, vacuum), the tables shrink to a page or two and their sums are unchanged."""
    name = databases.create_database(template=postgres_template)
    db = Database(databases.url_for(name))
    try:
        with db.write() as conn:  # the triggers of the migration fold every 1,024th row
            conn.exec_driver_sql("ALTER TABLE node_counts SET (autovacuum_enabled = false)")
            conn.exec_driver_sql("ALTER TABLE node_role_counts SET (autovacuum_enabled = false)")
            ids = _add_nodes(conn, 5000)
            _assign(conn, ids, lambda i: ("sip", "pbx", "que")[i % 3])
        with db.read() as conn:
            grown = _pages(conn, "node_counts"), _pages(conn, "node_role_counts")
            before = _kept_by_status(conn), _kept_by_role(conn)
        assert min(grown) > 10
        assert kept_counts.compact(db.engine) is True
        assert kept_counts.compact(db.engine) is True
        with db.read() as conn:
            assert _pages(conn, "node_counts") <= 2
            assert _pages(conn, "node_role_counts") <= 2
            assert _rows(conn, "node_counts") == len(before[0])
            assert (_kept_by_status(conn), _kept_by_role(conn)) == before
            assert before[0] == _counted_by_status(conn)
            assert before[1] == _counted_by_role(conn)
    finally:
        db.dispose()
        databases.drop_database(name)


def _three_nodes_unvacuumed(conn: Connection) -> None:
    """Three nodes with a role, and no autovacuum of the kept counts: only the compaction."""
    conn.exec_driver_sql("ALTER TABLE node_counts SET (autovacuum_enabled = false)")
    conn.exec_driver_sql("ALTER TABLE node_role_counts SET (autovacuum_enabled = false)")
    _assign(conn, _add_nodes(conn, 3), "sip")


def _zero_sums(conn: Connection, rows: int) -> None:
    """`rows` rows appended to each kept-count table that sum to nothing, as the triggers
    append them (+1, -1, ...): the tables grow as an import grows them, their sums unchanged."""
    for table, keys, values in (
        ("node_counts", "status", "'Offline'"),
        ("node_role_counts", "role, status", "'pbx', 'Offline'"),
    ):
        conn.exec_driver_sql(
            f"INSERT INTO {table} ({keys}, delta) SELECT {values}, 1 - 2 * mod(g, 2) "
            f"FROM generate_series(1, {rows}) AS g"
        )


@pytest.mark.postgres
def test_compaction_gives_back_the_pages_of_a_fleet_sized_import(postgres_template: str) -> None:
    """As many rows as 50,000 nodes added in one transaction leave (60,000 a table, 300-500
    pages): the second vacuum finds dead row pointers on only a page or two, under the 2 %
    of the table below which PostgreSQL (14 and later) skips the index cleanup, and so keeps
    them and every empty page after them. The compaction asks for the cleanup: the tables
    shrink to a page or two, their sums unchanged (the listing read 300 pages a poll)."""
    name = databases.create_database(template=postgres_template)
    db = Database(databases.url_for(name))
    try:
        with db.write() as conn:
            _three_nodes_unvacuumed(conn)
        with db.read() as conn:
            before = _kept_by_status(conn), _kept_by_role(conn)
        with db.write() as conn:
            _zero_sums(conn, 60_000)
        with db.read() as conn:
            assert min(_pages(conn, "node_counts"), _pages(conn, "node_role_counts")) > 250
        assert kept_counts.compact(db.engine) is True
        assert kept_counts.compact(db.engine) is True
        with db.read() as conn:
            assert _pages(conn, "node_counts") <= 2
            assert _pages(conn, "node_role_counts") <= 2
            assert (_kept_by_status(conn), _kept_by_role(conn)) == before
            assert before == (_counted_by_status(conn), _counted_by_role(conn))
    finally:
        db.dispose()
        databases.drop_database(name)


def test_sqlite_needs_no_compaction(tmp_path: Path, sqlite_template: Path) -> None:
    """SQLite gives a deleted row's room back at once: nothing to compact."""
    shutil.copy(sqlite_template, tmp_path / "voipcloud.sqlite3")
    db = Database(sqlite_url(tmp_path))
    try:
        assert kept_counts.compact(db.engine) is False
    finally:
        db.dispose()


# the controller's vacuums only (autovacuum is off here, and would not count)
_VACUUMS = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'node_counts'"


@pytest.mark.postgres
def test_the_served_controller_compacts_the_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_template: str
) -> None:
    """A controller serving a PostgreSQL database compacts the kept counts on its own, every
    COUNTS_COMPACTION_SECONDS (shortened here), though this server runs no autovacuum."""
    monkeypatch.setattr(app_module, "COUNTS_COMPACTION_SECONDS", 0.3)
    name = databases.create_database(template=postgres_template)
    url = databases.url_for(name)
    db = Database(url)
    try:
        with db.read() as conn:
            vacuums = int(conn.execute(text(_VACUUMS)).scalar_one())
        with running_infra(tmp_path, url):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with db.read() as conn:
                    if int(conn.execute(text(_VACUUMS)).scalar_one()) >= vacuums + 4:
                        break
                time.sleep(0.2)
        with db.read() as conn:  # two rounds: each vacuums before and after its fold
            assert int(conn.execute(text(_VACUUMS)).scalar_one()) >= vacuums + 4
    finally:
        db.dispose()
        databases.drop_database(name)


@pytest.mark.postgres
def test_a_role_that_does_not_own_the_counts_is_told_once(
    tmp_path: Path, postgres_template: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Connected as a role that does not own the tables, they are folded but not vacuumed,
    and the controller says so in its log, once."""
    with databases.guest_role() as role:
        name = databases.create_database(template=postgres_template)
        url = databases.url_for(name)
        owner, guest = Database(url), Database(databases.as_role(url, role))
        try:
            with owner.write() as conn:
                for table in ("node_counts", "node_role_counts"):
                    conn.exec_driver_sql(f'GRANT SELECT, INSERT, DELETE ON {table} TO "{role}"')
                    conn.exec_driver_sql(f'GRANT USAGE ON SEQUENCE {table}_id_seq TO "{role}"')
                _add_nodes(conn, 30)
            with owner.read() as conn:
                vacuums = int(conn.execute(text(_VACUUMS)).scalar_one())
            assert kept_counts.compact(guest.engine) is False
            with owner.read() as conn:
                assert _rows(conn, "node_counts") == len(_kept_by_status(conn))  # folded
                assert int(conn.execute(text(_VACUUMS)).scalar_one()) == vacuums  # not vacuumed
            controller = Controller.build(
                Context(db=guest, box=SecretBox.in_data_dir(tmp_path / "data"))
            )
            with caplog.at_level(logging.WARNING, logger="voipcloud.nodes"):
                assert controller.nodes.compact_counts() is False
                assert controller.nodes.compact_counts() is False
            told = [r for r in caplog.records if "cannot vacuum node_counts" in r.message]
            assert len(told) == 1
            assert kept_counts.compact(owner.engine) is True
        finally:
            guest.dispose()
            owner.dispose()
            databases.drop_database(name)


@pytest.mark.postgres
def test_a_table_already_folded_is_left_alone(postgres_template: str) -> None:
    """A round of the compaction with nothing to fold writes nothing: no row deleted and
    written again every 30 s."""
    name = databases.create_database(template=postgres_template)
    db = Database(databases.url_for(name))
    try:
        with db.write() as conn:
            ids = _add_nodes(conn, 30)
            _assign(conn, ids, "sip")
        with db.write() as conn:
            assert kept_counts.fold(conn) == 2  # 30 rows or more each, into one a key
        with db.read() as conn:
            before = conn.execute(text("SELECT id FROM node_counts ORDER BY id")).scalars().all()
        with db.write() as conn:
            assert kept_counts.fold(conn) == 0
        with db.read() as conn:
            after = conn.execute(text("SELECT id FROM node_counts ORDER BY id")).scalars().all()
        assert after == before
    finally:
        db.dispose()
        databases.drop_database(name)


@pytest.mark.postgres
def test_rows_spread_over_pages_are_written_again_only_for_a_vacuum(postgres_template: str) -> None:
    """A table of one row per key whose rows a fold wrote at the end of pages an import left
    is folded again when a vacuum follows (`spread_over`, the tables' owner), so that the
    vacuum can give the pages back; without one (a role that cannot vacuum) it is left alone:
    rewriting it every round would only add dead rows."""
    name = databases.create_database(template=postgres_template)
    db = Database(databases.url_for(name))
    try:
        with db.write() as conn:
            _three_nodes_unvacuumed(conn)
            _zero_sums(conn, 20_000)
        with db.write() as conn:
            assert kept_counts.fold(conn) == 2  # one row a key now, on the tables' last page
        with db.read() as conn:
            assert min(_pages(conn, "node_counts"), _pages(conn, "node_role_counts")) > 50
        with db.write() as conn:
            assert kept_counts.fold(conn) == 0
        with db.write() as conn:
            assert kept_counts.fold(conn, spread_over=kept_counts.FOLDED_PAGES) == 2
        with db.read() as conn:
            assert _kept_by_status(conn) == _counted_by_status(conn)
            assert _kept_by_role(conn) == _counted_by_role(conn)
    finally:
        db.dispose()
        databases.drop_database(name)
