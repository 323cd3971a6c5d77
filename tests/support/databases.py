"""The two databases every store and API test runs on: SQLite and PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, user postgres). Each test gets a
fresh database created from a template that holds the migrated schema, so tests never see
each other's rows. When the server is unreachable the PostgreSQL tests are skipped and the
run says so loudly at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

ADMIN_URL = os.environ.get(
    "VOIPCLOUD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
unreachable_reason: str | None = None


def postgres_available() -> bool:
    global unreachable_reason
    try:
        engine = sa.create_engine(ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception as exc:  # any failure means: not reachable from here
        unreachable_reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return False


def _admin_engine() -> sa.Engine:
    return sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


def url_for(database: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"


def create_database(template: str | None = None) -> str:
    name = f"voipcloud_test_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine()
    with engine.connect() as conn:
        suffix = f" TEMPLATE {template}" if template else ""
        conn.execute(sa.text(f'CREATE DATABASE "{name}"{suffix}'))
    engine.dispose()
    return name


def drop_database(name: str) -> None:
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@contextmanager
def guest_role() -> Iterator[str]:
    """A login role of the test's own, owning nothing: its name. Dropped after, whatever
    happened; drop the databases that granted it anything inside the block first (their grants
    keep a role from being dropped)."""
    role = f"voipcloud_guest_{uuid.uuid4().hex[:8]}"
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        yield role
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        engine.dispose()


def as_role(url: str, role: str) -> str:
    """`url`, connecting as `role` (trust auth: no password)."""
    return sa.make_url(url).set(username=role).render_as_string(hide_password=False)
