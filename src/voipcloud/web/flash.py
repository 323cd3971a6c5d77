"""One-shot messages shown on the next page ("Node web-02 added."), kept in a signed cookie."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from itsdangerous import BadSignature, URLSafeSerializer

from voipcloud.web.deps import get_controller

FLASH_COOKIE = "voipcloud_flash"
Kind = Literal["success", "error", "info", "warning"]


def _serializer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(get_controller(request).auth.signing_key("web-flash"), salt="flash")


def add(request: Request, response: Response, kind: Kind, text: str) -> None:
    pending = [*take(request), [kind, text[:2000]]]
    response.set_cookie(
        FLASH_COOKIE,
        _serializer(request).dumps(json.dumps(pending[-3:])),
        httponly=True,
        samesite="lax",
        path="/",
    )


def take(request: Request) -> list[list[str]]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return []
    try:
        messages = json.loads(_serializer(request).loads(raw))
    except (BadSignature, ValueError):
        return []
    return [m for m in messages if isinstance(m, list) and len(m) == 2]


def redirect(request: Request, url: str, kind: Kind | None = None, text: str = "") -> Response:
    """303 to `url` (a local path), with a message for the page it lands on."""
    if not url.startswith("/") or url.startswith("//"):
        url = "/"
    response = RedirectResponse(url, status_code=303)
    if kind:
        add(request, response, kind, text)
    return response
