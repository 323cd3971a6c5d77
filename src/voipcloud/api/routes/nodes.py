"""Nodes: listing, Quick info, add, edit, delete, lifecycle actions, history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from voipcloud.api import convert
from voipcloud.api.deps import CanManageNodes, CanRead, ControllerDep, MeReading
from voipcloud.api.errors import REFUSALS
from voipcloud.api.params import RoleFilter, SortFilter, StatusFilter, Whole
from voipcloud.api.schemas import (
    ONE_LINE_PATTERN,
    ActionRequest,
    DeactivateRequest,
    EventsPublic,
    NodeCreate,
    NodeDetailPublic,
    NodesPublic,
    NodeUpdate,
)
from voipcloud.api.versions import STALE_RESPONSE, IfMatch, set_etag
from voipcloud.domain import versions
from voipcloud.domain.access import Permission
from voipcloud.domain.filters import MAX_OFFSET, NodeFilter
from voipcloud.services.controller import Controller

router = APIRouter(prefix="/nodes", tags=["nodes"], responses=REFUSALS)


def detail(
    controller: Controller, node_id: int, response: Response | None = None
) -> NodeDetailPublic:
    """The node's detail; with `response`, its `ETag` (the version this detail was read at)."""
    found = controller.nodes.get(node_id)
    if response is not None:
        set_etag(response, versions.node_snapshot(found.node))
    return convert.node_detail(
        found,
        controller.roles.assigned(node_id),
        controller.agents.presence,
        activation_timeout=controller.ctx.activation_timeout,
    )


@router.get("", response_model=NodesPublic)
def list_nodes(
    _reader: CanRead,
    controller: ControllerDep,
    status: Annotated[StatusFilter, Query(min_length=1, max_length=32)] = None,
    role: Annotated[RoleFilter, Query(min_length=1, max_length=16)] = None,
    q: Annotated[
        str | None, Query(max_length=253, json_schema_extra={"pattern": ONE_LINE_PATTERN})
    ] = None,
    hostname: Annotated[
        str | None,
        Query(
            max_length=253,
            description="exactly this hostname (any case): one indexed query; with "
            "status=Deleted, the deleted nodes that had it",
            json_schema_extra={"pattern": ONE_LINE_PATTERN},
        ),
    ] = None,
    sort: Annotated[SortFilter, Query(min_length=1, max_length=32)] = None,
    limit: Annotated[Whole, Query(ge=1, le=500)] = 50,
    offset: Annotated[Whole, Query(ge=0, le=MAX_OFFSET)] = 0,
    maintenance: Annotated[
        bool | None,
        Query(description="true: only nodes in maintenance; false: only the others"),
    ] = None,
) -> NodesPublic:
    """List nodes; Deleted ones only with status=Deleted. `q` matches part of a hostname or
    IP; `hostname` only the exact one."""
    flt = NodeFilter.parse(
        status=status,
        role=role,
        q=q,
        hostname=hostname,
        sort=sort,
        limit=limit,
        offset=offset,
        maintenance=maintenance,
    )
    page = controller.nodes.list(flt)
    return NodesPublic(
        items=[convert.node(n, controller.agents.presence) for n in page.items],
        total=page.total,
        total_exact=page.total_exact,
    )


@router.post("", response_model=NodeDetailPublic, status_code=201)
def add_node(
    body: NodeCreate, admin: CanManageNodes, controller: ControllerDep
) -> NodeDetailPublic:
    """Add a node; it starts Offline."""
    node = controller.nodes.add(actor=admin, **body.model_dump())
    return detail(controller, node.id)


@router.get("/{node_id}", response_model=NodeDetailPublic)
def get_node(
    node_id: int, who: MeReading, controller: ControllerDep, response: Response
) -> NodeDetailPublic:
    """The node with its Quick info, components and role parameters (`session_key` is null
    for an account without `read-secrets`: viewers). `ETag`: its version, for `If-Match`;
    each assignment's `etag` is the role's, for editing or deleting the role."""
    found = detail(controller, node_id, response)
    return (
        found
        if who.may(Permission.READ_SECRETS)
        else found.model_copy(update={"session_key": None})
    )


@router.patch("/{node_id}", response_model=NodeDetailPublic, responses=STALE_RESPONSE)
def edit_node(
    node_id: int,
    body: NodeUpdate,
    admin: CanManageNodes,
    controller: ControllerDep,
    expected: IfMatch,
    response: Response,
) -> NodeDetailPublic:
    """Edit hostname, IPs or container id (any status but Deleted). With `If-Match`: only
    if the node is still at that version (412 otherwise)."""
    controller.nodes.edit(
        node_id, actor=admin, changes=body.model_dump(exclude_unset=True), expected=expected
    )
    return detail(controller, node_id, response)


@router.delete("/{node_id}", response_model=NodeDetailPublic, responses=STALE_RESPONSE)
def delete_node(
    node_id: int,
    admin: CanManageNodes,
    controller: ControllerDep,
    expected: IfMatch,
    response: Response,
) -> NodeDetailPublic:
    """Delete Node (refused while Online or Damaged). With `If-Match`: only if the node is
    still at that version (412 otherwise)."""
    controller.nodes.delete(node_id, actor=admin, expected=expected)
    return detail(controller, node_id, response)


# one operation per action (`activate_node`...), so a generated client has a call for each;
# the same path template, hidden, answers an unknown action with the usual 422
ACTION_OPERATIONS = {
    "standby": ("standby_node", "Set StandBy"),
    "activate": ("activate_node", "Activate"),
    "deactivate": ("deactivate_node", "Deactivate"),
    "mark-damaged": ("mark_node_damaged", "Mark Damaged"),
    "fix": ("fix_node", "Fix"),
    "regenerate-session-key": ("regenerate_session_key", "Regenerate session key"),
}
FORCE_HELP = (
    '`deactivate` with `{"force": true, "reason": ...}` ends a DeactivatePending node\'s '
    "deactivation that its agent cannot complete (409 in any other status; 422 without a "
    "reason)."
)


def run_action(
    node_id: int,
    action: str,
    admin: str,
    controller: Controller,
    body: ActionRequest | None,
) -> NodeDetailPublic:
    reason = body.reason if body else None
    force = body.force if isinstance(body, DeactivateRequest) else False
    controller.nodes.action(node_id, action, actor=admin, reason=reason, force=force)
    return detail(controller, node_id)


def _action_route(action: str, operation_id: str, title: str) -> None:
    def endpoint(
        node_id: int,
        admin: CanManageNodes,
        controller: ControllerDep,
        body: Annotated[ActionRequest | None, Body()] = None,
    ) -> NodeDetailPublic:
        return run_action(node_id, action, admin, controller, body)

    def deactivate(
        node_id: int,
        admin: CanManageNodes,
        controller: ControllerDep,
        body: Annotated[DeactivateRequest | None, Body()] = None,
    ) -> NodeDetailPublic:
        return run_action(node_id, action, admin, controller, body)

    router.add_api_route(
        f"/{{node_id}}/actions/{action}",
        deactivate if action == "deactivate" else endpoint,
        methods=["POST"],
        response_model=NodeDetailPublic,
        operation_id=operation_id,
        summary=title,
        description=f"{title} (`{action}`); optional `reason`."
        + (f" {FORCE_HELP}" if action == "deactivate" else ""),
    )


for _action, (_operation_id, _title) in ACTION_OPERATIONS.items():
    _action_route(_action, _operation_id, _title)


@router.post(
    "/{node_id}/actions/{action}", response_model=NodeDetailPublic, include_in_schema=False
)
def node_action(
    node_id: int,
    action: str,
    admin: CanManageNodes,
    controller: ControllerDep,
    body: Annotated[ActionRequest | None, Body()] = None,
) -> NodeDetailPublic:
    """Any other action: 422 naming `path.action` (the services know the actions)."""
    return run_action(node_id, action, admin, controller, body)


@router.get("/{node_id}/events", response_model=EventsPublic)
def node_events(
    node_id: int,
    _reader: CanRead,
    controller: ControllerDep,
    limit: Annotated[Whole, Query(ge=1, le=500)] = 50,
    offset: Annotated[Whole, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> EventsPublic:
    """The node's history, newest first."""
    page = controller.nodes.events(node_id, limit=limit, offset=offset)
    return EventsPublic(items=[convert.event(e) for e in page.items], total=page.total)
