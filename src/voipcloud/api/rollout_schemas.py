"""Wire schemas of rollouts: RolloutCreate, RolloutPublic, RolloutsPublic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, WithJsonSchema

from voipcloud.api.schemas import OneLine, Strict, Text
from voipcloud.domain import rollouts as rules
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.rollouts import RolloutView


class RolloutFilter(Strict):
    """The listing's filter (`GET /nodes`), resolved to the nodes it matches when the rollout
    is created (nodes that match later are not added)."""

    status: Annotated[
        str | None, WithJsonSchema({"type": "string", "enum": [s.value for s in NodeStatus]})
    ] = Field(default=None, max_length=32)
    role: Annotated[str | None, WithJsonSchema({"type": "string", "enum": list(ROLES)})] = Field(
        default=None, max_length=16
    )
    q: OneLine | None = Field(default=None, max_length=253)


class RolloutCreate(Strict):
    """Exactly one of `node_ids` and `filter`. Nodes in maintenance are left out (outcome
    `skipped`) unless `include_maintenance` is true."""

    action: Literal["fix", "activate", "deactivate"]
    node_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(
        default=None, min_length=1, max_length=rules.MAX_NODES
    )
    filter: RolloutFilter | None = None
    batch_size: int = Field(ge=1, le=rules.MAX_BATCH_SIZE, description="nodes per batch")
    pause_seconds: float = Field(
        ge=0, le=rules.MAX_PAUSE_SECONDS, description="seconds between two batches"
    )
    failure_tolerance: int = Field(
        ge=0,
        le=rules.MAX_NODES,
        description="stop when more than this many nodes failed (at most the number of "
        "nodes the rollout acts on)",
    )
    reason: Text | None = Field(default=None, max_length=rules.MAX_REASON)
    include_maintenance: StrictBool = False


class RolloutNodePublic(BaseModel):
    node_id: int
    hostname: str | None
    status: str | None  # the node's status now
    position: int
    batch: int  # 0: left out (in maintenance)
    outcome: Literal["pending", "running", "done", "failed", "refused", "skipped"]
    rule: str | None
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None


class RolloutCounts(BaseModel):
    total: int
    done: int
    failed: int  # failed and refused
    skipped: int
    pending: int  # not started yet
    running: int  # started, outcome not known yet


class RolloutPublic(BaseModel):
    id: int
    action: str
    state: Literal["running", "paused", "cancelled", "stopped", "finished"]
    state_reason: str | None
    batch_size: int
    pause_seconds: float
    failure_tolerance: int
    reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    next_batch_at: datetime | None
    batches: int
    current_batch: int | None
    counts: RolloutCounts
    progress: float = Field(description="percent of the nodes with their outcome")
    commands: list[str] = Field(description="pause, resume, cancel: those allowed now")
    nodes: list[RolloutNodePublic] | None = Field(
        default=None, description="per-node outcomes (one rollout only)"
    )


class RolloutsPublic(BaseModel):
    items: list[RolloutPublic]
    total: int


def rollout_public(view: RolloutView) -> RolloutPublic:
    r, c = view.rollout, view.counts
    return RolloutPublic(
        id=r.id,
        action=r.action,
        state=r.state.value,
        state_reason=r.state_reason,
        batch_size=r.batch_size,
        pause_seconds=r.pause_seconds,
        failure_tolerance=r.failure_tolerance,
        reason=r.reason,
        created_by=r.created_by,
        created_at=r.created_at,
        updated_at=r.updated_at,
        finished_at=r.finished_at,
        next_batch_at=r.next_batch_at,
        batches=view.batches,
        current_batch=view.current_batch,
        counts=RolloutCounts(
            total=c.total,
            done=c.done,
            failed=c.failed,
            skipped=c.skipped,
            pending=c.pending,
            running=c.running,
        ),
        progress=c.progress,
        commands=[command.value for command in view.commands],
        nodes=None
        if view.members is None
        else [
            RolloutNodePublic(
                node_id=m.member.node_id,
                hostname=m.hostname,
                status=m.status,
                position=m.member.position,
                batch=m.member.batch,
                outcome=m.member.outcome.value,
                rule=m.rule,
                reason=m.member.reason,
                started_at=m.started_at,
                finished_at=m.finished_at,
            )
            for m in view.members
        ],
    )
