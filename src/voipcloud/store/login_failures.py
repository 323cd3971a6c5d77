"""Wrong-password counts shared by every controller on one database (`login_failures`).

One row per (scope, key): scope `pair` (key: source, newline, username) or `address` (key:
the source). A failure is counted with one atomic upsert that returns the new count, so two
controllers counting at once never lose one; a count older than `forget_before` starts again
at 1. The wait a count sets is computed by the caller (services/auth.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, case, delete, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from voipcloud.store.tables import login_failures

PAIR = "pair"
ADDRESS = "address"


@dataclass(frozen=True, slots=True)
class FailureCount:
    failures: int
    last_failed_at: datetime


def pair_key(username: str, source: str) -> str:
    return f"{source}\n{username}"


def read(
    conn: Connection, keys: list[tuple[str, str]], *, forget_before: datetime
) -> dict[tuple[str, str], FailureCount]:
    """The live counts of these (scope, key)s; forgotten ones are left out."""
    table = login_failures
    rows = conn.execute(
        select(table.c.scope, table.c.key, table.c.failures, table.c.last_failed_at).where(
            tuple_(table.c.scope, table.c.key).in_(keys),
            table.c.last_failed_at >= forget_before,
        )
    )
    return {(row.scope, row.key): FailureCount(row.failures, row.last_failed_at) for row in rows}


def count_failure(
    conn: Connection, scope: str, key: str, *, now: datetime, forget_before: datetime
) -> int:
    """Count one failure; returns the count now (1 when the last one was forgotten)."""
    table = login_failures
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(scope=scope, key=key, failures=1, last_failed_at=now)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.scope, table.c.key],
        set_={
            "failures": case(
                (table.c.last_failed_at < forget_before, 1), else_=table.c.failures + 1
            ),
            "last_failed_at": excluded.last_failed_at,
        },
    ).returning(table.c.failures)
    return int(conn.execute(statement).scalar_one())


def clear(conn: Connection, scope: str, key: str) -> None:
    table = login_failures
    conn.execute(delete(table).where(and_(table.c.scope == scope, table.c.key == key)))


def sweep(conn: Connection, *, forget_before: datetime, keep: int, batch: int) -> int:
    """Delete at most `batch` forgotten rows, and at most `batch` more of each scope beyond
    its `keep` most recently failed. Returns how many went."""
    table = login_failures
    gone = conn.execute(
        delete(table).where(
            tuple_(table.c.scope, table.c.key).in_(
                select(table.c.scope, table.c.key)
                .where(table.c.last_failed_at < forget_before)
                .limit(batch)
            )
        )
    ).rowcount
    for scope in (PAIR, ADDRESS):
        surplus = (
            select(table.c.key)
            .where(table.c.scope == scope)
            .order_by(table.c.last_failed_at.desc(), table.c.key)
            .offset(keep)
            .limit(batch)
        )
        gone += conn.execute(
            delete(table).where(table.c.scope == scope, table.c.key.in_(surplus))
        ).rowcount
    return int(gone)


def database_now(conn: Connection) -> datetime:
    """The database server's clock (PostgreSQL): one clock for every controller."""
    moment: datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    return moment
