"""Storage Configuration page (arrives with issue 7)."""

from __future__ import annotations

from fastapi import Request, Response

from voipcloud.web.deps import WebAdmin, web_router
from voipcloud.web.templating import render

router = web_router()


@router.get("/storage")
def storage_page(request: Request, _admin: WebAdmin) -> Response:
    """Storage Configuration."""
    return render(request, "storage/index.html", nav="storage")
