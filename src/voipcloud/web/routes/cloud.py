"""The Cloud Management page: Infrastructure Operations and the Node Listing."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response

from voipcloud.web import fleet, views
from voipcloud.web.deps import ControllerDep, PageRead, web_router
from voipcloud.web.templating import render

router = web_router()
Text = Annotated[str | None, Query(max_length=253)]


async def _request(
    q: Text = None,
    status: Text = None,
    role: Text = None,
    sort: Text = None,
    page: Text = None,
    per_page: Text = None,
    maintenance: Text = None,
) -> views.ListingRequest:
    """The listing's query parameters, shared by the page and its live-update fragment (no
    I/O: in the event loop, not a thread of the pool)."""
    return views.parse_listing(
        q=q,
        status=status,
        role=role,
        sort=sort,
        page=page,
        per_page=per_page,
        maintenance=maintenance,
    )


Wanted = Annotated[views.ListingRequest, Depends(_request)]


@router.get("/")
def cloud_management(
    request: Request,
    _reader: PageRead,
    controller: ControllerDep,
    wanted: Wanted,
) -> Response:
    """The Cloud Management page."""
    return render(
        request,
        "cloud/index.html",
        nav="cloud",
        listing=views.listing(controller, wanted),
        bulk_choices=fleet.BULK_CHOICES,
        bulk_roles=fleet.bulk_roles(),
    )


@router.get("/nodes/listing")
def listing_fragment(
    request: Request,
    _reader: PageRead,
    controller: ControllerDep,
    wanted: Wanted,
    fp: Text = None,
) -> Response:
    """The Node Listing alone, for live updates: 204 while nothing it shows has changed."""
    listing = views.listing(controller, wanted)
    if fp and fp == listing.fingerprint:
        return Response(status_code=204)
    return render(request, "cloud/_listing.html", listing=listing)
