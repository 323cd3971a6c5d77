"""The audit history of the whole infrastructure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from voipcloud.api import convert
from voipcloud.api.deps import CanRead, ControllerDep
from voipcloud.api.params import OptionalWhole, Whole
from voipcloud.api.schemas import EventsPublic
from voipcloud.domain.filters import MAX_OFFSET

router = APIRouter(tags=["events"])


@router.get("/events", response_model=EventsPublic)
def list_events(
    _reader: CanRead,
    controller: ControllerDep,
    node_id: Annotated[OptionalWhole, Query()] = None,
    limit: Annotated[Whole, Query(ge=1, le=500)] = 50,
    offset: Annotated[Whole, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> EventsPublic:
    """All events, newest first; node_id narrows to one node."""
    page = controller.nodes.events(node_id, limit=limit, offset=offset)
    return EventsPublic(items=[convert.event(e) for e in page.items], total=page.total)
