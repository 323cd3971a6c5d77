"""Engine, transactions and migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on; write transactions start
with BEGIN IMMEDIATE so two writers queue on the lock instead of failing on upgrade. Commits are
durable by default (`synchronous=FULL`: the WAL is synced at every commit, so an acknowledged
change survives a power cut); `normal` trades the last commits before a power cut (never an
application crash) for faster writes (docs/reliability.md, "Durability").
PostgreSQL runs at READ COMMITTED; races on a node are settled by compare-and-set writes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, exc, text

from voipcloud.store import errors, tables

_IMMEDIATE = "voipcloud_begin_immediate"
CHANGED_NODES = "voipcloud_changed_nodes"
# PostgreSQL: the ids of the nodes a commit changed are announced on this channel, in the
# same transaction (so only if it commits), to the other controllers (services/cluster.py)
NODES_CHANNEL = "voipcloud_nodes"
MAX_NOTIFY_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes
ChangeListener = Callable[[set[int]], None]
SQLITE_SYNCHRONOUS = ("full", "normal")
# PostgreSQL: a pooled connection idle longer than this is pinged before it is handed out
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "voipcloud_idle_since"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+pysqlite:///{data_dir / 'voipcloud.sqlite3'}"


def make_engine(url: str, *, echo: bool = False, sqlite_synchronous: str = "full") -> Engine:
    if url.startswith("sqlite"):
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}")
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, synchronous=sqlite_synchronous.upper())
        return engine
    # last in, first out: the connection just returned serves the next request, so that the
    # ones left idle age (and are pinged, `_ping_when_idle`) instead of all taking turns
    engine = create_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_use_lifo=True)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before it is handed out only when it has been idle for
    PING_AFTER_IDLE_SECONDS or more; a dead one is replaced (the pool retries the checkout).

    SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip (0.13 to 0.26 ms,
    bench/round_trips.py) in each transaction, two in every signed-in page (the session, then
    the page's read). A connection returned a moment ago worked a moment ago. If the server
    went away within that second, the first statement fails instead, is answered 503 like any
    other outage (store/errors.py), and SQLAlchemy then replaces every pooled connection."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new (just connected) or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(str(error)) from error


def _configure_sqlite(engine: Engine, *, synchronous: str) -> None:
    engine.dialect.statement_compiler = _sqlite_compiler(engine.dialect.statement_compiler)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # let SQLAlchemy's "begin" event below decide how transactions start
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.info.get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_compiler(base: Any) -> Any:
    """SQLite's statement compiler, rendering a statement's table hint after the table's name
    in FROM (SQLAlchemy's own does not render hints for SQLite): `select(...).with_hint(table,
    "INDEXED BY name", "sqlite")` reads `table` through that index (store/node_search.py)."""

    class HintingCompiler(base):  # type: ignore[misc]
        def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
            return text

    return HintingCompiler


class Database:
    def __init__(self, url: str, *, echo: bool = False, sqlite_synchronous: str = "full") -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo, sqlite_synchronous=sqlite_synchronous)
        errors.install(self.engine)  # driver exceptions -> RuleViolation / DatabaseUnavailable
        # called after each commit that changed nodes, with their ids (wakes their agents)
        self.listeners: list[ChangeListener] = []
        # this process among the controllers sharing the database (notifications name it)
        self.instance = secrets.token_hex(6)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def lookup(self) -> Iterator[Connection]:
        """A connection for one read-only statement, outside any transaction on PostgreSQL
        (autocommit: no BEGIN and COMMIT round trips, ~0.2 ms of the session lookup every
        signed-in request makes). Several statements here would each see their own snapshot,
        and a setting local to a transaction would not reach the next one: use `read()`."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
            else:
                with conn.begin():
                    yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction whose statements all see one snapshot of the database: REPEATABLE
        READ on PostgreSQL, where each statement of a READ COMMITTED one sees what committed
        before it (a page and counters read a moment apart could disagree). SQLite's read
        transaction keeps the snapshot of its first read already."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":  # BEGIN ISOLATION LEVEL ...: no extra round trip
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction that may write; committed on success, rolled back on error."""
        with self.engine.connect() as conn:
            conn.info[_IMMEDIATE] = True
            try:
                with conn.begin():
                    yield conn
                    if self.dialect == "postgresql" and conn.info.get(CHANGED_NODES):
                        self._announce(conn, conn.info[CHANGED_NODES])
                changed: set[int] = conn.info.pop(CHANGED_NODES, set())
            finally:
                conn.info.pop(_IMMEDIATE, None)
                conn.info.pop(CHANGED_NODES, None)
        if changed:
            for listener in self.listeners:
                listener(changed)

    def _announce(self, conn: Connection, node_ids: set[int]) -> None:
        """NOTIFY the other controllers, inside the transaction: delivered only on commit."""
        for payload in node_payloads(self.instance, node_ids):
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": NODES_CHANNEL, "payload": payload},
            )

    @staticmethod
    def mark_changed(conn: Connection, node_id: int) -> None:
        """Tell the listeners, once this transaction commits, that the node changed."""
        conn.info.setdefault(CHANGED_NODES, set()).add(node_id)

    def migrate(self) -> None:
        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def node_payloads(sender: str, node_ids: set[int]) -> list[str]:
    """`sender:id,id,...` notification payloads, each under PostgreSQL's size limit."""
    payloads: list[str] = []
    current: list[str] = []
    size = len(sender) + 1
    for node_id in sorted(node_ids):
        item = str(node_id)
        if current and size + len(item) + 1 > MAX_NOTIFY_PAYLOAD:
            payloads.append(f"{sender}:{','.join(current)}")
            current, size = [], len(sender) + 1
        current.append(item)
        size += len(item) + 1
    if current:
        payloads.append(f"{sender}:{','.join(current)}")
    return payloads


def owns(conn: Connection, *tables: str) -> bool:
    """PostgreSQL: whether the role connected owns every one of `tables` (what VACUUM needs;
    for another role PostgreSQL skips the table with a warning only its own log shows)."""
    found = conn.execute(
        text(
            "SELECT bool_and(pg_has_role(relowner, 'USAGE')) FROM pg_class "
            "WHERE oid = ANY(CAST(:tables AS regclass[]))"
        ),
        {"tables": list(tables)},
    ).scalar()
    return bool(found)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()


__all__ = ["Database", "sqlite_url", "tables", "upgrade"]
