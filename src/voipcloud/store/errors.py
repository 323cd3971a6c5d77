"""The database driver's exceptions, classified in one place.

`install(engine)` hooks SQLAlchemy's ``handle_error`` event, so every statement, commit,
connect and migration of the engine raises domain errors instead of driver exceptions:

- **conflict** (a race lost to a unique constraint or a foreign key) -> `RuleViolation` naming
  the rule: `UNIQUE_RULES` maps each constraint name to its rule code and sentence; a
  constraint missing there gets `FALLBACK_RULE`. Deadlocks and serialization failures are
  `concurrent-change`.
- **unavailable** (cannot connect, connection lost, disk full, read-only, I/O error, locked
  beyond the busy timeout, server shutting down) -> `DatabaseUnavailable`. The connection is
  dropped from the pool, so the next request opens a fresh one: a SQLite connection opened
  while the file was read-only stays read-only, and a PostgreSQL one lost in an outage is dead.
- anything else (a bug: a syntax error, a NOT NULL violation) stays the driver's exception.

What each driver raises, as measured (docs/reliability.md, "Database outage"):

- server down, refused: psycopg OperationalError without sqlstate;
- connection lost: the same, with SQLAlchemy's `connection_invalidated`;
- disk full: sqlite3 OperationalError SQLITE_FULL; psycopg DiskFull (53100);
- read-only: sqlite3 OperationalError SQLITE_READONLY (or SQLITE_IOERR_*); psycopg
  ReadOnlySqlTransaction (25006);
- locked: sqlite3 SQLITE_BUSY once busy_timeout is over; psycopg LockNotAvailable (55P03);
- unique race: sqlite3 IntegrityError SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY, whose message
  names the columns ("UNIQUE constraint failed: t.a, t.b"); psycopg UniqueViolation (23505),
  whose `diag.constraint_name` names the constraint.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext

from voipcloud.domain.errors import DatabaseUnavailable, RuleViolation, VoipcloudError
from voipcloud.store import tables

log = logging.getLogger("voipcloud.store")

# constraint name -> (rule code, sentence). Names are those of the Alembic migrations (the
# naming convention of `tables.metadata`); SQLite names columns instead, resolved below.
UNIQUE_RULES: dict[str, tuple[str, str]] = {
    "uq_nodes_live_hostname": (
        "hostname-unique",
        "This hostname is already used by another node that is not Deleted "
        "(another request took it at the same time).",
    ),
    "uq_nodes_single_controller": (
        "single-controller-node",
        "There is already an Infrastructure Controller node; there can be only one.",
    ),
    "uq_nodes_session_key_digest": (
        "session-key-unique",
        "The new session key collided with another node's; try again.",
    ),
    "uq_nodes_agent_token_digest": (
        "agent-credential-unique",
        "The new agent credential collided with another one; the agent will join again.",
    ),
    "pk_role_assignments": (
        "role-already-assigned",
        "The node already has this role (another request assigned it at the same time); "
        "edit its parameters instead.",
    ),
    "pk_extensions": ("extension-unique", "This extension already exists."),
    "uq_administrators_username": (
        "username-unique",
        "An account with this username already exists.",
    ),
    "pk_api_tokens": ("token-unique", "The new token collided with an existing one; try again."),
    "pk_infrastructure": (
        "infrastructure-exists",
        "The infrastructure was set up by another request at the same time; reload it.",
    ),
    "pk_storage_config": (
        "storage-config-exists",
        "The storage configuration was created by another request at the same time; "
        "reload it and try again.",
    ),
    "pk_storage_resources": (
        "storage-resource-exists",
        "This resource was stored by another request at the same time; try again.",
    ),
    "pk_storage_migrations": (
        "storage-migration-running",
        "A storage migration was started by another request at the same time.",
    ),
}
FALLBACK_RULE = (
    "already-exists",
    "Another request created the same thing at the same time; reload and try again.",
)
CONCURRENT_CHANGE = (
    "concurrent-change",
    "Another request changed the same data at the same time; reload and try again.",
)

# SQLite result codes (the low byte of sqlite_errorcode) that mean "not now"
_SQLITE_UNAVAILABLE = {
    5: "locked by another writer",  # SQLITE_BUSY, after busy_timeout
    6: "locked",  # SQLITE_LOCKED
    7: "out of memory",  # SQLITE_NOMEM
    8: "read-only",  # SQLITE_READONLY
    10: "I/O error",  # SQLITE_IOERR
    13: "disk full",  # SQLITE_FULL
    14: "cannot open the database file",  # SQLITE_CANTOPEN
    15: "locked",  # SQLITE_PROTOCOL
}
_SQLITE_CONSTRAINT = 19
_SQLITE_UNIQUE = {1555, 2067}  # SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
_SQLITE_FOREIGNKEY = 787
_SQLITE_READONLY_OR_GONE = {8, 10, 14}  # reopen the connection when the file comes back

# PostgreSQL SQLSTATEs (and classes) that mean "not now"
_PG_UNAVAILABLE = {
    "08": "connection lost",  # connection exception
    "53": "out of resources (disk full, memory or connections)",  # insufficient resources
    "58": "I/O error",  # system error
    "57P01": "server shutting down",  # admin_shutdown
    "57P02": "server crashed",  # crash_shutdown
    "57P03": "server starting or stopping",  # cannot_connect_now
    "57014": "query cancelled",  # query_canceled (statement timeout)
    "25006": "read-only",  # read_only_sql_transaction
    "55P03": "locked",  # lock_not_available
    "53100": "disk full",
}
_PG_CONFLICT = {"40001", "40P01", "23503"}  # serialization failure, deadlock, foreign key
_PG_UNIQUE = "23505"

_SQLITE_COLUMNS = re.compile(r"UNIQUE constraint failed: (.+)$")


def _unique_columns() -> dict[tuple[str, tuple[str, ...]], str]:
    """(table, columns) -> constraint name, for every unique constraint, unique index and
    primary key of the schema: SQLite names the columns of a violated constraint, not it."""
    found: dict[tuple[str, tuple[str, ...]], str] = {}
    for table in tables.metadata.tables.values():
        for constraint in table.constraints:
            columns = tuple(c.name for c in getattr(constraint, "columns", ()))
            is_unique = constraint.__class__.__name__ in (
                "PrimaryKeyConstraint",
                "UniqueConstraint",
            )
            if is_unique and columns and isinstance(constraint.name, str):
                found[(table.name, columns)] = constraint.name
        for index in table.indexes:
            if index.unique and isinstance(index.name, str):
                found[(table.name, tuple(c.name for c in index.columns))] = index.name
    return found


_BY_COLUMNS = _unique_columns()


def rule_for_constraint(name: str | None) -> RuleViolation:
    rule, sentence = UNIQUE_RULES.get(name or "", FALLBACK_RULE)
    return RuleViolation(rule, sentence)


def _sqlite_constraint_name(message: str) -> str | None:
    """'UNIQUE constraint failed: role_assignments.node_id, role_assignments.role' -> the
    name of that constraint in the schema."""
    match = _SQLITE_COLUMNS.search(message)
    if not match:
        return None
    parts = [p.strip().split(".", 1) for p in match.group(1).split(",")]
    if not all(len(p) == 2 for p in parts):
        return None
    table = parts[0][0]
    return _BY_COLUMNS.get((table, tuple(p[1] for p in parts)))


def _classify_sqlite(error: sqlite3.Error) -> VoipcloudError | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    if primary in _SQLITE_UNAVAILABLE:
        return DatabaseUnavailable(_SQLITE_UNAVAILABLE[primary])
    if primary == _SQLITE_CONSTRAINT:
        if code in _SQLITE_UNIQUE:
            return rule_for_constraint(_sqlite_constraint_name(str(error)))
        if code == _SQLITE_FOREIGNKEY:
            return RuleViolation(*CONCURRENT_CHANGE)
    return None


def _classify_postgres(error: Any, *, disconnected: bool) -> VoipcloudError | None:
    import psycopg

    sqlstate: str | None = getattr(error, "sqlstate", None)
    if sqlstate == _PG_UNIQUE:
        diag = getattr(error, "diag", None)
        return rule_for_constraint(getattr(diag, "constraint_name", None))
    if sqlstate in _PG_CONFLICT:
        return RuleViolation(*CONCURRENT_CHANGE)
    if sqlstate is not None:
        reason = _PG_UNAVAILABLE.get(sqlstate) or _PG_UNAVAILABLE.get(sqlstate[:2])
        if reason:
            return DatabaseUnavailable(reason)
    if disconnected:
        return DatabaseUnavailable("connection lost")
    if sqlstate is None and isinstance(error, psycopg.OperationalError):
        return DatabaseUnavailable("cannot connect")  # refused, unreachable, DNS, timeout
    return None


def classify(error: BaseException, *, disconnected: bool = False) -> VoipcloudError | None:
    """The domain error for a driver exception (or SQLAlchemy's wrapper of one); None when it
    is neither a conflict nor an outage (a bug: let it surface)."""
    if isinstance(error, VoipcloudError):
        return error
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection freed in time
        return DatabaseUnavailable("too busy: no free connection")
    driver: BaseException | None = error
    if isinstance(error, sa_exc.DBAPIError):
        disconnected = disconnected or error.connection_invalidated
        driver = error.orig
    if isinstance(driver, sqlite3.Error):
        return _classify_sqlite(driver)
    if driver is not None and type(driver).__module__.startswith("psycopg"):
        return _classify_postgres(driver, disconnected=disconnected)
    return None


def _on_error(context: ExceptionContext) -> None:
    original = context.original_exception
    if not isinstance(original, Exception):
        return  # KeyboardInterrupt, cancellation: not ours to translate
    domain = classify(original, disconnected=context.is_disconnect)
    if domain is None:
        return
    if isinstance(domain, DatabaseUnavailable) and isinstance(original, sqlite3.Error):
        code = getattr(original, "sqlite_errorcode", 0) & 0xFF
        if code in _SQLITE_READONLY_OR_GONE:
            context.is_disconnect = True  # drop the pool's connections: reopen read-write
    raise domain from original


def install(engine: Engine) -> None:
    """Make `engine` raise domain errors (`RuleViolation`, `DatabaseUnavailable`)."""
    if not event.contains(engine, "handle_error", _on_error):
        event.listen(engine, "handle_error", _on_error)
