"""Fleet operations on nodes: maintenance mode, bulk actions, the status counters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from voipcloud.api.deps import CanManageNodes, CanRead, ControllerDep
from voipcloud.api.errors import REFUSALS, refuses_only
from voipcloud.api.fleet_schemas import (
    BulkBody,
    MaintenanceRequest,
    NodesSummaryPublic,
    StatusCountPublic,
)
from voipcloud.api.routes.nodes import detail
from voipcloud.api.row_schemas import BulkResultPublic, BulkResultsPublic, row_results
from voipcloud.api.schemas import NodeDetailPublic
from voipcloud.domain import bulk
from voipcloud.domain.bulk import BulkRequest

router = APIRouter(prefix="/nodes", tags=["nodes"], responses=REFUSALS)

BulkAction = Annotated[
    str,
    Path(
        max_length=32,
        description="the action: " + ", ".join(bulk.ACTIONS),
        json_schema_extra={"enum": list(bulk.ACTIONS)},
    ),
]


@router.get("/summary", response_model=NodesSummaryPublic)
def nodes_summary(_reader: CanRead, controller: ControllerDep) -> NodesSummaryPublic:
    """The status counters: how many nodes in each status, and in maintenance."""
    found = controller.maintenance.summary()
    return NodesSummaryPublic(
        total=found.live,
        in_maintenance=found.in_maintenance,
        by_status={c.status.value: c.nodes for c in found.by_status},
        statuses=[
            StatusCountPublic(status=c.status, nodes=c.nodes, in_maintenance=c.in_maintenance)
            for c in found.by_status
        ],
    )


@router.api_route("/summary", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@refuses_only
def summary_only_reads(_reader: CanRead) -> JSONResponse:
    """405: /nodes/summary is not a node (without this, /nodes/{node_id} would answer 422)."""
    return JSONResponse(
        {"detail": "Method Not Allowed; this path answers GET"},
        status_code=405,
        headers={"Allow": "GET"},
    )


@router.post("/bulk/{action}", response_model=BulkResultsPublic)
def bulk_action(
    action: BulkAction, body: BulkBody, actor: CanManageNodes, controller: ControllerDep
) -> BulkResultsPublic:
    """Run one action on each selected node (`node_ids`, or every node `filter` matches, at
    most 5000): each node on its own rules, in its own transaction; one result per node,
    done or refused with the rule. Nodes in maintenance are refused (`node-in-maintenance`)
    unless `include_maintenance` is true."""
    selection = bulk.parse_selection(
        body.node_ids,
        None if body.filter is None else body.filter.model_dump(exclude_none=True),
    )
    results = controller.bulk.run(
        BulkRequest(
            action=action,
            selection=selection,
            include_maintenance=body.include_maintenance,
            reason=body.reason,
            force=body.force,
            role=body.role,
            parameters=body.parameters,
        ),
        actor=actor,
    )
    done, refused = bulk.summary(results)
    return BulkResultsPublic(
        action=action,
        done=done,
        refused=refused,
        results=row_results(BulkResultPublic, results),
    )


@router.post("/{node_id}/maintenance", response_model=NodeDetailPublic)
def enter_maintenance(
    node_id: int, body: MaintenanceRequest, actor: CanManageNodes, controller: ControllerDep
) -> NodeDetailPublic:
    """Enter Maintenance, with the reason: the node is left out of bulk actions and
    rollouts unless included explicitly, and no webhook delivery is made about it. Its
    status does not change. 409 when Deleted or already in maintenance."""
    controller.maintenance.enter(node_id, actor=actor, reason=body.reason)
    return detail(controller, node_id)


@router.delete("/{node_id}/maintenance", response_model=NodeDetailPublic)
def leave_maintenance(
    node_id: int, actor: CanManageNodes, controller: ControllerDep
) -> NodeDetailPublic:
    """Leave Maintenance. 409 when the node is not in maintenance."""
    controller.maintenance.leave(node_id, actor=actor)
    return detail(controller, node_id)
