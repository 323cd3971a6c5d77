"""The retry schedule of a webhook delivery, driven through the service with a fake clock:
5 s doubling to 10 min between attempts, given up once the next try would be past 24 h; a
2xx ends it; a test delivery is tried once. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet

from voipcloud.services.context import Context
from voipcloud.services.secrets_box import SecretBox
from voipcloud.services.webhooks import Result, RetryPolicy, WebhookService
from voipcloud.store import events
from voipcloud.store import webhooks as rows
from voipcloud.store.database import Database

SECRET = "retry-secret-0123456789"


def test_backoff_doubles_to_ten_minutes_and_gives_up_after_a_day(database_url: str) -> None:
    db = Database(database_url)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    ctx = Context(db=db, box=SecretBox(Fernet.generate_key()), clock=lambda: now[0])
    service = WebhookService(ctx, RetryPolicy())
    try:
        hook = service.create(url="http://127.0.0.1:9/x", secret=SECRET, events=["node.agent_lost"])
        with db.write() as conn:
            events.append(conn, at=now[0], actor="controller", node_id=None, operation="agent-lost")
        assert service.dispatch() == 1
        waits: list[float] = []
        states = []
        for _ in range(400):  # bounded: the schedule ends long before
            due = service.due(limit=10, exclude=set())
            if not due:
                with db.read() as conn:
                    delivery = rows.deliveries_page(conn, hook.id, limit=1, offset=0).items[0]
                if delivery.state != "pending":
                    break
                assert delivery.next_attempt_at is not None
                waits.append((delivery.next_attempt_at - now[0]).total_seconds())
                now[0] = delivery.next_attempt_at
                continue
            delivery, url, secret = due[0]
            assert secret == SECRET
            assert url == "http://127.0.0.1:9/x"
            states.append(service.record(delivery, Result(now[0], 503, "busy", "HTTP 503", 3)))
        assert waits[:9] == [5, 10, 20, 40, 80, 160, 320, 600, 600]
        assert max(waits) == 600
        assert states[-1] == "failed"
        assert all(s == "pending" for s in states[:-1])
        total = sum(waits)
        assert timedelta(hours=23, minutes=50) <= timedelta(seconds=total) <= timedelta(days=1)
        with db.read() as conn:
            delivery = rows.deliveries_page(conn, hook.id, limit=1, offset=0).items[0]
            attempts = rows.attempts_of(conn, [delivery.id])[delivery.id]
        assert delivery.attempts == len(states) == len(attempts)
        assert delivery.last_status == 503
        # a success at the first attempt ends a delivery; a test is tried once
        test = service.send_test(hook.id, actor="admin:admin")
        assert service.record(test, Result(now[0], 500, "", "HTTP 500", 1)) == "failed"
        with db.write() as conn:
            events.append(conn, at=now[0], actor="controller", node_id=None, operation="agent-lost")
        service.dispatch()
        delivery, _url, _secret = service.due(limit=10, exclude=set())[0]
        assert service.record(delivery, Result(now[0], 204, "", None, 1)) == "delivered"
        assert service.due(limit=10, exclude=set()) == []
    finally:
        db.dispose()
