"""The audit history: one row per change, written in the transaction of the change."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Row, func, insert, select
from sqlalchemy.sql.elements import ColumnElement

from voipcloud.domain.model import Event, Page
from voipcloud.store.tables import events


def append(
    conn: Connection,
    *,
    at: datetime,
    actor: str,
    node_id: int | None,
    operation: str,
    status_before: str | None = None,
    status_after: str | None = None,
    reason: str | None = None,
) -> None:
    conn.execute(
        insert(events).values(
            at=at,
            actor=actor,
            node_id=node_id,
            operation=operation,
            status_before=status_before,
            status_after=status_after,
            reason=reason,
        )
    )


def _event(row: Row[tuple[int, ...]]) -> Event:
    m = row._mapping
    return Event(
        id=m["id"],
        at=m["at"],
        actor=m["actor"],
        node_id=m["node_id"],
        operation=m["operation"],
        status_before=m["status_before"],
        status_after=m["status_after"],
        reason=m["reason"],
    )


def page(conn: Connection, *, node_id: int | None, limit: int, offset: int) -> Page[Event]:
    where: list[ColumnElement[bool]] = [] if node_id is None else [events.c.node_id == node_id]
    total = conn.execute(select(func.count()).select_from(events).where(*where)).scalar_one()
    rows = conn.execute(
        select(events).where(*where).order_by(events.c.id.desc()).limit(limit).offset(offset)
    )
    return Page(items=[_event(r) for r in rows], total=total)


def status_changes(conn: Connection, node_id: int) -> list[Event]:
    """Every event of the node that changed its status, oldest first."""
    rows = conn.execute(
        select(events)
        .where(events.c.node_id == node_id, events.c.status_before != events.c.status_after)
        .order_by(events.c.id)
    )
    return [_event(r) for r in rows]
