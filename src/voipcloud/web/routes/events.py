"""The Events page: the audit history, filterable by node."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from voipcloud.web import history
from voipcloud.web.deps import ControllerDep, PageRead, web_router
from voipcloud.web.templating import render

router = web_router()


@router.get("/events")
def events_page(
    request: Request,
    _reader: PageRead,
    controller: ControllerDep,
    node: Annotated[str | None, Query(max_length=253)] = None,
    page: Annotated[str | None, Query(max_length=8)] = None,
) -> Response:
    """Every event, newest first; `node` narrows it to one node (NodeID or hostname)."""
    view = history.events_page(controller, node_query=node or "", page=page)
    return render(request, "events/index.html", nav="events", **view.context())
