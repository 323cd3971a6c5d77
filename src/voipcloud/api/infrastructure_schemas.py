"""Wire schemas of Infrastructure Properties and the Configuration Wizard.

Input fields are typed loosely on purpose (a port may come as "10000", a server list as
"a, b"): the domain validates every value and names each field at fault in one 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voipcloud.domain.statuses import NodeStatus

_LIST = list[str] | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PropertiesPublic(BaseModel):
    """The Infrastructure Properties; the passwords are write-only (shown masked)."""

    infrastructure_name: str
    system_domain: str
    management_hostname: str
    dns_servers: list[str]
    ntp_servers: list[str]
    timezone: str
    private_network: str
    rtp_port_min: int
    rtp_port_max: int
    sql_username: str
    sql_password: str | None
    queue_username: str
    queue_password: str | None
    dd_username: str
    dd_password: str | None
    updated_at: datetime | None = None


class PropertiesUpdate(_Strict):
    """Fields left out keep their value; a password left out, empty or masked is kept."""

    infrastructure_name: str | None = Field(default=None, max_length=200)
    system_domain: str | None = Field(default=None, max_length=253, examples=["voip.example.com"])
    management_hostname: str | None = Field(default=None, max_length=253)
    dns_servers: _LIST = Field(default=None, examples=[["10.0.0.2", "10.0.0.3"]])
    ntp_servers: _LIST = Field(default=None, examples=[["pool.ntp.org"]])
    timezone: str | None = Field(default=None, max_length=64, examples=["Europe/Bucharest"])
    private_network: str | None = Field(default=None, max_length=64, examples=["10.0.0.0/8"])
    rtp_port_min: int | str | None = Field(default=None, examples=[10000])
    rtp_port_max: int | str | None = Field(default=None, examples=[20000])
    sql_username: str | None = Field(default=None, max_length=200)
    sql_password: str | None = Field(default=None, max_length=200)
    queue_username: str | None = Field(default=None, max_length=200)
    queue_password: str | None = Field(default=None, max_length=200)
    dd_username: str | None = Field(default=None, max_length=200)
    dd_password: str | None = Field(default=None, max_length=200)


class ParameterChangePublic(BaseModel):
    role: str
    parameter: str
    property: str
    old: Any
    new: Any


class NodeImpactPublic(BaseModel):
    node_id: int
    hostname: str
    status_before: NodeStatus
    status_after: NodeStatus
    reason: str
    changes: list[ParameterChangePublic]


class PropertiesChangePublic(BaseModel):
    """`affected`: Online nodes marked Damaged (or that would be, in a preview);
    `others`: nodes not Online that take the new values at their next activation or fix."""

    applied: bool
    changed: list[str]
    affected: list[NodeImpactPublic]
    others: list[NodeImpactPublic]
    properties: PropertiesPublic


class RoleParameterRef(BaseModel):
    role: str
    parameter: str


class PropertySchemaPublic(BaseModel):
    name: str
    label: str
    type: str
    secret: bool
    description: str
    example: str
    used_by: list[RoleParameterRef]


class ControllerNodePublic(BaseModel):
    node_id: int
    hostname: str
    private_ip: str
    public_ip: str | None
    status: NodeStatus
    status_reason: str | None
    pending_operation: str | None
    roles: list[str]


class WizardDetectedPublic(BaseModel):
    hostname: str
    addresses: list[str]
    suggested_public_ip: str | None
    controller: ControllerNodePublic
    properties: dict[str, Any]
    standard_roles: list[str]
    available: bool
    unavailable_reason: str | None


class WizardRequest(_Strict):
    system_domain: str | None = Field(default=None, max_length=253, examples=["voip.example.com"])
    public_ip: str | None = Field(default=None, max_length=45, examples=["203.0.113.10"])
    private_ip: str | None = Field(default=None, max_length=45)
    management_hostname: str | None = Field(default=None, max_length=253)
    infrastructure_name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)


class PlannedParameterPublic(BaseModel):
    name: str
    label: str
    value: Any
    source: str


class PlannedRolePublic(BaseModel):
    code: str
    name: str
    already_assigned: bool
    parameters: list[PlannedParameterPublic]


class WizardPlanPublic(BaseModel):
    hostname: str
    private_ip: str
    public_ip: str
    properties: dict[str, Any]
    roles: list[PlannedRolePublic]
    new_roles: list[str]
    skipped: dict[str, str]


class WizardRunPublic(BaseModel):
    """The wizard ran: the IC node's activation is pending for its agent; follow the node."""

    node_id: int
    status: NodeStatus
    pending_operation: str | None
    plan: WizardPlanPublic
