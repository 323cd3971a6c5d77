"""Pooled PostgreSQL connections (store/database.py): a connection is pinged before it is handed
out only after it sat idle (`PING_AFTER_IDLE_SECONDS`), a dead one is then replaced without the
caller noticing, and one that died a moment after its last use fails its statement as an outage
(503), after which the pool is renewed. `Database.lookup()` reads one statement outside any
transaction on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import databases
from voipcloud.domain.errors import DatabaseUnavailable
from voipcloud.store import database, tables
from voipcloud.store.database import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    found = Database(database_url)
    yield found
    found.dispose()


@pytest.fixture
def pg(postgres_template: str) -> Iterator[Database]:
    """The pool's pings are PostgreSQL's (SQLite has no server to lose)."""
    name = databases.create_database(template=postgres_template)
    found = Database(databases.url_for(name))
    yield found
    found.dispose()
    databases.drop_database(name)


def _backend(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(db: Database, pid: int) -> None:
    """End that server process from another connection, and wait until it is gone."""
    killer = sa.create_engine(db.url, poolclass=sa.NullPool)
    try:
        with killer.connect() as conn:
            assert conn.execute(
                sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}
            ).scalar_one()
    finally:
        killer.dispose()


def _count_pings(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = db.engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_connection))

    monkeypatch.setattr(db.engine.dialect, "do_ping", counted)
    return pings


@pytest.mark.postgres
def test_a_connection_used_a_moment_ago_is_not_pinged(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(pg, monkeypatch)
    first = _backend(pg)
    assert _backend(pg) == first  # the one just returned (last in, first out)
    assert _backend(pg) == first
    assert pings == []
    # idle long enough: pinged before it is handed out, once a checkout
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert _backend(pg) == first
    assert pings == [1]


@pytest.mark.postgres
def test_the_pool_hands_out_the_connection_returned_last(pg: Database) -> None:
    one, two = pg.engine.connect(), pg.engine.connect()
    pids = [int(c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()) for c in (one, two)]
    two.close()
    one.close()  # returned last
    assert _backend(pg) == pids[0]
    assert _backend(pg) == pids[0]  # and again: the other one stays idle


@pytest.mark.postgres
def test_an_idle_connection_that_died_is_replaced_unnoticed(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.2)
    before = _backend(pg)
    _terminate(pg, before)
    time.sleep(0.3)
    after = _backend(pg)  # the ping found it dead; the pool connected again
    assert after != before


@pytest.mark.postgres
def test_a_connection_that_died_right_after_its_use_is_an_outage_then_renewed(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 3600.0)
    before = _backend(pg)
    _terminate(pg, before)
    with pytest.raises(DatabaseUnavailable):
        _backend(pg)  # not pinged: its statement meets the closed connection (503)
    assert _backend(pg) != before  # and the pool was renewed


def test_a_lookup_reads_outside_any_transaction(db: Database) -> None:
    with db.write() as conn:
        conn.execute(
            sa.insert(tables.extensions).values(number="555", label="", created_at=sa.func.now())
        )
    count = sa.select(sa.func.count()).select_from(tables.extensions)
    with db.lookup() as conn:
        assert conn.execute(count).scalar_one() == 1
        driver = conn.connection.dbapi_connection
        if db.dialect == "postgresql":
            import psycopg

            assert driver is not None
            # no BEGIN was sent: the server holds no transaction open after the statement
            assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with db.read() as conn:  # a read() is one transaction (its statements share settings)
        assert conn.execute(count).scalar_one() == 1
        driver = conn.connection.dbapi_connection
        if db.dialect == "postgresql":
            import psycopg

            assert driver is not None
            assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
