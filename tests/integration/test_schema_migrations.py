"""The Alembic migrations build exactly the schema `store/tables.py` declares, on both
databases, and the newest one goes down and up again without loss of the schema."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from voipcloud.store.database import alembic_config
from voipcloud.store.tables import include_name, include_object_for, metadata


def _differences(database_url: str) -> list[object]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            # The same narrow exclusions as migrations/env.py: SQLite's FTS5 table and its shadow
            # tables (raw DDL, never declared), and indexes declared for the other database
            # (`ddl_if`). `test_search_structures_exist` checks those are really there.
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": False,
                    "include_name": include_name,
                    "include_object": include_object_for(conn.dialect.name),
                },
            )
            return [d for d in compare_metadata(context, metadata) if not _ignorable(d)]
    finally:
        engine.dispose()


def _ignorable(diff: object) -> bool:
    # alembic's own bookkeeping table is not in the metadata
    return (
        isinstance(diff, tuple)
        and diff[0] == "remove_table"
        and (diff[1].name == "alembic_version")
    )


def test_migrations_match_the_declared_tables(database_url: str) -> None:
    assert _differences(database_url) == []


def test_fleet_migration_down_and_up(database_url: str) -> None:
    engine = create_engine(database_url)
    config = alembic_config()
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0006")
            conn.commit()
            command.upgrade(config, "head")
            conn.commit()
    finally:
        engine.dispose()
    assert _differences(database_url) == []


def _search_structures(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                query = "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger', 'index')"
            else:
                query = (
                    "SELECT indexname FROM pg_indexes "
                    "WHERE tablename IN ('nodes', 'node_presence') UNION "
                    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal UNION "
                    "SELECT extname FROM pg_extension"
                )
            return {name for (name,) in conn.exec_driver_sql(query)}
    finally:
        engine.dispose()


def test_search_structures_exist(database_url: str) -> None:
    """What the comparison leaves out is there: the FTS5 and pairs tables and their triggers
    (SQLite), the trigram, pairs and pattern indexes (PostgreSQL), the counting triggers
    (both)."""
    found = _search_structures(database_url)
    if database_url.startswith("sqlite"):
        wanted = {
            "nodes_search",
            "nodes_search_insert",
            "nodes_search_update",
            "nodes_search_delete",
            "node_counts_insert",
            "node_counts_update",
            "node_counts_delete",
            "node_counts_fold",
            "ix_node_presence_last_seen",
            "node_presence_insert",
            "node_role_counts_status",
            "node_role_counts_node_delete",
            "node_role_counts_assign",
            "node_role_counts_unassign",
            "node_role_counts_reassign",
            "node_role_counts_fold",
            "node_pairs",  # since 0018
            "node_pairs_insert",
            "node_pairs_update",
            "node_pairs_delete",
            "role_assignments_hostname",  # since 0019
            "role_assignments_follow_hostname",
        }
        assert "ix_nodes_hostname_trgm" not in found
    else:
        wanted = {
            "pg_trgm",
            "ix_nodes_hostname_trgm",
            "ix_nodes_private_ip_pattern",
            "ix_nodes_public_ip_pattern",
            "node_counts_change",
            "node_role_counts_status",
            "node_role_counts_node_delete",
            "node_role_counts_change",
            "node_presence_insert",
            "ix_node_presence_last_seen",  # since 0016
            "ix_nodes_hostname_pairs",  # since 0018
            "role_assignments_hostname",  # since 0019
            "role_assignments_follow_hostname",
        }
        assert "ix_nodes_last_seen_id" not in found  # the time left the nodes' rows in 0015
    assert wanted <= found


def test_listing_migration_down_and_up(database_url: str) -> None:
    engine = create_engine(database_url)
    config = alembic_config()
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0007")
            conn.commit()
        assert "nodes_search" not in _search_structures(database_url)
        assert "node_counts_change" not in _search_structures(database_url)
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
    finally:
        engine.dispose()
    assert _differences(database_url) == []
    test_search_structures_exist(database_url)


def _hostname_index(conn: Any) -> str:
    return str(
        conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_nodes_live_hostname'"
        ).scalar_one()
    )


def test_the_hostname_index_carries_the_nodeid_and_goes_down_without_it(
    database_url: str,
) -> None:
    """Migration 0014 (PostgreSQL): the live host names' unique index carries the NodeID, so
    that a role's page sorted by host name reads the index alone; down and up again."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's indexes carry the rowid, the NodeID: 0014 changes nothing there")
    engine = create_engine(database_url)
    config = alembic_config()
    try:
        with engine.connect() as conn:
            found = _hostname_index(conn)
            assert "UNIQUE INDEX uq_nodes_live_hostname" in found
            assert found.endswith(
                "(hostname) INCLUDE (id) WHERE ((status)::text <> 'Deleted'::text)"
            )
            config.attributes["connection"] = conn
            command.downgrade(config, "0013")
            conn.commit()
            assert "INCLUDE" not in _hostname_index(conn)
            command.upgrade(config, "head")
            conn.commit()
            assert _hostname_index(conn) == found
    finally:
        engine.dispose()


_NODE = (
    "INSERT INTO nodes (id, hostname, private_ip, status, is_controller, config_generation, "
    "created_at, updated_at, row_version{seen_column}) VALUES (:id, :hostname, '10.1.1.1', "
    "'StandBy', false, 1, :at, :at, 1{seen_value})"
)


def _presence(conn: Any) -> dict[int, object]:
    query = "SELECT node_id, last_seen FROM node_presence WHERE node_id > 900"
    rows = conn.exec_driver_sql(query).all()
    return {row.node_id: row.last_seen for row in rows}


def test_last_seen_times_move_to_their_presence_rows_and_back(database_url: str) -> None:
    """Migration 0015: every node gets its presence row with the time its row held (NULL when
    never heard), a node inserted later gets one from the trigger, a node's delete takes its
    row with it; down again, the times are back in the nodes' column."""
    engine = create_engine(database_url)
    config = alembic_config()
    postgres = database_url.startswith("postgresql")
    at = "2026-12-02 06:00:00" + ("+00:00" if postgres else ".000000")
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0014")
            conn.commit()
            with_seen = _NODE.format(seen_column=", last_seen", seen_value=", :at")
            conn.execute(sa.text(with_seen), {"id": 901, "hostname": "heard", "at": at})
            never = _NODE.format(seen_column="", seen_value="")
            conn.execute(sa.text(never), {"id": 902, "hostname": "never", "at": at})
            conn.commit()
            command.upgrade(config, "head")
            conn.commit()
            moved = _presence(conn)
            assert set(moved) == {901, 902}
            assert moved[902] is None
            assert str(moved[901]).startswith("2026-12-02 06:00:00")
            columns = {c["name"] for c in sa.inspect(conn).get_columns("nodes")}
            assert "last_seen" not in columns
            if postgres:  # room on each page for a flush's update in place (HOT)
                query = "SELECT reloptions FROM pg_class WHERE relname = 'node_presence'"
                assert conn.exec_driver_sql(query).scalar() == ["fillfactor=50"]
            conn.execute(sa.text(never), {"id": 903, "hostname": "later", "at": at})
            conn.commit()
            if not postgres:  # as the controller's connections have it (store/database.py)
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.exec_driver_sql("DELETE FROM nodes WHERE id = 902")
            conn.commit()
            assert set(_presence(conn)) == {901, 903}
            command.downgrade(config, "0014")
            conn.commit()
            query = "SELECT id, last_seen FROM nodes WHERE id > 900"
            back = {row.id: row.last_seen for row in conn.exec_driver_sql(query)}
            assert str(back[901]).startswith("2026-12-02 06:00:00")
            assert back[903] is None
            command.upgrade(config, "head")
            conn.commit()
            assert set(_presence(conn)) == {901, 903}
    finally:
        engine.dispose()
    assert _differences(database_url) == []


def test_the_last_seen_index_down_and_up(database_url: str) -> None:
    """Migration 0016 adds the presence rows' last-seen index on PostgreSQL (SQLite has had it
    since 0015) and takes it away again."""
    engine = create_engine(database_url)
    config = alembic_config()
    sqlite = database_url.startswith("sqlite")
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0015")
            conn.commit()
            assert ("ix_node_presence_last_seen" in _search_structures(database_url)) == sqlite
            command.upgrade(config, "head")
            conn.commit()
        assert "ix_node_presence_last_seen" in _search_structures(database_url)
    finally:
        engine.dispose()
    assert _differences(database_url) == []


def _folds_on_either_row(conn: Any) -> bool:
    """PostgreSQL: both trigger functions check either row of a change (0017); SQLite's fold on
    each row appended (nothing to check: True)."""
    if conn.dialect.name != "postgresql":
        return True
    checks = [
        conn.execute(sa.text(f"SELECT pg_get_functiondef('{name}'::regproc)")).scalar_one()
        for name in ("voipcloud_node_counts", "voipcloud_node_role_counts_of_role")
    ]
    return all("first_id % 1024 = 0" in check for check in checks)


def test_the_kept_counts_fold_down_and_up(database_url: str) -> None:
    """Migration 0017 (PostgreSQL) folds the kept counts once on its way up, so that a table
    the old trigger let grow is small again, sums unchanged; and goes down and up cleanly."""
    engine = create_engine(database_url)
    config = alembic_config()
    sums = "SELECT status, SUM(delta) FROM node_counts GROUP BY status ORDER BY status"
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0016")
            conn.commit()
            assert _folds_on_either_row(conn) == database_url.startswith("sqlite")
            conn.execute(
                sa.text("INSERT INTO node_counts(status, delta) VALUES (:s, :d)"),
                [{"s": s, "d": d} for _ in range(700) for s, d in (("Online", 1), ("Offline", -1))]
                + [{"s": "Online", "d": -700}, {"s": "Offline", "d": 703}],
            )
            conn.commit()
            before = conn.execute(sa.text(sums)).all()
            command.upgrade(config, "head")
            conn.commit()
            assert conn.execute(sa.text(sums)).all() == before
            rows = conn.execute(sa.text("SELECT count(*) FROM node_counts")).scalar_one()
            if database_url.startswith("postgresql"):
                assert rows == len(before)  # folded: one row a status
                assert _folds_on_either_row(conn)
    finally:
        engine.dispose()
    assert _differences(database_url) == []
