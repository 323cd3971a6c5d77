"""The presence rows on PostgreSQL (migration 0016): each flush's update writes an entry of the
last-seen index, the old versions are dead until a vacuum, and the controller vacuums the
table itself (one controller of a cluster, every PRESENCE_VACUUM_SECONDS), whether or not the
server runs autovacuum (CI's does not)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from tests.integration.infrastructure_helpers import running_infra
from tests.support import databases
from voipcloud.api import app as app_module
from voipcloud.domain.filters import NodeFilter
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
_STATS = (
    "SELECT n_dead_tup, vacuum_count + autovacuum_count AS vacuums FROM pg_stat_user_tables "
    "WHERE relname = 'node_presence'"
)


def _stats(conn: Connection) -> tuple[int, int]:
    row = conn.execute(text(_STATS)).one()
    return int(row.n_dead_tup), int(row.vacuums)


def _beat(db: Database, node_ids: list[int], times: int) -> None:
    for beat in range(times):
        with db.write() as conn:
            seen = NOW + timedelta(seconds=beat)
            node_rows.touch_last_seen(conn, dict.fromkeys(node_ids, seen))
            if db.dialect == "postgresql":  # this session's counts, seen by the next read
                conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")


def _nodes(db: Database, count: int) -> list[int]:
    with db.write() as conn:
        return [
            node_rows.insert_node(
                conn,
                hostname=f"beating-{number}",
                private_ip=f"10.9.0.{number}",
                public_ip=None,
                container_id=None,
                is_controller=False,
                now=NOW,
            )
            for number in range(1, count + 1)
        ]


def test_a_vacuum_reclaims_what_the_flushes_left(database_url: str) -> None:
    """Flushes leave dead versions on PostgreSQL; a vacuum of the presence rows reclaims them
    and the listing's last-seen order is unchanged. SQLite updates in place: nothing to do."""
    db = Database(database_url)
    try:
        if db.dialect == "postgresql":  # this test's vacuums only, where autovacuum runs too
            with db.write() as conn:
                conn.exec_driver_sql("ALTER TABLE node_presence SET (autovacuum_enabled = false)")
        ids = _nodes(db, 20)
        _beat(db, ids, 5)
        with db.read() as conn:
            before = node_rows.list_page(conn, NodeFilter(sort="-last_seen", limit=50))
        if db.dialect == "sqlite":
            assert node_rows.vacuum_presence(db.engine) is False
            return
        with db.read() as conn:
            dead, vacuums = _stats(conn)
        # four old versions of each row, less any a page's pruning reclaimed on the way
        assert dead >= len(ids)
        assert node_rows.vacuum_presence(db.engine) is True
        with db.read() as conn:
            dead_after, vacuums_after = _stats(conn)
        assert (dead_after, vacuums_after) == (0, vacuums + 1)
        with db.read() as conn:
            after = node_rows.list_page(conn, NodeFilter(sort="-last_seen", limit=50))
        assert [n.id for n in after.items] == [n.id for n in before.items]
        assert [n.id for n in after.items] == sorted(ids, reverse=True)  # ties: by NodeID
    finally:
        db.dispose()


@pytest.mark.postgres
def test_the_served_controller_vacuums_the_presence_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_template: str
) -> None:
    """A controller serving a PostgreSQL database vacuums the presence rows on its own, every
    PRESENCE_VACUUM_SECONDS (shortened here), though this server runs no autovacuum."""
    monkeypatch.setattr(app_module, "PRESENCE_VACUUM_SECONDS", 0.3)
    name = databases.create_database(template=postgres_template)
    url = databases.url_for(name)
    db = Database(url)
    try:
        with db.read() as conn:
            _, vacuums = _stats(conn)
        with running_infra(tmp_path, url):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with db.read() as conn:
                    if _stats(conn)[1] >= vacuums + 2:
                        break
                time.sleep(0.2)
        with db.read() as conn:
            assert _stats(conn)[1] >= vacuums + 2  # vacuumed, and again
    finally:
        db.dispose()
        databases.drop_database(name)


@pytest.mark.postgres
def test_a_role_that_does_not_own_the_table_is_told_once(
    tmp_path: Path, postgres_template: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Connected as a role that does not own `node_presence`, PostgreSQL would skip the vacuum
    with a warning that only its own log shows: the controller says so in its log, once."""
    with databases.guest_role() as role:
        name = databases.create_database(template=postgres_template)
        url = databases.url_for(name)
        owner, guest = Database(url), Database(databases.as_role(url, role))
        try:
            assert node_rows.vacuum_presence(guest.engine) is False
            assert node_rows.vacuum_presence(owner.engine) is True
            controller = Controller.build(
                Context(db=guest, box=SecretBox.in_data_dir(tmp_path / "data"))
            )
            with caplog.at_level(logging.WARNING, logger="voipcloud.agents"):
                assert controller.agents.vacuum_presence() is False
                assert controller.agents.vacuum_presence() is False
            told = [r for r in caplog.records if "cannot vacuum node_presence" in r.message]
            assert len(told) == 1
        finally:
            guest.dispose()
            owner.dispose()
            databases.drop_database(name)
