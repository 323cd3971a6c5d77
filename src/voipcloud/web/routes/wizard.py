"""Configuration Wizard page (arrives with issue 6)."""

from __future__ import annotations

from fastapi import Request, Response

from voipcloud.web.deps import WebAdmin, web_router
from voipcloud.web.templating import render

router = web_router()


@router.get("/wizard")
def wizard_page(request: Request, _admin: WebAdmin) -> Response:
    """Configuration Wizard."""
    return render(request, "wizard/index.html", nav="wizard")
