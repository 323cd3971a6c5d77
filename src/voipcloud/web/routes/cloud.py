"""The Cloud Management page: Infrastructure Operations and the Node Listing."""

from __future__ import annotations

from fastapi import Request, Response

from voipcloud.web.deps import WebAdmin, web_router
from voipcloud.web.templating import render

router = web_router()


@router.get("/")
def cloud_management(request: Request, _admin: WebAdmin) -> Response:
    """The Cloud Management page."""
    return render(request, "cloud/index.html", nav="cloud")
