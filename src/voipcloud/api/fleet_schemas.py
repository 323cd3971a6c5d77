"""Wire schemas of fleet operations: maintenance, bulk actions, the status counters."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StrictBool, WithJsonSchema

from voipcloud.api.schemas import OneLine, SchemaPattern, Strict, Text
from voipcloud.domain import validation
from voipcloud.domain.bulk import MAX_REASON, MAX_SELECTION
from voipcloud.domain.policy import MAX_MAINTENANCE_REASON
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus

# one line (as OneLine) holding something besides spaces
_CHAR = r"[^\u0000-\u001f\u007f-\u009f]"
NONBLANK_LINE_PATTERN = rf"^{_CHAR}*[^\s\u0000-\u001f\u007f-\u009f]{_CHAR}*$"
NonBlankLine = Annotated[
    str, AfterValidator(validation.check_text), SchemaPattern(NONBLANK_LINE_PATTERN)
]


class MaintenanceRequest(Strict):
    """Why the node is kept apart: one line, required (shown with who set it and since)."""

    reason: NonBlankLine = Field(
        min_length=1,
        max_length=MAX_MAINTENANCE_REASON,
        examples=["disk replacement, ticket OPS-1234"],
    )


def _nullable(values: list[str]) -> dict[str, Any]:
    """One of `values`, or null (left out)."""
    return {"anyOf": [{"type": "string", "enum": values}, {"type": "null"}]}


class BulkFilter(Strict):
    """The listing's filter (`GET /nodes`): every node it matches (Deleted ones only with
    status=Deleted)."""

    status: Annotated[str | None, WithJsonSchema(_nullable([s.value for s in NodeStatus]))] = Field(
        default=None, max_length=32
    )
    role: Annotated[str | None, WithJsonSchema(_nullable(list(ROLES)))] = Field(
        default=None, max_length=16
    )
    q: OneLine | None = Field(default=None, max_length=253)
    maintenance: StrictBool | None = Field(
        default=None, description="true: only nodes in maintenance; false: only the others"
    )


class BulkBody(Strict):
    """Exactly one of `node_ids` and `filter`. The other fields are those of the single-node
    endpoint of the action (`reason`, `force` for deactivate; `role` and `parameters` for
    assign-role; `role` for delete-assignment)."""

    node_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(
        default=None, min_length=1, max_length=MAX_SELECTION
    )
    filter: BulkFilter | None = None
    include_maintenance: StrictBool = Field(
        default=False,
        description="act on nodes in maintenance too (they are refused with "
        "`node-in-maintenance` otherwise)",
    )
    reason: Text | None = Field(default=None, max_length=MAX_REASON)
    force: StrictBool = False
    role: Annotated[OneLine | None, WithJsonSchema(_nullable(list(ROLES)))] = Field(
        default=None, max_length=16
    )
    parameters: dict[str, Any] | None = Field(default=None, max_length=64)


class StatusCountPublic(BaseModel):
    status: NodeStatus
    nodes: int
    in_maintenance: int


class NodesSummaryPublic(BaseModel):
    """The status counters: nodes per status (one GROUP BY)."""

    total: int  # live nodes (not Deleted)
    in_maintenance: int  # live nodes in maintenance
    by_status: dict[str, int]  # every status, Deleted included
    statuses: list[StatusCountPublic]
