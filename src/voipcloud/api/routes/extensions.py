"""The extensions registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from voipcloud.api import convert
from voipcloud.api.deps import CanManageExtensions, CanRead, ControllerDep
from voipcloud.api.errors import REFUSALS
from voipcloud.api.params import Whole
from voipcloud.api.schemas import ExtensionCreate, ExtensionPublic, ExtensionsPublic
from voipcloud.domain.filters import MAX_OFFSET

router = APIRouter(prefix="/extensions", tags=["extensions"], responses=REFUSALS)


@router.get("", response_model=ExtensionsPublic)
def list_extensions(
    _reader: CanRead,
    controller: ControllerDep,
    limit: Annotated[Whole, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Whole, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ExtensionsPublic:
    """Provisioned extensions, by number."""
    page = controller.extensions.list(limit=limit, offset=offset)
    return ExtensionsPublic(items=[convert.extension(e) for e in page.items], total=page.total)


@router.post("", response_model=ExtensionPublic, status_code=201)
def add_extension(
    body: ExtensionCreate, admin: CanManageExtensions, controller: ControllerDep
) -> ExtensionPublic:
    """Provision an extension."""
    return convert.extension(
        controller.extensions.add(actor=admin, number=body.number, label=body.label)
    )


@router.delete("/{number}", status_code=204)
def delete_extension(
    number: Annotated[str, Path(max_length=20)],
    admin: CanManageExtensions,
    controller: ControllerDep,
) -> Response:
    """Remove an extension."""
    controller.extensions.remove(actor=admin, number=number)
    return Response(status_code=204)
