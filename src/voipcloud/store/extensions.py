"""The extensions registry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select

from voipcloud.domain.model import Extension, Page
from voipcloud.store.tables import extensions


def count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(extensions)).scalar_one()


def exists(conn: Connection, number: str) -> bool:
    return (
        conn.execute(select(extensions.c.number).where(extensions.c.number == number)).first()
        is not None
    )


def page(conn: Connection, *, limit: int, offset: int) -> Page[Extension]:
    rows = conn.execute(
        select(extensions).order_by(extensions.c.number).limit(limit).offset(offset)
    )
    items = [Extension(r.number, r.label, r.created_at) for r in rows]
    return Page(items=items, total=count(conn))


def add(conn: Connection, *, number: str, label: str, now: datetime) -> None:
    conn.execute(insert(extensions).values(number=number, label=label, created_at=now))


def remove(conn: Connection, number: str) -> bool:
    return conn.execute(delete(extensions).where(extensions.c.number == number)).rowcount == 1
