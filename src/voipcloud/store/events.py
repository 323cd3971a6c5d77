"""The audit history: one row per change, written in the transaction of the change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Connection, Row, func, insert, or_, select
from sqlalchemy.sql.elements import ColumnElement

from voipcloud.domain.audit import EventFilter
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


def _filtered(flt: EventFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if flt.node_id is not None:
        where.append(events.c.node_id == flt.node_id)
    if flt.actor is not None:
        if ":" in flt.actor:
            where.append(events.c.actor == flt.actor)
        else:
            where.append(
                or_(
                    events.c.actor == flt.actor,
                    events.c.actor.endswith(":" + flt.actor, autoescape=True),
                )
            )
    if flt.operations:
        where.append(events.c.operation.in_(flt.operations))
    if flt.since is not None:
        where.append(events.c.at >= flt.since)
    if flt.until is not None:
        where.append(events.c.at < flt.until)
    return where


def search(conn: Connection, flt: EventFilter, *, limit: int, offset: int) -> Page[Event]:
    """The events the audit filters match, newest first."""
    where = _filtered(flt)
    total = conn.execute(select(func.count()).select_from(events).where(*where)).scalar_one()
    rows = conn.execute(
        select(events).where(*where).order_by(events.c.id.desc()).limit(limit).offset(offset)
    )
    return Page(items=[_event(r) for r in rows], total=total)


def matching(
    conn: Connection, flt: EventFilter, *, after_id: int = 0, batch: int = 1000
) -> Iterator[list[Event]]:
    """Every matching event, oldest first, in batches (keyset: no offset grows)."""
    where = _filtered(flt)
    while True:
        rows = conn.execute(
            select(events).where(*where, events.c.id > after_id).order_by(events.c.id).limit(batch)
        )
        found = [_event(r) for r in rows]
        if not found:
            return
        yield found
        after_id = found[-1].id
        if len(found) < batch:
            return
