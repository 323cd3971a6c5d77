"""Rollouts: Fix / Activate / Deactivate over many nodes in batches (docs/operations.md).

Reading is for every account (`read`); starting, pausing, resuming and cancelling need the
`nodes` permission (operators and administrators).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from voipcloud.api.deps import CanManageNodes, CanRead, ControllerDep
from voipcloud.api.errors import REFUSALS
from voipcloud.api.params import Whole
from voipcloud.api.rollout_schemas import (
    RolloutCreate,
    RolloutPublic,
    RolloutsPublic,
    rollout_public,
)
from voipcloud.domain.rollouts import Command

router = APIRouter(prefix="/rollouts", tags=["rollouts"], responses=REFUSALS)
RolloutId = Annotated[Whole, Path(ge=1, le=2**31 - 1)]


@router.get("", response_model=RolloutsPublic)
def list_rollouts(
    _reader: CanRead,
    controller: ControllerDep,
    limit: Annotated[Whole, Query(ge=1, le=200)] = 50,
    offset: Annotated[Whole, Query(ge=0, le=1_000_000)] = 0,
) -> RolloutsPublic:
    """The rollouts, newest first, with their counts and progress."""
    page = controller.rollouts.page(limit=limit, offset=offset)
    return RolloutsPublic(items=[rollout_public(v) for v in page.items], total=page.total)


@router.post("", response_model=RolloutPublic, status_code=201)
def start_rollout(body: RolloutCreate, actor: CanManageNodes, controller: ControllerDep) -> Any:
    """Start a rollout over `node_ids` or every node `filter` matches now; the controller
    runs it in batches (it survives the browser closing and resumes after a restart)."""
    view = controller.rollouts.create(
        actor=actor,
        action=body.action,
        node_ids=body.node_ids,
        filter=None if body.filter is None else body.filter.model_dump(exclude_none=True),
        batch_size=body.batch_size,
        pause_seconds=body.pause_seconds,
        failure_tolerance=body.failure_tolerance,
        reason=body.reason,
        include_maintenance=body.include_maintenance,
    )
    return rollout_public(view)


@router.get("/{id}", response_model=RolloutPublic)
def get_rollout(id: RolloutId, _reader: CanRead, controller: ControllerDep) -> RolloutPublic:
    """One rollout with its per-node outcomes, counts and progress."""
    return rollout_public(controller.rollouts.get(id))


@router.post("/{id}/pause", response_model=RolloutPublic)
def pause_rollout(id: RolloutId, actor: CanManageNodes, controller: ControllerDep) -> Any:
    """Pause: no new batch starts; operations already started run to their end."""
    return rollout_public(controller.rollouts.command(id, Command.PAUSE, actor=actor))


@router.post("/{id}/resume", response_model=RolloutPublic)
def resume_rollout(id: RolloutId, actor: CanManageNodes, controller: ControllerDep) -> Any:
    """Resume a paused rollout."""
    return rollout_public(controller.rollouts.command(id, Command.RESUME, actor=actor))


@router.post("/{id}/cancel", response_model=RolloutPublic)
def cancel_rollout(id: RolloutId, actor: CanManageNodes, controller: ControllerDep) -> Any:
    """Cancel: the nodes not started are skipped; operations already started run to their
    end (their outcomes are still recorded)."""
    return rollout_public(controller.rollouts.command(id, Command.CANCEL, actor=actor))
