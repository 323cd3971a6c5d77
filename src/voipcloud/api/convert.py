"""Domain records to wire schemas."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from voipcloud import __version__
from voipcloud.api import schemas
from voipcloud.domain import agent_versions, policy, versions
from voipcloud.domain.model import Event, Extension, Node
from voipcloud.domain.policy import Connectivity
from voipcloud.services.nodes import NodeDetails
from voipcloud.services.presence import Presence
from voipcloud.services.roles import AssignedRole
from voipcloud.store.types import utcnow


def node(record: Node, presence: Presence) -> schemas.NodePublic:
    return schemas.NodePublic(**_node_fields(record, presence))


def _node_fields(record: Node, presence: Presence) -> dict[str, object]:
    connectivity, last_seen = presence.state(record.id, record.last_seen, utcnow())
    pending = None
    if record.pending_operation and record.operation_id:
        pending = schemas.PendingOperationPublic(
            kind=record.pending_operation,
            operation_id=record.operation_id,
            started_at=record.operation_started_at,
        )
    return {
        "node_id": record.id,
        "hostname": record.hostname,
        "private_ip": record.private_ip,
        "public_ip": record.public_ip,
        "container_id": record.container_id,
        "roles": record.roles,
        "status": record.status,
        "status_reason": record.status_reason,
        "pending_operation": pending,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "version": record.agent_version,
        "agent_outdated": agent_versions.is_outdated(
            record.agent_version, __version__, status=record.status
        ),
        "os": record.os,
        "kernel": record.kernel,
        "last_seen": last_seen,
        "connectivity": connectivity.value,
        "is_controller": record.is_controller,
        "maintenance": None
        if record.maintenance is None
        else schemas.MaintenancePublic(
            reason=record.maintenance.reason,
            by=record.maintenance.by,
            since=record.maintenance.since,
        ),
    }


def node_detail(
    details: NodeDetails,
    assigned: list[AssignedRole],
    presence: Presence,
    *,
    activation_timeout: float,
) -> schemas.NodeDetailPublic:
    fields = _node_fields(details.node, presence)
    health = presence.role_health.for_node(
        details.node.id,
        [a.role.code for a in assigned],
        connected=fields["connectivity"] == "connected",
    )
    return schemas.NodeDetailPublic(
        **fields,
        role_health={
            code: schemas.RoleHealthPublic.model_validate({"state": h.state, "message": h.message})
            for code, h in health.items()
        },
        actions=node_actions(
            details,
            fields["connectivity"],
            fields["last_seen"],
            activation_timeout=activation_timeout,
        ),
        session_key=details.session_key,
        components=[
            schemas.ComponentPublic(name=c.name, version=c.version) for c in details.node.components
        ],
        assignments=[
            schemas.RoleAssignmentPublic(
                role=a.role.code,
                name=a.role.name,
                parameters={
                    name: schemas.EffectiveParameterPublic(value=v.value, source=v.source)
                    for name, v in a.effective.items()
                },
                etag=versions.assignment_snapshot(details.node.hostname, a.role, a.assignment).etag,
            )
            for a in assigned
        ],
    )


def node_actions(
    details: NodeDetails,
    connectivity: object,
    last_seen: object,
    *,
    activation_timeout: float,
) -> list[schemas.NodeActionPublic]:
    """The rulebook's answers for the node (`GET /nodes/{id}`'s `actions`), from the same facts
    the web's buttons read: connectivity, last seen, this controller's activation timeout."""
    seen = f"{last_seen:%Y-%m-%d %H:%M:%S} UTC" if isinstance(last_seen, datetime) else None
    facts = replace(details.facts, agent=Connectivity(str(connectivity)), last_seen=seen)
    return [
        schemas.NodeActionPublic(
            name=d.operation.value,
            allowed=d.allowed,
            role=d.role,
            rule=d.rule,
            reason=d.reason,
            confirm=d.confirm,
        )
        for d in policy.node_actions(facts, activation_timeout=activation_timeout)
    ]


def event(record: Event) -> schemas.EventPublic:
    return schemas.EventPublic(
        id=record.id,
        at=record.at,
        actor=record.actor,
        node_id=record.node_id,
        operation=record.operation,
        status_before=record.status_before,
        status_after=record.status_after,
        reason=record.reason,
    )


def extension(record: Extension) -> schemas.ExtensionPublic:
    return schemas.ExtensionPublic(
        number=record.number, label=record.label, created_at=record.created_at
    )
