"""The role catalogue and role assignments."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from voipcloud.api.deps import CanManageNodes, CanRead, ControllerDep
from voipcloud.api.enrolment import EnrolmentPublic, for_request
from voipcloud.api.errors import REFUSALS
from voipcloud.api.routes.nodes import detail
from voipcloud.api.schemas import (
    NodeDetailPublic,
    ParameterPublic,
    RemoveRequest,
    RoleAssign,
    RolePublic,
    RoleUpdate,
)
from voipcloud.api.versions import STALE_RESPONSE, IfMatch
from voipcloud.domain.roles import ROLES, role_ports, role_resource_access

router = APIRouter(tags=["roles"], responses=REFUSALS)


class RolePortPublic(BaseModel):
    protocol: Literal["tcp", "udp"]
    purpose: str
    parameter: str | None = Field(description="the parameter giving the port number, if any")
    parameter_max: str | None = Field(description="a range: from `parameter` to this one")
    port: int | None = Field(description="a fixed port (no parameter)")


class CatalogueRolePublic(RolePublic):
    ports: list[RolePortPublic] = Field(
        description="what the role's software listens on (on the node's private IP)"
    )
    resource_access: Literal["read-write", "read", "none"] = Field(
        description="what a node carrying this role may do with stored faxes, recordings and "
        "voicemail (a node gets the widest of its roles'; `none`: 403)"
    )


@router.get("/roles", response_model=list[CatalogueRolePublic])
def role_catalogue(_reader: CanRead) -> list[CatalogueRolePublic]:
    """The role catalogue with each role's parameter schema and resource access."""
    return [
        CatalogueRolePublic(
            code=role.code,
            name=role.name,
            public_ip=role.public_ip.value,
            admin_removable=role.admin_removable,
            parameters=[ParameterPublic(**p.schema()) for p in role.parameters],
            resource_access=role_resource_access(role.code).value,
            ports=[RolePortPublic(**p.schema()) for p in role_ports(role.code)],
        )
        for role in ROLES.values()
    ]


class NodeEnrolmentPublic(NodeDetailPublic):
    enrolment: EnrolmentPublic = Field(
        description="how the node's agent joins: the controller's address, the CA "
        "fingerprint to pin (https), and the command (the key is read from a file)"
    )


@router.post("/nodes/{node_id}/roles", response_model=NodeEnrolmentPublic, status_code=201)
def assign_role(
    node_id: int,
    body: RoleAssign,
    admin: CanManageNodes,
    controller: ControllerDep,
    request: Request,
) -> NodeEnrolmentPublic:
    """Assign a role with parameters; the answer carries the node's session key and the
    agent command (`enrolment`)."""
    controller.roles.assign(node_id, actor=admin, role=body.role, parameters=body.parameters)
    found = detail(controller, node_id)
    return NodeEnrolmentPublic(**found.model_dump(), enrolment=for_request(request))


@router.patch(
    "/nodes/{node_id}/roles/{code}", response_model=NodeDetailPublic, responses=STALE_RESPONSE
)
def edit_role(
    node_id: int,
    code: str,
    body: RoleUpdate,
    admin: CanManageNodes,
    controller: ControllerDep,
    expected: IfMatch,
    response: Response,
) -> NodeDetailPublic:
    """Change role parameters (null puts one back to its default). `If-Match`: the
    assignment's `etag` from the node's detail (412 when the role changed since)."""
    controller.roles.edit(
        node_id, actor=admin, role=code, parameters=body.parameters, expected=expected
    )
    return detail(controller, node_id, response)


@router.delete(
    "/nodes/{node_id}/roles/{code}", response_model=NodeDetailPublic, responses=STALE_RESPONSE
)
def delete_assignment(
    node_id: int,
    code: str,
    admin: CanManageNodes,
    controller: ControllerDep,
    expected: IfMatch,
    response: Response,
) -> NodeDetailPublic:
    """Delete role assignment (Offline, ActivateFailed or Deactivated only). `If-Match`: the
    assignment's `etag` (412 when the role changed since)."""
    controller.roles.unassign(node_id, actor=admin, role=code, expected=expected)
    return detail(controller, node_id, response)


@router.post("/nodes/{node_id}/roles/{code}/remove", response_model=NodeDetailPublic)
def admin_remove(
    node_id: int, code: str, body: RemoveRequest, admin: CanManageNodes, controller: ControllerDep
) -> NodeDetailPublic:
    """Administrative Remove from the IC node; needs {"confirm": true}."""
    controller.roles.admin_remove(node_id, actor=admin, role=code, confirm=body.confirm)
    return detail(controller, node_id)
