"""The Events page: the audit history, filtered by node, actor, operation and time, and its
export (CSV or JSON Lines) with the same filters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Request, Response
from fastapi.responses import StreamingResponse

from voipcloud.services import audit
from voipcloud.web import history
from voipcloud.web.deps import ControllerDep, PageRead, web_router
from voipcloud.web.templating import render

router = web_router()
Text = Annotated[str | None, Query(max_length=1400)]


@router.get("/events")
def events_page(
    request: Request,
    _reader: PageRead,
    controller: ControllerDep,
    node: Annotated[str | None, Query(max_length=253)] = None,
    page: Annotated[str | None, Query(max_length=8)] = None,
    actor: Text = None,
    operation: Text = None,
    since: Text = None,
    until: Text = None,
) -> Response:
    """Every event, newest first; `node` (NodeID or hostname), `actor`, `operation`, `since`
    and `until` narrow it."""
    filters = {"actor": actor, "operation": operation, "since": since, "until": until}
    view = history.events_page(
        controller,
        node_query=node or "",
        page=page,
        filters={k: v or "" for k, v in filters.items()},
    )
    return render(request, "events/index.html", nav="events", **view.context())


@router.get("/events/export")
def export_events(
    request: Request,
    _reader: PageRead,
    controller: ControllerDep,
    format: Literal["csv", "jsonl"] = "csv",
    node: Annotated[str | None, Query(max_length=253)] = None,
    actor: Text = None,
    operation: Text = None,
    since: Text = None,
    until: Text = None,
) -> Response:
    """Every event the filters match, oldest first, as a CSV or JSON Lines download."""
    filters = {"actor": actor or "", "operation": operation or "", "since": since or ""}
    filters["until"] = until or ""
    flt, _node, error, _errors = history.parse_filter(
        controller, node_query=node or "", filters=filters
    )
    if flt is None:
        return render(request, "errors/problem.html", status_code=422, message=error)
    return StreamingResponse(
        audit.export(controller.ctx, flt, format),
        media_type=audit.MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{audit.filename(format)}"',
            "Cache-Control": "no-store",
        },
    )
