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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text

from voipcloud.store import errors, tables

_IMMEDIATE = "voipcloud_begin_immediate"
CHANGED_NODES = "voipcloud_changed_nodes"
# PostgreSQL: the ids of the nodes a commit changed are announced on this channel, in the
# same transaction (so only if it commits), to the other controllers (services/cluster.py)
NODES_CHANNEL = "voipcloud_nodes"
MAX_NOTIFY_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes
ChangeListener = Callable[[set[int]], None]
SQLITE_SYNCHRONOUS = ("full", "normal")


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+pysqlite:///{data_dir / 'voipcloud.sqlite3'}"


def make_engine(url: str, *, echo: bool = False, sqlite_synchronous: str = "full") -> Engine:
    if url.startswith("sqlite"):
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}")
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, synchronous=sqlite_synchronous.upper())
        return engine
    return create_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True)


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
