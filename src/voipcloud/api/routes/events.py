"""The audit history of the whole infrastructure: filters and exports (domain/audit.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from voipcloud.api import convert
from voipcloud.api.deps import CanRead, ControllerDep
from voipcloud.api.params import MOMENT_PATTERN, OPERATIONS_PATTERN, OptionalWhole, Whole
from voipcloud.api.schemas import ONE_LINE_PATTERN, EventsPublic
from voipcloud.domain.audit import MAX_TEXT, EventFilter
from voipcloud.domain.filters import MAX_OFFSET
from voipcloud.services import audit

router = APIRouter(tags=["events"])


@router.get(
    "/events",
    response_model=EventsPublic,
    responses={
        200: {
            "content": {"text/csv": {}, "application/jsonl": {}},
            "description": "A page of events (JSON), or every match with format=csv|jsonl",
        }
    },
)
def list_events(
    _reader: CanRead,
    controller: ControllerDep,
    node_id: Annotated[OptionalWhole, Query(json_schema_extra={"minimum": 0})] = None,
    actor: Annotated[
        str | None,
        Query(
            max_length=MAX_TEXT,
            description="`admin:alice` exactly, or `alice` in any role",
            json_schema_extra={"pattern": ONE_LINE_PATTERN},
        ),
    ] = None,
    operation: Annotated[
        str | None,
        Query(
            max_length=1400,
            description="operation names, comma-separated",
            json_schema_extra={"pattern": OPERATIONS_PATTERN},
        ),
    ] = None,
    since: Annotated[
        str | None,
        Query(
            max_length=40,
            description="ISO 8601, inclusive; no offset: UTC",
            json_schema_extra={"pattern": MOMENT_PATTERN},
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            max_length=40,
            description="ISO 8601, exclusive; no offset: UTC",
            json_schema_extra={"pattern": MOMENT_PATTERN},
        ),
    ] = None,
    format: Annotated[
        Literal["json", "csv", "jsonl"] | None,
        Query(description="csv or jsonl: every matching event, oldest first, as a download"),
    ] = None,
    limit: Annotated[Whole, Query(ge=1, le=500)] = 50,
    offset: Annotated[Whole, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> EventsPublic | StreamingResponse:
    """All events, newest first, filtered by node, actor, operation and time; `format=csv` or
    `jsonl` exports every match (limit and offset do not apply), oldest first."""
    flt = EventFilter.parse(
        node_id=node_id, actor=actor, operation=operation, since=since, until=until
    )
    if format in ("csv", "jsonl"):
        audit.check(controller.ctx, flt)
        return StreamingResponse(
            audit.export(controller.ctx, flt, format),
            media_type=audit.MEDIA_TYPES[format],
            headers={
                "Content-Disposition": f'attachment; filename="{audit.filename(format)}"',
                "Cache-Control": "no-store",
            },
        )
    page = audit.page(controller.ctx, flt, limit=limit, offset=offset)
    return EventsPublic(items=[convert.event(e) for e in page.items], total=page.total)
