"""The Webhooks page: add, edit and delete webhooks, their delivery log, "Send test".

Every account sees the webhooks and their log (never a secret); changes need the
`notifications` permission (administrators). The log polls itself while deliveries are pending.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Any

from fastapi import Query, Request, Response

from voipcloud.domain.access import Permission
from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.model import Page
from voipcloud.domain.numbers import parse_whole
from voipcloud.domain.webhook_events import EVENT_NAMES, EVENT_TITLES, test_refusal
from voipcloud.services.webhooks import DeliveryView, WebhookService
from voipcloud.web import flash
from voipcloud.web.deps import PageRead, posted, web_router
from voipcloud.web.forms import field_errors
from voipcloud.web.templating import render

router = web_router()
PostWebhooks = Annotated[str, posted(Permission.NOTIFICATIONS)]
FIELDS = {"url", "secret", "events", "description", "enabled"}
LOG_SIZE = 25


def _service(request: Request) -> WebhookService:
    service: WebhookService = request.app.state.webhooks
    return service


def _id(text: str) -> int:
    try:
        return parse_whole(text, low=1, high=2**31 - 1)
    except ValueError:
        return 0  # no such webhook: the service answers 404


async def _form(request: Request) -> tuple[dict[str, str], list[str]]:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    events = [v for v in form.getlist("events") if isinstance(v, str)]
    return values, events


def _list_page(
    request: Request,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "webhooks/index.html",
        nav="webhooks",
        status_code=status_code,
        webhooks=_service(request).list_all(),
        event_names=EVENT_NAMES,
        event_titles=EVENT_TITLES,
        values=values or {"events": list(EVENT_NAMES[:4]), "secret": secrets.token_urlsafe(24)},
        errors=errors or {},
    )


@router.get("/webhooks")
def webhooks_page(request: Request, _reader: PageRead) -> Response:
    """Every webhook; administrators also get the form to add one."""
    return _list_page(request)


@router.post("/webhooks")
async def add_webhook(request: Request, _admin: PostWebhooks) -> Response:
    values, events = await _form(request)
    try:
        hook = _service(request).create(
            url=values.get("url", ""),
            secret=values.get("secret", ""),
            events=events,
            description=values.get("description", ""),
        )
    except InvalidInput as exc:
        shown = {**values, "events": events}
        return _list_page(
            request, values=shown, errors=field_errors(exc, fields=FIELDS), status_code=422
        )
    return flash.redirect(
        request,
        f"/webhooks/{hook.id}",
        "success",
        f"Webhook {hook.id} added: it gets the chosen events from now on. Keep its secret: "
        "it is not shown again.",
    )


def _detail(
    request: Request,
    webhook_id: int,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    service = _service(request)
    hook = service.get(webhook_id)
    log = service.deliveries(webhook_id, limit=LOG_SIZE, offset=0)
    return render(
        request,
        "webhooks/detail.html",
        nav="webhooks",
        status_code=status_code,
        hook=hook,
        test_refused=test_refusal(enabled=hook.enabled),
        log=log,
        fp=_fingerprint(log),
        event_names=EVENT_NAMES,
        event_titles=EVENT_TITLES,
        values=values or {"url": hook.url, "events": hook.events, "description": hook.description},
        errors=errors or {},
    )


@router.get("/webhooks/{webhook_id}")
def webhook_page(request: Request, webhook_id: str, _reader: PageRead) -> Response:
    """One webhook: its settings, "Send test" and the delivery log."""
    return _detail(request, _id(webhook_id))


@router.get("/webhooks/{webhook_id}/deliveries")
def deliveries_fragment(
    request: Request,
    webhook_id: str,
    _reader: PageRead,
    fp: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The delivery log (polled by the page; 204 while nothing changed)."""
    number = _id(webhook_id)
    service = _service(request)
    log = service.deliveries(number, limit=LOG_SIZE, offset=0)
    fingerprint = _fingerprint(log)
    if fp is not None and fp == fingerprint:
        return Response(status_code=204)
    return render(
        request, "webhooks/_deliveries.html", hook=service.get(number), log=log, fp=fingerprint
    )


def _fingerprint(log: Page[DeliveryView]) -> str:
    """What the log shows, in a few characters: unchanged, the poll answers 204."""
    shown = [(v.delivery.id, v.delivery.state, v.delivery.attempts) for v in log.items]
    return hashlib.sha256(repr((log.total, shown)).encode()).hexdigest()[:16]


@router.post("/webhooks/{webhook_id}")
async def edit_webhook(request: Request, webhook_id: str, _admin: PostWebhooks) -> Response:
    """Save the settings; an empty secret keeps the stored one."""
    number = _id(webhook_id)
    values, events = await _form(request)
    changes: dict[str, Any] = {
        "url": values.get("url", ""),
        "events": events,
        "description": values.get("description", ""),
        "enabled": values.get("enabled") == "on",
    }
    if values.get("secret"):
        changes["secret"] = values["secret"]
    try:
        _service(request).update(number, changes)
    except InvalidInput as exc:
        shown = {**values, "events": events}
        errors = field_errors(exc, fields=FIELDS)
        return _detail(request, number, values=shown, errors=errors, status_code=422)
    return flash.redirect(request, f"/webhooks/{number}", "success", "Webhook saved.")


@router.post("/webhooks/{webhook_id}/test")
def test_webhook(request: Request, webhook_id: str, actor: PostWebhooks) -> Response:
    """Queue a test delivery; the log shows its answer within a second or two."""
    number = _id(webhook_id)
    try:
        delivery = _service(request).send_test(number, actor=actor)
    except RuleViolation as refused:  # disabled: said on the page, as the button says
        return flash.redirect(request, f"/webhooks/{number}", "error", str(refused))
    return flash.redirect(
        request,
        f"/webhooks/{number}",
        "info",
        f"Test delivery {delivery.id} queued: its answer appears in the log below.",
    )


@router.post("/webhooks/{webhook_id}/delete")
def delete_webhook(request: Request, webhook_id: str, _admin: PostWebhooks) -> Response:
    number = _id(webhook_id)
    _service(request).delete(number)
    return flash.redirect(request, "/webhooks", "success", f"Webhook {number} deleted.")
