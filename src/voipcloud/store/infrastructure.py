"""The single infrastructure row: properties, and a lock for extension-count rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from voipcloud.store.tables import infrastructure

_ID = 1


def exists(conn: Connection) -> bool:
    return conn.execute(select(infrastructure.c.id)).first() is not None


def create(conn: Connection, *, properties: dict[str, Any], now: datetime) -> None:
    conn.execute(
        insert(infrastructure).values(id=_ID, properties=properties, row_version=1, updated_at=now)
    )


def properties(conn: Connection) -> dict[str, Any]:
    value = conn.execute(select(infrastructure.c.properties).where(infrastructure.c.id == _ID))
    return dict(value.scalar_one())


def lock(conn: Connection) -> None:
    """Serialize the rules that count extensions or live nodes (SQLite: its write lock)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            select(infrastructure.c.id).where(infrastructure.c.id == _ID).with_for_update()
        )


def version(conn: Connection) -> int:
    value = conn.execute(select(infrastructure.c.row_version).where(infrastructure.c.id == _ID))
    return int(value.scalar_one())


def set_properties(
    conn: Connection, *, properties: dict[str, Any], now: datetime, version: int | None = None
) -> bool:
    """Write the properties and bump the version; with `version`, only if the row still has
    it (compare-and-set: False when another transaction changed it first)."""
    where = [infrastructure.c.id == _ID]
    if version is not None:
        where.append(infrastructure.c.row_version == version)
    result = conn.execute(
        update(infrastructure)
        .where(*where)
        .values(properties=properties, updated_at=now, row_version=infrastructure.c.row_version + 1)
    )
    return result.rowcount == 1


def updated_at(conn: Connection) -> datetime | None:
    value = conn.execute(select(infrastructure.c.updated_at).where(infrastructure.c.id == _ID))
    result: datetime | None = value.scalar()
    return result
