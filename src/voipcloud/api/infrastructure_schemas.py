"""Wire schemas of Infrastructure Properties and the Configuration Wizard.

Input fields are typed loosely on purpose (a port may come as "10000", a server list as
"a, b"): the domain validates every value and names each field at fault in one 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from voipcloud.domain import properties as props
from voipcloud.domain.properties import PropertyKind
from voipcloud.domain.roles import SECRET_MASK
from voipcloud.domain.statuses import NodeStatus

_LIST = list[str] | str | None

# What the domain accepts for each kind of property (domain/properties.py `validate_value`),
# published in the schema; the domain still checks, naming each field at fault in one 422.
# Rules across fields (the RTP range's order and its overlap with the roles' ports) and a
# private range's host bits cannot be written in JSON Schema; tests/integration/
# test_schemathesis.py names them.
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = "[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # a last label that is not a number
_HOST = rf"{_LABEL}(?:\.{_LABEL})*\.?"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_NO_CONTROL = "[^\\u0000-\\u001f\\u007f]"
_VISIBLE = "[^\\s\\u0000-\\u001f\\u007f]"
_IP: dict[str, Any] = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}


def _listed(item: str) -> str:
    """A string of up to MAX_SERVERS items separated by commas or spaces."""
    return rf"^[ ,]*(?:{item}(?:[ ,]+{item}){{0,{props.MAX_SERVERS - 1}}})?[ ,]*$"


def _kind_schema(kind: PropertyKind) -> dict[str, Any]:
    if kind is PropertyKind.NAME:
        return {
            "type": "string",
            "maxLength": 64,
            "pattern": f"^{_NO_CONTROL}*{_VISIBLE}{_NO_CONTROL}*$",
        }
    if kind is PropertyKind.DOMAIN:
        return {
            "type": "string",
            "maxLength": 253,
            "pattern": rf"^ *{_LABEL}(?:\.{_LABEL})*\.{_TLD}\.? *$",
        }
    if kind is PropertyKind.HOST:
        return {
            "type": "string",
            "maxLength": 253,
            "anyOf": [{"pattern": f"^ *{_HOST} *$"}, {"format": "ipv4"}, {"format": "ipv6"}],
        }
    if kind is PropertyKind.IP_LIST:
        return {
            "anyOf": [
                {"type": "array", "items": _IP, "maxItems": props.MAX_SERVERS, "uniqueItems": True},
                {"type": "string", "pattern": _listed(_IPV4)},
            ]
        }
    if kind is PropertyKind.HOST_LIST:
        return {
            "anyOf": [
                {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 253, "pattern": f"^ *{_HOST} *$"},
                    "maxItems": props.MAX_SERVERS,
                    "uniqueItems": True,
                },
                {"type": "string", "pattern": _listed(_HOST)},
            ]
        }
    if kind is PropertyKind.TIMEZONE:
        # an IANA name; the ~600 names are not an enum (generated clients choke on GMT+0 and
        # GMT0 as enum members): the domain checks the name against the tz database
        return {
            "type": "string",
            "maxLength": 64,
            "pattern": "^ *[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)* *$",
            "examples": ["Europe/Bucharest"],
        }
    if kind is PropertyKind.CIDR:
        return {
            "type": "string",
            "maxLength": 64,
            "pattern": "^ *[0-9A-Fa-f:.]+/[0-9]{1,3} *$",
            "description": "a private range in CIDR notation, without host bits",
        }
    if kind is PropertyKind.PORT:
        return {"type": "integer", "minimum": props.RTP_PORT_FLOOR, "maximum": 65535}
    if kind is PropertyKind.USERNAME:
        return {"type": "string", "pattern": "^ *[A-Za-z_][A-Za-z0-9_.-]{0,63} *$"}
    # a secret: left out, null, empty or masked keeps the current one
    low, high = props.MIN_SECRET - 2, props.MAX_SECRET - 2
    return {
        "anyOf": [
            {"type": "null"},
            {"type": "string", "enum": ["", SECRET_MASK]},
            {
                "type": "string",
                "pattern": f"^{_VISIBLE}{_NO_CONTROL}{{{low},{high}}}{_VISIBLE}$",
                "writeOnly": True,
            },
        ]
    }


def _property(name: str, *, optional: bool = False) -> WithJsonSchema:
    """A property's published schema; `optional`: null or "" also accepted (the wizard)."""
    schema = _kind_schema(props.SPECS[name].kind)
    if optional:
        schema = {"anyOf": [{"type": "null"}, {"type": "string", "enum": [""]}, schema]}
    return WithJsonSchema(schema)


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

    infrastructure_name: Annotated[str | None, _property("infrastructure_name")] = Field(
        default=None, max_length=200
    )
    system_domain: Annotated[str | None, _property("system_domain")] = Field(
        default=None, max_length=253, examples=["voip.example.com"]
    )
    management_hostname: Annotated[str | None, _property("management_hostname")] = Field(
        default=None, max_length=253
    )
    dns_servers: Annotated[_LIST, _property("dns_servers")] = Field(
        default=None, examples=[["10.0.0.2", "10.0.0.3"]]
    )
    ntp_servers: Annotated[_LIST, _property("ntp_servers")] = Field(
        default=None, examples=[["pool.ntp.org"]]
    )
    timezone: Annotated[str | None, _property("timezone")] = Field(
        default=None, max_length=64, examples=["Europe/Bucharest"]
    )
    private_network: Annotated[str | None, _property("private_network")] = Field(
        default=None, max_length=64, examples=["10.0.0.0/8"]
    )
    rtp_port_min: Annotated[int | str | None, _property("rtp_port_min")] = Field(
        default=None, examples=[10000]
    )
    rtp_port_max: Annotated[int | str | None, _property("rtp_port_max")] = Field(
        default=None, examples=[20000]
    )
    sql_username: Annotated[str | None, _property("sql_username")] = Field(
        default=None, max_length=200
    )
    sql_password: Annotated[str | None, _property("sql_password")] = Field(
        default=None, max_length=200
    )
    queue_username: Annotated[str | None, _property("queue_username")] = Field(
        default=None, max_length=200
    )
    queue_password: Annotated[str | None, _property("queue_password")] = Field(
        default=None, max_length=200
    )
    dd_username: Annotated[str | None, _property("dd_username")] = Field(
        default=None, max_length=200
    )
    dd_password: Annotated[str | None, _property("dd_password")] = Field(
        default=None, max_length=200
    )


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
    """`system_domain` and `public_ip` are needed; the others may be left out, null or empty.
    (Both are checked by the domain, which names them; the schema marks them required.)"""

    model_config = ConfigDict(json_schema_extra={"required": ["system_domain", "public_ip"]})

    system_domain: Annotated[str | None, _property("system_domain")] = Field(
        default=None, max_length=253, examples=["voip.example.com"]
    )
    public_ip: Annotated[str | None, WithJsonSchema(_IP)] = Field(
        default=None, max_length=45, examples=["203.0.113.10"]
    )
    private_ip: Annotated[
        str | None, WithJsonSchema({"anyOf": [{"type": "null"}, {"enum": [""]}, _IP]})
    ] = Field(default=None, max_length=45)
    management_hostname: Annotated[str | None, _property("management_hostname", optional=True)] = (
        Field(default=None, max_length=253)
    )
    infrastructure_name: Annotated[str | None, _property("infrastructure_name", optional=True)] = (
        Field(default=None, max_length=200)
    )
    timezone: Annotated[str | None, _property("timezone", optional=True)] = Field(
        default=None, max_length=64
    )


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
