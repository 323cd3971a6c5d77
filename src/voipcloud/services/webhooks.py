"""Notifications: webhooks on chosen events, delivered from an outbox by a background worker.

The event log is the source: the dispatcher reads new events past its place
(`webhook_outbox`, store/event_tail.py), turns each one a webhook subscribes to into a delivery
row with its JSON body fixed, and moves its place on, all in one transaction: so every event
gets exactly one delivery per webhook. The worker then POSTs each due delivery that heads its
queue (a node's events go out one after the other, in order), signs it, records the attempt
and retries failures with exponential backoff until a bounded time has passed. A delivery is
marked delivered after a 2xx answer; a controller that stops between the answer and that
record sends it again after restart (at-least-once over crashes: receivers dedupe on
`event_id`). Nothing of this runs in an administrator's request: a slow receiver costs a
waiting coroutine of the worker, not a request thread. docs/operations.md, "Webhooks".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from sqlalchemy import Connection

from voipcloud import __version__
from voipcloud.domain.errors import (
    DatabaseUnavailable,
    FieldError,
    InvalidInput,
    NotFound,
    RuleViolation,
)
from voipcloud.domain.model import Page
from voipcloud.domain.validation import check_text, sanitize_text
from voipcloud.domain.webhook_events import (
    AGENT_BACK,
    AGENT_LOST,
    EVENT_NAMES,
    HEALTH_CHANGED,
    ROLLOUT_FINISHED,
    ROLLOUT_STOPPED,
    STATUS_CHANGED,
    TEST_REFUSED_RULE,
    test_refusal,
)
from voipcloud.services.context import Context
from voipcloud.store import event_tail
from voipcloud.store import maintenance as maintenance_rows
from voipcloud.store import webhooks as rows
from voipcloud.store.webhooks import DELIVERED, FAILED, PENDING, Attempt, Delivery, WebhookRow

if TYPE_CHECKING:  # httpx (with the rich and click it imports) loads with the first delivery
    import httpx

log = logging.getLogger("voipcloud.webhooks")

TEST = "webhook.test"
# the event log's operations that are webhook events by themselves
BY_OPERATION = {
    "role-health": HEALTH_CHANGED,
    "agent-lost": AGENT_LOST,
    "agent-back": AGENT_BACK,
    "rollout-finished": ROLLOUT_FINISHED,
    "rollout-stopped": ROLLOUT_STOPPED,
}
SIGNATURE_HEADER = "X-Voipcloud-Signature"
MAX_URL = 2048
MIN_SECRET, MAX_SECRET = 16, 256
MAX_RESPONSE = 1024  # bytes of an answer kept with the attempt
KEEP_FINISHED = 1000  # finished deliveries kept per webhook (the log)
_ROLLOUT = re.compile(r"^rollout (?P<id>\d+)\b")
_HEALTH = re.compile(
    r"^(?P<role>[^:]+): (?P<before>\w+) → (?P<after>\w+)(?: \((?P<message>.*)\))?$"
)


def event_name(
    operation: str, node_id: int | None, status_before: str | None, status_after: str | None
) -> str | None:
    """The webhook event an event-log entry is, if any."""
    if operation in BY_OPERATION:
        return BY_OPERATION[operation]
    if node_id is not None and status_before and status_after and status_before != status_after:
        return STATUS_CHANGED
    return None


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-Voipcloud-Signature` value: HMAC-SHA256 of "<t>.<body>" with the secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payload(event: Any, name: str, hostname: str | None) -> dict[str, Any]:
    """The JSON body of a delivery (docs/operations.md has the schema)."""
    data: dict[str, Any] = {
        "operation": event.operation,
        "status_before": event.status_before,
        "status_after": event.status_after,
        "reason": event.reason,
    }
    if name == HEALTH_CHANGED and event.reason:
        found = _HEALTH.match(event.reason)
        if found:
            data |= {
                "role": found["role"],
                "health_before": found["before"],
                "health_after": found["after"],
                "message": found["message"],
            }
    if name in (ROLLOUT_FINISHED, ROLLOUT_STOPPED) and event.reason:
        found_id = _ROLLOUT.match(event.reason)
        if found_id:  # the rollout's own events say "rollout N ..." first
            data["rollout_id"] = int(found_id["id"])
    node = None if event.node_id is None else {"id": event.node_id, "hostname": hostname}
    return {
        "event_id": event.id,
        "event": name,
        "occurred_at": _iso(event.at),
        "actor": event.actor,
        "node": node,
        "data": data,
    }


def _body(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=False)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first: float = 5.0  # seconds before the first retry; doubling
    longest: float = 600.0  # the longest wait between two attempts
    give_up: float = 86400.0  # no attempt later than this after the event
    timeout: float = 10.0  # one attempt

    def delay(self, attempts: int) -> float:
        return float(min(self.first * 2 ** max(attempts - 1, 0), self.longest))


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    url: str
    events: list[str]
    description: str
    enabled: bool
    created_at: datetime
    updated_at: datetime
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    last: Delivery | None = None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: Delivery
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Result:
    """What one attempt got."""

    at: datetime
    status: int | None
    response: str | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


# A receiver's address: http(s), a host name of letters, digits and hyphens between dots (an
# IPv4 address is one), an optional port, then any path, query or fragment of printable ASCII.
# The API publishes this very pattern (api/routes/webhooks.py): what it says is refused is.
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
URL_PATTERN = rf"^https?://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?(?::{_PORT})?(?:[/?#][!-~]*)?$"
_URL = re.compile(URL_PATTERN)


def _check_url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an http:// or https:// address")
    url: str = value.strip()
    if len(url) > MAX_URL:
        raise ValueError(f"must be at most {MAX_URL} characters")
    check_text(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"is not a valid address ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// address with a host name")
    if any(c.isspace() for c in url):
        raise ValueError("must not contain spaces")
    if not _URL.match(url):
        raise ValueError(
            "must be an http:// or https:// address whose host name is letters, digits and "
            "hyphens between dots (no user name), with an optional port, then a path of "
            "printable ASCII characters"
        )
    return url


def _check_events(events: Any) -> list[str]:
    if not isinstance(events, list) or not events:
        raise ValueError(f"choose at least one of {', '.join(EVENT_NAMES)}")
    unknown = [e for e in events if e not in EVENT_NAMES]
    if unknown:
        raise ValueError(f"unknown event {unknown[0]!r}; known: {', '.join(EVENT_NAMES)}")
    return [e for e in EVENT_NAMES if e in events]  # the documented order, no repeats


def _check_secret(secret: Any) -> str:
    if not isinstance(secret, str) or not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise ValueError(f"must be {MIN_SECRET} to {MAX_SECRET} characters")
    check_text(secret)
    if secret != secret.strip():
        raise ValueError("must not start or end with a space")
    return secret


def _check_description(text: Any) -> str:
    if not isinstance(text, str) or len(text) > 255:
        raise ValueError("must be at most 255 characters")
    return str(check_text(text)).strip()


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "url": _check_url,
    "events": _check_events,
    "secret": _check_secret,
    "description": _check_description,
}


def _validated(values: dict[str, Any], *, required: tuple[str, ...]) -> dict[str, Any]:
    errors: list[FieldError] = []
    clean: dict[str, Any] = {}
    for name in required:
        if values.get(name) is None:
            errors.append(FieldError(("body", name), "is required"))
    for name, value in values.items():
        if value is None:
            continue
        check = _CHECKS.get(name)
        if check is None:
            if name == "enabled":
                if not isinstance(value, bool):
                    errors.append(FieldError(("body", name), "must be true or false"))
                else:
                    clean[name] = value
            continue
        try:
            clean[name] = check(value)
        except ValueError as exc:
            errors.append(FieldError(("body", name), str(exc)))
    if errors:
        raise InvalidInput(errors)
    return clean


class _Muted:
    """Notifications are muted for a node in maintenance: an event about a node that was in
    maintenance when it happened makes no delivery. "When it happened" is read from the event
    log itself (the last Enter/Leave Maintenance event before it), so a dispatcher running
    late still mutes exactly the events of the maintenance window."""

    def __init__(self, conn: Connection, found: list[Any]) -> None:
        about = {e.node_id for e in found if e.node_id is not None}
        first = min((e.id for e in found), default=0)
        self._state = maintenance_rows.in_maintenance_before(conn, about, first)

    def silences(self, event: Any) -> bool:
        """Call in event-id order: follows the node's Enter/Leave Maintenance events."""
        if event.node_id is None:
            return False
        if event.operation in (maintenance_rows.ENTER, maintenance_rows.LEAVE):
            self._state[event.node_id] = event.operation == maintenance_rows.ENTER
            return False
        return self._state.get(event.node_id, False)


class WebhookService:
    def __init__(self, ctx: Context, policy: RetryPolicy | None = None) -> None:
        self._ctx = ctx
        self.policy = policy or RetryPolicy()
        self._rounds = 0
        self.on_queued: Callable[[], None] | None = None  # wakes the worker

    # --- administration --------------------------------------------------------------------

    def create(self, *, url: Any, secret: Any, events: Any, **more: Any) -> Webhook:
        clean = _validated(
            {"url": url, "secret": secret, "events": events, **more},
            required=("url", "secret", "events"),
        )
        values = {
            "url": clean["url"],
            "events": clean["events"],
            "secret_encrypted": self._ctx.box.encrypt(clean.pop("secret")),
            "description": clean.get("description", ""),
            "enabled": clean.get("enabled", True),
        }
        with self._ctx.db.write() as conn:
            webhook_id = rows.insert_webhook(conn, values=values, now=self._ctx.clock())
        return self.get(webhook_id)

    def update(self, webhook_id: int, changes: dict[str, Any]) -> Webhook:
        clean = _validated(changes, required=())
        values: dict[str, Any] = {k: v for k, v in clean.items() if k != "secret"}
        if "secret" in clean:
            values["secret_encrypted"] = self._ctx.box.encrypt(clean["secret"])
        with self._ctx.db.write() as conn:
            current = rows.get_webhook(conn, webhook_id) if 0 < webhook_id < 2**31 else None
            if current is None:
                raise NotFound(f"Webhook {webhook_id} does not exist.")
            if values.get("enabled") and not current.enabled:
                # enabled again: from now on, not the events it missed while off
                values["after_event_id"] = event_tail.newest_id(conn)
            if values:
                values["updated_at"] = self._ctx.clock()
                rows.update_webhook(conn, webhook_id, values=values)
        return self.get(webhook_id)

    def delete(self, webhook_id: int) -> None:
        with self._ctx.db.write() as conn:
            if not (0 < webhook_id < 2**31 and rows.delete_webhook(conn, webhook_id)):
                raise NotFound(f"Webhook {webhook_id} does not exist.")

    def list_all(self) -> list[Webhook]:
        with self._ctx.db.read() as conn:
            hooks = rows.list_webhooks(conn)
            counts = rows.delivery_counts(conn)
            last = rows.last_deliveries(conn)
        return [self._public(h, counts, last.get(h.id)) for h in hooks]

    def get(self, webhook_id: int) -> Webhook:
        with self._ctx.db.read() as conn:
            hook = rows.get_webhook(conn, webhook_id) if 0 < webhook_id < 2**31 else None
            if hook is None:
                raise NotFound(f"Webhook {webhook_id} does not exist.")
            counts = rows.delivery_counts(conn)
            last = rows.last_deliveries(conn).get(webhook_id)
        return self._public(hook, counts, last)

    @staticmethod
    def _public(
        hook: WebhookRow, counts: dict[tuple[int, str], int], last: Delivery | None
    ) -> Webhook:
        return Webhook(
            id=hook.id,
            url=hook.url,
            events=hook.events,
            description=hook.description,
            enabled=hook.enabled,
            created_at=hook.created_at,
            updated_at=hook.updated_at,
            delivered=counts.get((hook.id, DELIVERED), 0),
            failed=counts.get((hook.id, FAILED), 0),
            pending=counts.get((hook.id, PENDING), 0),
            last=last,
        )

    def deliveries(self, webhook_id: int, *, limit: int, offset: int) -> Page[DeliveryView]:
        self.get(webhook_id)  # 404 for an unknown webhook
        with self._ctx.db.read() as conn:
            page = rows.deliveries_page(conn, webhook_id, limit=limit, offset=offset)
            attempts = rows.attempts_of(conn, [d.id for d in page.items])
        return Page(
            items=[DeliveryView(d, attempts.get(d.id, [])) for d in page.items], total=page.total
        )

    def send_test(self, webhook_id: int, *, actor: str) -> Delivery:
        """Queue one test delivery (one attempt, no retries); the worker sends it at once.
        Refused (`webhook-disabled`) for a disabled webhook, which sends nothing: the test
        would wait, unsent, until the webhook is enabled."""
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            # locked: a disable committed meanwhile cannot leave a test queued behind it
            valid = 0 < webhook_id < 2**31
            hook = rows.get_webhook(conn, webhook_id, for_update=True) if valid else None
            if hook is None:
                raise NotFound(f"Webhook {webhook_id} does not exist.")
            refused = test_refusal(enabled=hook.enabled)
            if refused is not None:
                raise RuleViolation(TEST_REFUSED_RULE, refused)
            document = {
                "event_id": None,
                "event": TEST,
                "occurred_at": _iso(now),
                "actor": actor,
                "node": None,
                "data": {"message": "A test delivery from voipcloud.", "webhook_id": hook.id},
            }
            delivery_id = rows.insert_delivery(
                conn,
                webhook_id=hook.id,
                event_id=None,
                event=TEST,
                queue="test",
                body=_body(document),
                state=PENDING,
                retry=False,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            delivery = rows.get_delivery(conn, delivery_id)
        assert delivery is not None
        if self.on_queued is not None:
            self.on_queued()
        return delivery

    # --- the outbox ----------------------------------------------------------------------

    def dispatch(self, *, max_batches: int = 10) -> int:
        """Turn new events into deliveries; returns how many were queued."""
        queued = 0
        for _ in range(max_batches):
            created, more = self._dispatch_batch()
            queued += created
            if not more:
                break
        self._rounds += 1
        if self._rounds % 60 == 1:
            self.prune()
        return queued

    def _dispatch_batch(self) -> tuple[int, bool]:
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            newest = event_tail.newest_id(conn)  # read before the webhooks (see below)
            state = rows.load_outbox(conn, lock=True)
            hooks = rows.list_webhooks(conn, enabled_only=True)
            if not hooks:
                # nobody listens: skip ahead. A webhook added after `newest` was read starts
                # after it (its after_event_id), so nothing it wants is skipped.
                if state.last_id != newest or state.gaps:
                    rows.save_outbox(conn, event_tail.TailState(last_id=newest), now=now)
                return 0, False
            found, after = event_tail.read(conn, state, now=time.time())
            muted = _Muted(conn, found)
            wanted = []
            for event in found:
                name = event_name(
                    event.operation, event.node_id, event.status_before, event.status_after
                )
                if muted.silences(event) or name is None:
                    continue
                targets = [h for h in hooks if name in h.events and event.id > h.after_event_id]
                if targets:
                    wanted.append((event, name, targets))
            names = rows.hostnames(conn, {e.node_id for e, _, _ in wanted if e.node_id})
            created = 0
            for event, name, targets in wanted:
                body = _body(payload(event, name, names.get(event.node_id or 0)))
                queue = f"node:{event.node_id}" if event.node_id is not None else name
                for hook in targets:
                    rows.insert_delivery(
                        conn,
                        webhook_id=hook.id,
                        event_id=event.id,
                        event=name,
                        queue=queue,
                        body=body,
                        state=PENDING,
                        retry=True,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    created += 1
            if after != state:
                rows.save_outbox(conn, after, now=now)
        return created, len(found) >= event_tail.BATCH

    def due(self, *, limit: int, exclude: set[int]) -> list[tuple[Delivery, str, str | None]]:
        """(delivery, url, secret) of the deliveries to attempt now."""
        with self._ctx.db.read() as conn:
            found = rows.due(conn, now=self._ctx.clock(), limit=limit, exclude=exclude)
        return [(d, hook.url, self._ctx.box.decrypt(hook.secret_encrypted)) for d, hook in found]

    def record(self, delivery: Delivery, result: Result) -> str:
        """Store one attempt; returns the delivery's state after it."""
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_status": result.status,
            "last_response": result.response,
            "last_error": result.error,
        }
        if result.ok:
            values |= {"state": DELIVERED, "finished_at": result.at, "next_attempt_at": None}
        else:
            wait = self.policy.delay(attempts)
            retry_at = result.at + timedelta(seconds=wait)
            deadline = delivery.created_at + timedelta(seconds=self.policy.give_up)
            if not delivery.retry or retry_at > deadline:
                values |= {"state": FAILED, "finished_at": result.at, "next_attempt_at": None}
            else:
                values["next_attempt_at"] = retry_at
        attempt = Attempt(
            at=result.at,
            status=result.status,
            response=result.response,
            error=result.error,
            duration_ms=result.duration_ms,
        )
        with self._ctx.db.write() as conn:
            rows.record_attempt(conn, delivery, attempt, values=values)
        return str(values.get("state", PENDING))

    def prune(self) -> None:
        with self._ctx.db.write() as conn:
            for hook in rows.list_webhooks(conn):
                rows.prune(conn, hook.id, keep=KEEP_FINISHED)

    def pending_total(self) -> int:
        with self._ctx.db.read() as conn:
            return rows.pending_total(conn)


async def attempt(
    client: httpx.AsyncClient,
    delivery: Delivery,
    url: str,
    secret: str | None,
    *,
    timeout: float,
    clock: Callable[[], datetime],
) -> Result:
    """POST one delivery, signed; never raises for what the receiver or network does."""
    import httpx  # loaded already: the client is one

    at = clock()
    started = time.monotonic()
    if secret is None:
        return Result(at, None, None, "the secret cannot be decrypted with this key", 0)
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"voipcloud-webhooks/{__version__}",
        "X-Voipcloud-Event": delivery.event,
        "X-Voipcloud-Delivery": str(delivery.id),
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
    }
    status: int | None = None
    response: str | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout * 2):  # a whole attempt, however slow the drip
            async with client.stream(
                "POST", url, content=body, headers=headers, timeout=timeout
            ) as answer:
                status = answer.status_code
                kept = bytearray()
                async for chunk in answer.aiter_raw():
                    kept += chunk
                    if len(kept) >= MAX_RESPONSE:
                        break
                response = sanitize_text(
                    bytes(kept[:MAX_RESPONSE]).decode("utf-8", "replace"), multiline=True
                )
    except TimeoutError:
        error = f"no complete answer within {timeout * 2:g} s"
    except httpx.TimeoutException as exc:
        error = f"timed out ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
    if error is None and status is not None and not 200 <= status < 300:
        error = f"answered HTTP {status}"
    duration = int((time.monotonic() - started) * 1000)
    return Result(at, status, response, error, duration)


class WebhookWorker:
    """The background worker of `voipcloud serve`: dispatch, then attempt what is due, at most
    `concurrency` at a time; woken at once by new node changes and test deliveries."""

    def __init__(
        self,
        service: WebhookService,
        *,
        clock: Callable[[], datetime],
        concurrency: int = 8,
        interval: float = 1.0,
        on_attempt: Callable[[Result], None] | None = None,
    ) -> None:
        self.service = service
        self._clock = clock
        self.concurrency = concurrency
        self.interval = interval
        self.on_attempt = on_attempt
        self._inflight: dict[int, asyncio.Task[None]] = {}
        # several controllers: a round runs only where this answers truthy (services/cluster.py)
        self.gate: Callable[[], object] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None  # made for the first delivery due

    def wake(self, *_: object) -> None:
        """Thread-safe: run a round now (after a commit, a queued test)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def run(
        self, *, started: asyncio.Event, report: Callable[[str, DatabaseUnavailable], None]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.service.on_queued = self.wake
        await started.wait()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
                try:
                    if self.gate is not None and not await anyio.to_thread.run_sync(self.gate):
                        continue
                    await self._round()
                except DatabaseUnavailable as exc:
                    report("webhook deliveries", exc)
                except Exception:  # a bug: keep the loop alive
                    log.exception("webhook round failed")
        finally:
            for task in list(self._inflight.values()):
                task.cancel()
            for task in list(self._inflight.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            client, self._client = self._client, None
            if client is not None:
                await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        """The worker's HTTP client, made (and httpx imported) when a first delivery is due:
        a controller without webhooks never loads httpx, rich and click (docs/benchmarks.md)."""
        if self._client is None:
            import httpx

            limits = httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=4)
            self._client = httpx.AsyncClient(limits=limits, follow_redirects=False)
        return self._client

    async def _round(self) -> None:
        await anyio.to_thread.run_sync(self.service.dispatch)
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return
        due = await anyio.to_thread.run_sync(
            lambda: self.service.due(limit=free, exclude=set(self._inflight))
        )
        for delivery, url, secret in due:
            self._inflight[delivery.id] = asyncio.create_task(
                self._deliver(self._http(), delivery, url, secret)
            )

    async def _deliver(
        self, client: httpx.AsyncClient, delivery: Delivery, url: str, secret: str | None
    ) -> None:
        try:
            result = await attempt(
                client,
                delivery,
                url,
                secret,
                timeout=self.service.policy.timeout,
                clock=self._clock,
            )
            if self.on_attempt is not None:
                self.on_attempt(result)
            await anyio.to_thread.run_sync(self.service.record, delivery, result)
        except DatabaseUnavailable as exc:  # not recorded: it stays due and is sent again
            log.warning("webhook delivery %s not recorded: %s", delivery.id, exc.reason)
        except Exception:
            log.exception("webhook delivery %s failed", delivery.id)
        finally:
            self._inflight.pop(delivery.id, None)
            if self._wake is not None:
                self._wake.set()  # the next of its queue may go now
