"""Each database fault the driver reports is classified as what it is, in one place
(`voipcloud.store.errors`): an outage is `DatabaseUnavailable` (503), never a 500.

Cheap faults on real databases: a SQLite write lock held past busy_timeout, a read-only SQLite
connection, a PostgreSQL port nobody listens on, a PostgreSQL row lock past lock_timeout.
Outages of a whole server are in tests/e2e/test_database_outage.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from tests.conftest import LiveApi
from tests.support.server import free_port
from voipcloud.domain.errors import DatabaseUnavailable
from voipcloud.store import tables
from voipcloud.store.database import Database

EXTENSION = {"number": "555", "label": "", "created_at": sa.func.current_timestamp()}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _add_extension(db: Database, number: str = "555") -> None:
    with db.write() as conn:
        conn.execute(sa.insert(tables.extensions).values(**{**EXTENSION, "number": number}))


def _extensions(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(tables.extensions)).scalar())


def test_a_lock_held_past_the_busy_timeout_is_unavailable(db: Database, tmp_path: Path) -> None:
    if db.dialect == "sqlite":

        @event.listens_for(db.engine, "connect")
        def _short(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA busy_timeout=200")

        path = db.engine.url.database
        assert path
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer that does not let go
        try:
            with pytest.raises(DatabaseUnavailable) as caught:
                _add_extension(db)
        finally:
            holder.rollback()
            holder.close()
        assert "locked" in caught.value.reason
    else:
        # PostgreSQL: a row lock held by another session, and a short lock_timeout here
        _add_extension(db, "556")  # a row to lock
        other = sa.create_engine(db.url)
        try:
            with other.connect() as holder:
                holder.execute(sa.text("SELECT 1 FROM extensions FOR UPDATE"))

                def locked() -> None:
                    with db.write() as conn:
                        conn.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
                        conn.execute(sa.text("SELECT 1 FROM extensions FOR UPDATE"))

                with pytest.raises(DatabaseUnavailable) as caught:
                    locked()
                holder.rollback()
        finally:
            other.dispose()
        assert caught.value.reason == "locked"
    before = _extensions(db)
    assert before == (0 if db.dialect == "sqlite" else 1)  # the refused insert left nothing
    _add_extension(db)  # once the lock is gone, the same engine writes again
    assert _extensions(db) == before + 1


def test_a_read_only_sqlite_connection_is_unavailable(
    sqlite_template: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "voipcloud.sqlite3"
    copy.write_bytes(sqlite_template.read_bytes())
    db = Database(f"sqlite+pysqlite:///file:{copy}?mode=ro&uri=true")
    try:
        assert _extensions(db) == 0  # reads work
        with pytest.raises(DatabaseUnavailable) as caught:
            _add_extension(db)
        assert caught.value.reason == "read-only"
    finally:
        db.dispose()


def test_a_postgres_nobody_listens_on_is_unavailable() -> None:
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres")
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            _extensions(db)
        assert caught.value.reason == "cannot connect"
        with pytest.raises(DatabaseUnavailable):
            db.migrate()  # the start-up work too
    finally:
        db.dispose()


# --- readiness -------------------------------------------------------------------------------


def test_ready_only_with_the_current_schema(api: LiveApi) -> None:
    anonymous = api.anonymous()
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200, ready.text
    revision = ready.json()["schema"]
    db = Database(api.settings.resolved_database_url())
    try:
        with db.write() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
        stale = anonymous.get("/readyz")
        assert stale.status_code == 503
        assert stale.json()["rule"] == "schema-outdated"
        assert int(stale.headers["retry-after"]) > 0
        with db.write() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
        assert anonymous.get("/readyz").status_code == 200
    finally:
        db.dispose()
        anonymous.close()
