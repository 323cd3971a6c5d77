"""Jinja2 templates and `render()`, which every page uses.

`render(request, "folder/page.html", **context)` gives the template, besides `context`:
`request`, `admin` (the signed-in username or None), `csrf_token`, `csrf_field()` (a hidden
input for forms), `flashes` (one-shot messages) and `status_info` (badge colours).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup, escape
from starlette.responses import Response

from voipcloud import __version__
from voipcloud.domain.properties import SPECS as PROPERTY_SPECS
from voipcloud.domain.roles import ROLES
from voipcloud.domain.roles import listening as role_listening
from voipcloud.domain.statuses import STATUS_INFO, NodeStatus
from voipcloud.web import flash
from voipcloud.web.deps import csrf_token
from voipcloud.web.sessions import CSRF_FIELD
from voipcloud.web.views import ACTION_LABELS, when

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _sentence(text: str | None) -> str:
    """A message as a sentence: first letter capitalised ("must be ..." -> "Must be ...")."""
    if not text:
        return ""
    return text[:1].upper() + text[1:]


def _role_names(codes: list[str]) -> str:
    """Role codes as the seed lists them: their names, separated by comma."""
    return ", ".join(ROLES[code].name if code in ROLES else code for code in codes)


def _property_label(name: str) -> str:
    """An Infrastructure Property as the Properties page names it: "queue_username" -> "Queue
    username"."""
    spec = PROPERTY_SPECS.get(name)
    return spec.label if spec else name


def _actor(actor: str) -> str:
    """Who made a change, in words: "admin:alice" -> "alice", "node:5" -> "agent of node 5"."""
    kind, _, name = actor.partition(":")
    if kind in ("admin", "operator", "viewer") and name:
        return name
    if kind == "node" and name:
        return f"agent of node {name}"
    return actor


def _operation(operation: str) -> str:
    """An event's operation in words: "activation-succeeded" -> "Activation succeeded"."""
    return _sentence(operation.replace("-", " ").replace("_", " "))


templates.env.filters["when"] = when
templates.env.filters["sentence"] = _sentence
templates.env.filters["role_names"] = _role_names
templates.env.filters["actor"] = _actor
templates.env.filters["property_label"] = _property_label
templates.env.filters["operation"] = _operation
templates.env.globals["STATUS_INFO"] = STATUS_INFO
templates.env.globals["NodeStatus"] = NodeStatus
templates.env.globals["version"] = __version__
templates.env.globals["ACTION_LABELS"] = ACTION_LABELS
templates.env.globals["role_listening"] = role_listening
# a role's health as a listing row marks it (services/role_health.py)
templates.env.globals["HEALTH_MARKS"] = {"healthy": "✓", "unhealthy": "✗"}


@pass_context
def _static_url(context: Any, path: str) -> str:
    """The address of one of the web interface's own files, from the site's root: what
    `url_for('web-static', ...)` answers without walking every route to find the mount (three
    of them were 7 % of the Node Listing's server time, py-spy at 50,000 nodes)."""
    request = context.get("request")
    root = request.scope.get("root_path", "") if request is not None else ""
    return f"{root}/static/{quote(path)}"


templates.env.globals["static_url"] = _static_url


# Pages show session keys and carry CSRF tokens: never framed, cached or leaked by referrer.
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    token = csrf_token(request)
    principal = getattr(request.state, "principal", None)
    field = Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, escape(token))
    messages = flash.take(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "admin": getattr(request.state, "admin", None),
            # what the signed-in account may do (domain/access.py): `can("nodes")`
            "account": principal,
            "can": lambda permission: principal is not None and principal.may(permission),
            "csrf_token": token,
            "csrf_field": lambda: field,
            "flashes": messages,
            "htmx": is_htmx(request),
            "status_code": status_code,
            **context,
        },
        status_code=status_code,
        headers={**PAGE_HEADERS, **(headers or {})},
    )
    if messages and not is_htmx(request):
        response.delete_cookie(flash.FLASH_COOKIE, path="/")
    return response
