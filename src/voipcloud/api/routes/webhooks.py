"""Webhooks: notifications of chosen events, signed, retried, with a delivery log.

Reading them (never their secrets) is for every account; changing them is for administrators
(permission `notifications`, domain/access.py). docs/operations.md, "Webhooks".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field, StrictBool

from voipcloud.api.deps import CanRead, permit
from voipcloud.api.errors import REFUSALS
from voipcloud.api.params import Whole
from voipcloud.api.schemas import OneLine, Strict
from voipcloud.domain.access import Permission
from voipcloud.domain.webhook_events import EVENT_NAMES
from voipcloud.services.webhooks import (
    MAX_SECRET,
    MAX_URL,
    MIN_SECRET,
    URL_PATTERN,
    DeliveryView,
    Webhook,
    WebhookService,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=REFUSALS)
CanManageWebhooks = Annotated[str, permit(Permission.NOTIFICATIONS)]
WebhookId = Annotated[Whole, Path(ge=1, le=2**31 - 1)]
EventName = Literal[
    "node.status_changed",
    "node.health_changed",
    "node.agent_lost",
    "node.agent_back",
    "rollout.finished",
    "rollout.stopped",
]
assert set(EventName.__args__) == set(EVENT_NAMES)  # type: ignore[attr-defined]


# what the service checks (services/webhooks.py), published: its address pattern (URL_PATTERN,
# the service's own); a secret without control characters, not starting or ending with a space
_SECRET_CHAR = r"[^\s\u0000-\u001f\u007f-\u009f]"  # noqa: S105 - a pattern
SECRET_PATTERN = rf"^(?:{_SECRET_CHAR}(?:[^\u0000-\u001f\u007f-\u009f]*{_SECRET_CHAR})?)?$"


class WebhookCreate(Strict):
    url: str = Field(
        max_length=MAX_URL,
        examples=["https://hooks.example.com/voipcloud"],
        json_schema_extra={"pattern": URL_PATTERN},
    )
    secret: str = Field(
        min_length=MIN_SECRET,
        max_length=MAX_SECRET,
        description="Signs every delivery (HMAC-SHA256); write-only, never shown again.",
        json_schema_extra={"pattern": SECRET_PATTERN},
    )
    events: list[EventName] = Field(min_length=1, max_length=len(EVENT_NAMES))
    description: OneLine = Field(default="", max_length=255)
    enabled: StrictBool = True


class WebhookUpdate(Strict):
    url: str | None = Field(
        default=None, max_length=MAX_URL, json_schema_extra={"pattern": URL_PATTERN}
    )
    secret: str | None = Field(
        default=None,
        min_length=MIN_SECRET,
        max_length=MAX_SECRET,
        json_schema_extra={"pattern": SECRET_PATTERN},
    )
    events: list[EventName] | None = Field(default=None, min_length=1, max_length=len(EVENT_NAMES))
    description: OneLine | None = Field(default=None, max_length=255)
    enabled: StrictBool | None = None


class LastDelivery(BaseModel):
    delivery_id: int
    event: str
    state: str
    at: datetime
    last_status: int | None
    last_error: str | None


class WebhookPublic(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str
    enabled: bool
    secret_set: bool = True  # the secret itself is write-only
    created_at: datetime
    updated_at: datetime
    deliveries: dict[str, int]  # {"delivered", "failed", "pending"}
    last_delivery: LastDelivery | None


class WebhooksPublic(BaseModel):
    items: list[WebhookPublic]
    total: int


class AttemptPublic(BaseModel):
    at: datetime
    status: int | None
    response: str | None
    error: str | None
    duration_ms: int


class DeliveryPublic(BaseModel):
    id: int
    webhook_id: int
    event: str
    event_id: int | None
    state: str  # pending, delivered, failed
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status: int | None
    last_response: str | None  # the first KiB of the last answer
    last_error: str | None
    body: str  # the JSON sent
    attempt_log: list[AttemptPublic]


class DeliveriesPublic(BaseModel):
    items: list[DeliveryPublic]
    total: int


def _service(request: Request) -> WebhookService:
    service: WebhookService = request.app.state.webhooks
    return service


def webhook_public(hook: Webhook) -> WebhookPublic:
    last = None
    if hook.last is not None:
        d = hook.last
        last = LastDelivery(
            delivery_id=d.id,
            event=d.event,
            state=d.state,
            at=d.finished_at or d.created_at,
            last_status=d.last_status,
            last_error=d.last_error,
        )
    return WebhookPublic(
        id=hook.id,
        url=hook.url,
        events=hook.events,
        description=hook.description,
        enabled=hook.enabled,
        created_at=hook.created_at,
        updated_at=hook.updated_at,
        deliveries={"delivered": hook.delivered, "failed": hook.failed, "pending": hook.pending},
        last_delivery=last,
    )


def delivery_public(view: DeliveryView) -> DeliveryPublic:
    d = view.delivery
    return DeliveryPublic(
        id=d.id,
        webhook_id=d.webhook_id,
        event=d.event,
        event_id=d.event_id,
        state=d.state,
        attempts=d.attempts,
        created_at=d.created_at,
        next_attempt_at=d.next_attempt_at,
        finished_at=d.finished_at,
        last_status=d.last_status,
        last_response=d.last_response,
        last_error=d.last_error,
        body=d.body,
        attempt_log=[
            AttemptPublic(
                at=a.at,
                status=a.status,
                response=a.response,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in view.attempts
        ],
    )


@router.get("", response_model=WebhooksPublic)
def list_webhooks(request: Request, _reader: CanRead) -> WebhooksPublic:
    """Every webhook with its delivery counts and last delivery; never the secrets."""
    hooks = _service(request).list_all()
    return WebhooksPublic(items=[webhook_public(h) for h in hooks], total=len(hooks))


@router.post("", response_model=WebhookPublic, status_code=201)
def create_webhook(request: Request, body: WebhookCreate, _admin: CanManageWebhooks) -> Any:
    """Add a webhook; it gets the chosen events that happen from now on."""
    hook = _service(request).create(**body.model_dump())
    return webhook_public(hook)


@router.get("/{id}", response_model=WebhookPublic)
def get_webhook(request: Request, id: WebhookId, _reader: CanRead) -> WebhookPublic:
    """One webhook."""
    return webhook_public(_service(request).get(id))


@router.patch("/{id}", response_model=WebhookPublic)
def update_webhook(
    request: Request,
    id: WebhookId,
    body: WebhookUpdate,
    _admin: CanManageWebhooks,
) -> WebhookPublic:
    """Change a webhook; a new `secret` signs from the next attempt on."""
    changes = body.model_dump(exclude_unset=True)
    return webhook_public(_service(request).update(id, changes))


@router.delete("/{id}", status_code=204)
def delete_webhook(request: Request, id: WebhookId, _admin: CanManageWebhooks) -> Response:
    """Delete a webhook with its delivery log; pending deliveries are dropped."""
    _service(request).delete(id)
    return Response(status_code=204)


@router.post("/{id}/test", response_model=DeliveryPublic, status_code=202)
def send_test(
    request: Request,
    id: WebhookId,
    actor: CanManageWebhooks,
) -> DeliveryPublic:
    """Queue a test delivery (event `webhook.test`, one attempt, no retry); the worker sends it
    at once. Follow it in the delivery log."""
    delivery = _service(request).send_test(id, actor=actor)
    return delivery_public(DeliveryView(delivery, []))


@router.get("/{id}/deliveries", response_model=DeliveriesPublic)
def list_deliveries(
    request: Request,
    id: WebhookId,
    _reader: CanRead,
    limit: Annotated[Whole, Query(ge=1, le=200)] = 50,
    offset: Annotated[Whole, Query(ge=0, le=1_000_000)] = 0,
) -> DeliveriesPublic:
    """The delivery log, newest first: each delivery's state, attempts and last answer."""
    page = _service(request).deliveries(id, limit=limit, offset=offset)
    return DeliveriesPublic(items=[delivery_public(v) for v in page.items], total=page.total)
