"""Wire schemas, kept apart from the tables: the NodeCreate / NodePublic family."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from voipcloud.domain import validation
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus


class SchemaPattern:
    """Publishes a `pattern` in the JSON schema without pydantic enforcing it: the validator
    beside it checks, with its own message (a 422 naming the field)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


class NotNull:
    """Publishes `X | None` as X: the field may be left out, but null is refused (by the
    services, naming the field), so the schema does not offer it."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        kept = [s for s in schema.get("anyOf", []) if s != {"type": "null"}]
        if "anyOf" in schema and len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            schema = {**kept[0], **rest}
        return schema


# what `validation.check_text` refuses: C0 and C1 controls and DEL (and lone surrogates, which
# JSON Schema cannot name); a multi-line text may hold tabs and line breaks
ONE_LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"

# Text fields: NUL (which PostgreSQL cannot store) and other control characters are refused
# with a 422 naming the field, before anything reaches the services.
OneLine = Annotated[str, AfterValidator(validation.check_text), SchemaPattern(ONE_LINE_PATTERN)]
Text = Annotated[
    str,
    AfterValidator(lambda v: validation.check_text(v, multiline=True)),
    SchemaPattern(TEXT_PATTERN),
]

# What the services accept, published in the schema (they check it: a 422 naming the field).
# A host name: RFC 1123 labels, any case, an optional final dot, spaces around ignored.
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_PATTERN = rf"^ *{_LABEL}(?:\.{_LABEL})*\.? *$"
Hostname = Annotated[
    OneLine,
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": validation.MAX_HOSTNAME,
            "pattern": HOSTNAME_PATTERN,
            "examples": ["sip-01.example.com"],
        }
    ),
]
# an IPv4 or IPv6 address
IpAddress = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 45,
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
            "examples": ["10.0.0.11"],
        }
    ),
]

# a public IP, or empty / null for none (the services read both as "no public IP")
OptionalIp = Annotated[
    str | None,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "null"},
                {"type": "string", "enum": [""]},
                {
                    "type": "string",
                    "maxLength": 45,
                    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
                },
            ],
            "examples": ["203.0.113.10"],
        }
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenRequest(Strict):
    username: OneLine = Field(max_length=64)
    password: str = Field(max_length=1024)


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: int


class NodeCreate(Strict):
    hostname: Hostname = Field(max_length=253)
    private_ip: IpAddress = Field(max_length=45)
    public_ip: OptionalIp = Field(default=None, max_length=45)
    container_id: OneLine | None = Field(default=None, max_length=128)


class NodeUpdate(Strict):
    """Fields left out keep their value; null removes the public IP or the container id (a
    node always has a hostname and a private IP: null is refused there)."""

    hostname: Annotated[Hostname | None, NotNull()] = Field(default=None, max_length=253)
    private_ip: Annotated[IpAddress | None, NotNull()] = Field(default=None, max_length=45)
    public_ip: OptionalIp = Field(default=None, max_length=45)
    container_id: OneLine | None = Field(default=None, max_length=128)


class ComponentPublic(BaseModel):
    name: str
    version: str


class PendingOperationPublic(BaseModel):
    kind: str
    operation_id: str
    started_at: datetime | None


class MaintenancePublic(BaseModel):
    """The node is in maintenance: left out of bulk actions and rollouts unless included
    explicitly; no webhook deliveries about it. Orthogonal to the status."""

    reason: str
    by: str  # the actor who put it in maintenance ("operator:alice")
    since: datetime


class NodePublic(BaseModel):
    node_id: int
    hostname: str
    private_ip: str
    public_ip: str | None
    container_id: str | None
    roles: list[str]
    status: NodeStatus
    status_reason: str | None
    pending_operation: PendingOperationPublic | None
    created_at: datetime
    updated_at: datetime
    version: str | None
    agent_outdated: bool = Field(
        default=False,
        description="the agent reported a version older than the controller's "
        "(unknown versions are not flagged)",
    )
    os: str | None
    kernel: str | None
    last_seen: datetime | None
    connectivity: str  # "connected", "lost" or "never" (no agent joined yet)
    is_controller: bool
    maintenance: MaintenancePublic | None = None  # null: not in maintenance


class EffectiveParameterPublic(BaseModel):
    value: Any
    source: str  # "explicit", "default", "property:<name>", "node:public_ip"


class RoleAssignmentPublic(BaseModel):
    role: str
    name: str
    parameters: dict[str, EffectiveParameterPublic]
    etag: str = Field(
        default="",
        description="the assignment's version: send it as `If-Match` to PATCH or DELETE "
        "this role (412 when the role changed since)",
    )


class RoleHealthPublic(BaseModel):
    state: Literal["healthy", "unhealthy", "unknown"]
    message: str | None = None


class NodeActionPublic(BaseModel):
    """The rulebook's answer for one action on this node now (domain/policy.py)."""

    name: str  # the operation: activate, delete, delete-assignment, admin-remove, ...
    allowed: bool
    role: str | None = None  # for a role action: the role it concerns
    rule: str | None = None  # when refused: the rule's code (the 409 it would answer)
    reason: str | None = None  # when refused: the sentence, with the way out
    confirm: str | None = None  # when allowed: the consequence an interface asks about


class NodeDetailPublic(NodePublic):
    session_key: str | None
    components: list[ComponentPublic]
    assignments: list[RoleAssignmentPublic]
    # per assigned role, as its agent last checked it; never changes the node's status
    role_health: dict[str, RoleHealthPublic] = Field(default_factory=dict)
    # every node action and role action with the rulebook's answer now
    actions: list[NodeActionPublic] = Field(default_factory=list)


class NodesPublic(BaseModel):
    items: list[NodePublic]
    total: int
    total_exact: bool = Field(
        True,
        description="false: more than `total` nodes match (a search or maintenance filter is "
        "counted up to 1,000 matches); page on until a page comes back short",
    )


class RoleAssign(Strict):
    # the role codes the services know (they check: 422 naming `role`)
    role: Annotated[
        OneLine, WithJsonSchema({"type": "string", "enum": list(ROLES), "examples": ["sip"]})
    ] = Field(max_length=16)
    parameters: dict[str, Any] = Field(default_factory=dict, max_length=64)


class RoleUpdate(Strict):
    parameters: dict[str, Any] = Field(max_length=64)


class RemoveRequest(Strict):
    confirm: StrictBool = False


class ActionRequest(Strict):
    """The body of an action (optional): the reason, recorded in the event."""

    reason: Text | None = Field(default=None, max_length=1000)


class DeactivateRequest(ActionRequest):
    """Deactivate's body: the only action that can be forced. A forced deactivation needs a
    reason (a non-empty one), published as `if force then reason` in the schema."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"force": {"const": True}}, "required": ["force"]},
            "then": {
                "required": ["reason"],
                "properties": {"reason": {"type": "string", "minLength": 1, "pattern": r"\S"}},
            },
        }
    )

    force: StrictBool = Field(
        default=False,
        description="end a DeactivatePending node's deactivation without its agent's "
        "signature (Deactivated at once); needs a reason, recorded with who forced it. The "
        "roles may still be running on the machine.",
    )


class ParameterPublic(BaseModel):
    name: str
    label: str
    type: str
    default: Any
    default_from: str | None
    minimum: int | None
    maximum: int | None
    max_length: int
    secret: bool
    customer_connectivity: bool
    description: str


class RolePublic(BaseModel):
    code: str
    name: str
    public_ip: str
    admin_removable: bool
    parameters: list[ParameterPublic]


class EventPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    node_id: int | None
    operation: str
    status_before: str | None
    status_after: str | None
    reason: str | None


class EventsPublic(BaseModel):
    items: list[EventPublic]
    total: int


class ExtensionCreate(Strict):
    # what the extension service accepts (spaces around are ignored)
    number: OneLine = Field(
        max_length=20, examples=["1001"], json_schema_extra={"pattern": "^ *[0-9]{1,20} *$"}
    )
    label: OneLine = Field(default="", max_length=255)


class ExtensionPublic(BaseModel):
    number: str
    label: str
    created_at: datetime


class ExtensionsPublic(BaseModel):
    items: list[ExtensionPublic]
    total: int


class Problem(BaseModel):
    """A refusal: `detail` says what happened and what to do; `rule` names the rule."""

    detail: str
    rule: str | None = None
