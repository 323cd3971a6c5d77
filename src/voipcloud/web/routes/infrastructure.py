"""Infrastructure Properties page (arrives with issue 6)."""

from __future__ import annotations

from fastapi import Request, Response

from voipcloud.web.deps import WebAdmin, web_router
from voipcloud.web.templating import render

router = web_router()


@router.get("/infrastructure/properties")
def infrastructure_page(request: Request, _admin: WebAdmin) -> Response:
    """Infrastructure Properties."""
    return render(request, "infrastructure/index.html", nav="infrastructure")
