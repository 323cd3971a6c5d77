"""Plain records the services pass around (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from voipcloud.domain.lifecycle import PendingOperation
from voipcloud.domain.statuses import NodeStatus


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class RoleAssignment:
    node_id: int
    role: str
    parameters: dict[str, Any]  # explicit values only
    created_at: datetime
    updated_at: datetime
    row_version: int = 1  # bumped by every change of the parameters (its ETag)


@dataclass(frozen=True, slots=True)
class Maintenance:
    """A node in maintenance: left out of bulk actions and rollouts unless chosen explicitly,
    its notifications muted. Orthogonal to the status."""

    reason: str
    by: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    hostname: str
    private_ip: str
    public_ip: str | None
    container_id: str | None
    status: NodeStatus
    status_reason: str | None
    is_controller: bool
    has_session_key: bool
    pending_operation: PendingOperation | None
    operation_id: str | None
    operation_started_at: datetime | None
    config_generation: int
    agent_version: str | None
    os: str | None
    kernel: str | None
    components: list[Component]
    last_seen: datetime | None
    created_at: datetime
    updated_at: datetime
    row_version: int
    roles: list[str] = field(default_factory=list)
    maintenance: Maintenance | None = None


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: datetime
    actor: str
    node_id: int | None
    operation: str
    status_before: str | None
    status_after: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Extension:
    number: str
    label: str
    created_at: datetime


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    # False: more than `total` match (a broad filter's count stops there: store/node_search.py)
    total_exact: bool = True
