"""Webhook rows: webhooks, their deliveries (the outbox), each attempt, the dispatcher's place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, delete, exists, func, insert, select, update
from sqlalchemy.orm import aliased

from voipcloud.domain.model import Page
from voipcloud.store.event_tail import TailState, newest_id
from voipcloud.store.tables import (
    nodes,
    webhook_attempts,
    webhook_deliveries,
    webhook_outbox,
    webhooks,
)
from voipcloud.store.types import utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class WebhookRow:
    id: int
    url: str
    events: list[str]
    description: str
    enabled: bool
    after_event_id: int
    created_at: datetime
    updated_at: datetime
    secret_encrypted: bytes


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    status: int | None
    response: str | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    webhook_id: int
    event_id: int | None
    event: str
    queue: str
    body: str
    state: str
    retry: bool
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    last_status: int | None
    last_response: str | None
    last_error: str | None


def _webhook(m: RowMapping) -> WebhookRow:
    return WebhookRow(
        id=m["id"],
        url=m["url"],
        events=list(m["events"] or []),
        description=m["description"] or "",
        enabled=bool(m["enabled"]),
        after_event_id=m["after_event_id"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        secret_encrypted=bytes(m["secret_encrypted"]),
    )


def _delivery(m: RowMapping) -> Delivery:
    return Delivery(**{name: m[name] for name in Delivery.__slots__})


def insert_webhook(conn: Connection, *, values: dict[str, Any], now: datetime) -> int:
    result = conn.execute(
        insert(webhooks).values(
            **values, after_event_id=newest_id(conn), created_at=now, updated_at=now
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def update_webhook(conn: Connection, webhook_id: int, *, values: dict[str, Any]) -> bool:
    found = conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(**values))
    return bool(found.rowcount)


def delete_webhook(conn: Connection, webhook_id: int) -> bool:
    attempts = select(webhook_deliveries.c.id).where(webhook_deliveries.c.webhook_id == webhook_id)
    conn.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(attempts)))
    conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
    return bool(conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id)).rowcount)


def get_webhook(
    conn: Connection, webhook_id: int, *, for_update: bool = False
) -> WebhookRow | None:
    """The webhook; `for_update`: its row locked until the transaction ends (PostgreSQL; a
    SQLite write transaction holds the database's one write lock already)."""
    query = select(webhooks).where(webhooks.c.id == webhook_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return _webhook(row) if row else None


def list_webhooks(conn: Connection, *, enabled_only: bool = False) -> list[WebhookRow]:
    query = select(webhooks).order_by(webhooks.c.id)
    if enabled_only:
        query = query.where(webhooks.c.enabled.is_(True))
    return [_webhook(m) for m in conn.execute(query).mappings()]


def delivery_counts(conn: Connection) -> dict[tuple[int, str], int]:
    d = webhook_deliveries
    query = select(d.c.webhook_id, d.c.state, func.count()).group_by(d.c.webhook_id, d.c.state)
    return {(w, s): n for w, s, n in conn.execute(query)}


def last_deliveries(conn: Connection) -> dict[int, Delivery]:
    d = webhook_deliveries
    newest = select(func.max(d.c.id)).group_by(d.c.webhook_id)
    return {
        m["webhook_id"]: _delivery(m)
        for m in conn.execute(select(d).where(d.c.id.in_(newest))).mappings()
    }


def pending_total(conn: Connection) -> int:
    d = webhook_deliveries
    return int(
        conn.execute(select(func.count()).select_from(d).where(d.c.state == PENDING)).scalar_one()
    )


# --- the outbox ------------------------------------------------------------------------------


def load_outbox(conn: Connection, *, lock: bool) -> TailState:
    query = select(webhook_outbox).where(webhook_outbox.c.id == 1)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:  # the first round: from the oldest webhook's start, else from now on
        first = conn.execute(select(func.min(webhooks.c.after_event_id))).scalar()
        state = TailState(last_id=newest_id(conn) if first is None else int(first))
        save_outbox(conn, state, now=utcnow())
        return state
    return TailState.from_json(row["last_event_id"], row["gaps"])


def save_outbox(conn: Connection, state: TailState, *, now: datetime) -> None:
    values = {"last_event_id": state.last_id, "gaps": state.to_json(), "updated_at": now}
    found = conn.execute(update(webhook_outbox).where(webhook_outbox.c.id == 1).values(**values))
    if not found.rowcount:
        conn.execute(insert(webhook_outbox).values(id=1, **values))


def hostnames(conn: Connection, node_ids: set[int]) -> dict[int, str]:
    if not node_ids:
        return {}
    query = select(nodes.c.id, nodes.c.hostname).where(nodes.c.id.in_(sorted(node_ids)))
    return {int(i): str(h) for i, h in conn.execute(query)}


def insert_delivery(conn: Connection, **values: Any) -> int:
    result = conn.execute(insert(webhook_deliveries).values(**values))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def due(
    conn: Connection, *, now: datetime, limit: int, exclude: set[int]
) -> list[tuple[Delivery, WebhookRow]]:
    """Pending deliveries whose time has come and that head their queue (the earlier ones of
    the same webhook and queue are finished): one node's events go out in order."""
    d, w = webhook_deliveries, webhooks
    earlier = aliased(webhook_deliveries)
    blocked = exists().where(
        earlier.c.state == PENDING,
        earlier.c.webhook_id == d.c.webhook_id,
        earlier.c.queue == d.c.queue,
        earlier.c.id < d.c.id,
    )
    query = (
        select(d, w.c.url, w.c.secret_encrypted, w.c.enabled, w.c.events.label("hook_events"))
        .select_from(d.join(w, w.c.id == d.c.webhook_id))
        .where(d.c.state == PENDING, w.c.enabled.is_(True), d.c.next_attempt_at <= now)
        .where(~blocked)
        .order_by(d.c.next_attempt_at, d.c.id)
        .limit(limit + len(exclude))
    )
    found = []
    for m in conn.execute(query).mappings():
        if m["id"] in exclude:
            continue
        hook = WebhookRow(
            id=m["webhook_id"],
            url=m["url"],
            events=list(m["hook_events"] or []),
            description="",
            enabled=True,
            after_event_id=0,
            created_at=m["created_at"],
            updated_at=m["created_at"],
            secret_encrypted=bytes(m["secret_encrypted"]),
        )
        found.append((_delivery(m), hook))
        if len(found) >= limit:
            break
    return found


def get_delivery(conn: Connection, delivery_id: int) -> Delivery | None:
    d = webhook_deliveries
    row = conn.execute(select(d).where(d.c.id == delivery_id)).mappings().first()
    return _delivery(row) if row else None


def record_attempt(
    conn: Connection, delivery: Delivery, attempt: Attempt, *, values: dict[str, Any]
) -> bool:
    """The attempt, and the delivery's new state (only while it is still pending)."""
    d = webhook_deliveries
    changed = conn.execute(
        update(d).where(and_(d.c.id == delivery.id, d.c.state == PENDING)).values(**values)
    )
    if not changed.rowcount:
        return False
    conn.execute(
        insert(webhook_attempts).values(
            delivery_id=delivery.id,
            at=attempt.at,
            status=attempt.status,
            response=attempt.response,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
        )
    )
    return True


def deliveries_page(
    conn: Connection, webhook_id: int, *, limit: int, offset: int
) -> Page[Delivery]:
    d = webhook_deliveries
    total = conn.execute(
        select(func.count()).select_from(d).where(d.c.webhook_id == webhook_id)
    ).scalar_one()
    rows = conn.execute(
        select(d)
        .where(d.c.webhook_id == webhook_id)
        .order_by(d.c.id.desc())
        .limit(limit)
        .offset(offset)
    ).mappings()
    return Page(items=[_delivery(m) for m in rows], total=total)


def attempts_of(conn: Connection, delivery_ids: list[int]) -> dict[int, list[Attempt]]:
    if not delivery_ids:
        return {}
    a = webhook_attempts
    found: dict[int, list[Attempt]] = {i: [] for i in delivery_ids}
    query = select(a).where(a.c.delivery_id.in_(delivery_ids)).order_by(a.c.id)
    for m in conn.execute(query).mappings():
        found[m["delivery_id"]].append(
            Attempt(
                at=m["at"],
                status=m["status"],
                response=m["response"],
                error=m["error"],
                duration_ms=m["duration_ms"],
            )
        )
    return found


def prune(conn: Connection, webhook_id: int, *, keep: int) -> int:
    """Finished deliveries beyond the newest `keep` of a webhook (their attempts with them)."""
    d = webhook_deliveries
    cut = conn.execute(
        select(d.c.id)
        .where(d.c.webhook_id == webhook_id)
        .order_by(d.c.id.desc())
        .offset(keep)
        .limit(1)
    ).scalar()
    if cut is None:
        return 0
    old = select(d.c.id).where(d.c.webhook_id == webhook_id, d.c.id <= cut, d.c.state != PENDING)
    conn.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(old)))
    return int(
        conn.execute(
            delete(d).where(d.c.webhook_id == webhook_id, d.c.id <= cut, d.c.state != PENDING)
        ).rowcount
    )
