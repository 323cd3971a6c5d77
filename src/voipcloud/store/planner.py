"""PostgreSQL's planner told which plan methods not to use, for a few statements only.

Where the planner's estimates mislead it (docs/benchmarks.md names each case), the store
turns plan methods off around the statements concerned rather than rewrite them: local to the
transaction (`set_config(..., true)`), one round trip each way (`methods_off`), or one when
the statement concerned returns a single row and turns them on again itself (`off_for_one`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, literal_column


def _set(methods: tuple[str, ...], value: str) -> str:
    return ", ".join(f"set_config('enable_{method}', '{value}', true)" for method in methods)


def _turn_off(conn: Connection, methods: tuple[str, ...], also: str) -> None:
    off = _set(methods, "off")
    conn.exec_driver_sql(f"SELECT {off}, {also}" if also else f"SELECT {off}")


@contextmanager
def methods_off(conn: Connection, *methods: str, also: str = "") -> Iterator[None]:
    """`enable_<method>` off for the statements inside, on again after them. `also`: more
    `set_config(...)` calls sent in the same round trip, left as they are set."""
    _turn_off(conn, methods, also)
    yield
    # not in a `finally`: after an error the transaction is rolled back, and these settings
    # (local to it) with it; a statement here would only hide the error
    conn.exec_driver_sql(f"SELECT {_set(methods, 'on')}")


def off_for_one(conn: Connection, *methods: str, also: str = "") -> list[Any]:
    """`enable_<method>` off for the next statement only, which must return exactly one row
    (an aggregate without GROUP BY): returns the columns that turn them on again, for that
    statement's select list. A statement is planned before it runs, so it is planned with the
    methods off, and they are on again once it has run: the round trip that `methods_off`
    spends after its statements is saved. `also` as in `methods_off`."""
    _turn_off(conn, methods, also)
    return [literal_column(_set((method,), "on")) for method in methods]
