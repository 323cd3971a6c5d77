"""The agent ↔ controller wire protocol, shared by both ends (no service or store code here).

Join (HTTP): POST /api/v1/agent/join {session_key, node_id?, inventory} → {node_id, agent_token,
heartbeat_interval}. Then one WebSocket per agent, GET /api/v1/agent/channel with
`Authorization: Bearer <agent_token>`, carrying beats and reports up and desired state down:

    agent → controller   hello {inventory | inventory_digest, outcomes, features?}   beat
                         inventory {inventory}
                         outcome {operation_id, success, reason}   problem {reason}
                         health {roles: {code: {state, message?}}}   (feature "role-health")
    controller → agent   desired {..., node?}   ack {operation_id, recorded}
                         inventory-request   (feature "inventory-digest")

Compatibility: an agent announces what it understands in `hello.features`; the controller
sends `desired.node` (the node's addresses) only to an agent that announced "node-addresses",
so an older agent, whose models forbid unknown fields, keeps working against a newer
controller. (The controller is upgraded first: an older controller refuses the new fields.)

Close codes: 4401 credential refused (join again), 4410 node deleted (stop and exit); any
other close (1001/1012 controller shutting down, 1011 error, 1013 try again later, 4408 no
beats within the missed-beats window) means
reconnect with backoff. docs/protocol.md has the order of messages, the exactly-once rule for
operations, the deactivation retries and the reconnect figures below.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

CLOSE_UNAUTHORIZED = 4401
CLOSE_DELETED = 4410
CLOSE_POLICY = 1008
CLOSE_SILENT = 4408  # nothing heard within the missed-beats window: reconnect
MAX_MESSAGE_BYTES = 1_048_576
MAX_COMPONENTS = 10_000

# The agent reconnects after RECONNECT_BASE * 2**n seconds at most (full jitter: a uniform
# delay between 0 and that), capped at RECONNECT_CAP; it starts again from RECONNECT_BASE only
# after a channel stayed healthy (desired state received, open for HEALTHY_BEATS heartbeat
# intervals). The controller gives operations it inherited from before its own start
# RECONNECT_CAP more seconds, the longest an agent may take to come back.
RECONNECT_BASE = 1.0
RECONNECT_CAP = 30.0
# A controller with too many channel handshakes in progress answers the upgrade with HTTP 503
# and `Retry-After: <seconds>`; the agent waits that long plus uniform(0, RETRY_AFTER_JITTER)
# instead of its own backoff (docs/protocol.md, "Load shedding").
RETRY_AFTER_JITTER = 1.0
RETRY_AFTER_MAX = 600
HEALTHY_BEATS = 3
# The agent gives up on a connection whose beats the controller's host has not acknowledged
# (TCP) for MISSED_BEATS heartbeat intervals: a vanished controller, without WebSocket pings.
MISSED_BEATS = 3
# A failed deactivation is retried by the agent after DEACTIVATE_RETRY_BASE * 2**(n-1) s,
# capped at DEACTIVATE_RETRY_CAP, until it succeeds or the operation is no longer pending.
DEACTIVATE_RETRY_BASE = 2.0
DEACTIVATE_RETRY_CAP = 300.0

Short = Annotated[str, StringConstraints(max_length=255)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentInfo(_Model):
    name: Short
    version: Short


class Inventory(_Model):
    os: Short = ""
    kernel: Short = ""
    container_id: Annotated[str, StringConstraints(max_length=128)] = ""
    version: Short = ""
    components: list[ComponentInfo] = Field(default_factory=list, max_length=MAX_COMPONENTS)


class JoinRequest(_Model):
    session_key: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    node_id: int | None = None  # the node this agent joined as before, if any
    inventory: Inventory = Field(default_factory=Inventory)


class JoinAnswer(_Model):
    node_id: int
    agent_token: str
    heartbeat_interval: float


class OutcomeReport(_Model):
    type: Literal["outcome"] = "outcome"
    operation_id: Annotated[str, StringConstraints(max_length=64)]
    success: bool
    reason: Annotated[str, StringConstraints(max_length=4000)] | None = None
    # a failed deactivation attempt (the operation stays pending): its number, counted by the
    # agent across its restarts, and the seconds until the agent tries again
    attempt: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    retry_in: Annotated[float, Field(ge=0, le=86_400)] | None = None


FEATURE_NODE_ADDRESSES = "node-addresses"
FEATURE_ROLE_HEALTH = "role-health"
FEATURE_INVENTORY_DIGEST = "inventory-digest"
# the controller sends `desired.reconnect_window`: after losing a healthy channel the agent
# waits uniform(0, window) seconds before its first attempt (the fleet spreads itself)
FEATURE_RECONNECT_WINDOW = "reconnect-window"
HEALTH_STATES = ("healthy", "unhealthy", "unknown")


Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def inventory_digest(inventory: Inventory) -> str:
    """What an agent with the "inventory-digest" feature sends in its hello instead of the
    whole inventory: the SHA-256 of its JSON (fields in the model's order)."""
    return hashlib.sha256(inventory.model_dump_json().encode()).hexdigest()


class Hello(_Model):
    """The first frame. An agent sends its `inventory`, or (feature "inventory-digest") only
    its `inventory_digest`: the controller then asks for the inventory when its copy differs."""

    type: Literal["hello"] = "hello"
    inventory: Inventory | None = None
    inventory_digest: Digest | None = None
    outcomes: list[OutcomeReport] = Field(default_factory=list, max_length=200)
    features: list[Annotated[str, StringConstraints(max_length=64)]] | None = Field(
        default=None, max_length=32
    )

    @model_validator(mode="after")
    def _inventory_or_digest(self) -> Hello:
        if self.inventory is None and self.inventory_digest is None:
            raise ValueError("hello needs its inventory or its inventory_digest")
        return self


class RoleHealth(_Model):
    state: Literal["healthy", "unhealthy", "unknown"]
    message: Annotated[str, StringConstraints(max_length=1000)] | None = None


class HealthReport(_Model):
    """The result of the latest health check of each role the agent runs (all of them)."""

    type: Literal["health"] = "health"
    roles: dict[Annotated[str, StringConstraints(max_length=16)], RoleHealth] = Field(
        default_factory=dict, max_length=64
    )


class Beat(_Model):
    type: Literal["beat"] = "beat"


class InventoryUpdate(_Model):
    type: Literal["inventory"] = "inventory"
    inventory: Inventory


class Problem(_Model):
    type: Literal["problem"] = "problem"
    reason: Annotated[str, StringConstraints(max_length=4000)]


AgentMessage = Annotated[
    Hello | Beat | InventoryUpdate | OutcomeReport | Problem | HealthReport,
    Field(discriminator="type"),
]


class AgentEnvelope(_Model):
    message: AgentMessage


class PendingOperation(_Model):
    id: str
    kind: Literal["activate", "deactivate", "fix"]


class DesiredRole(_Model):
    code: str
    name: str
    parameters: dict[str, Any]


class NodeAddresses(_Model):
    private_ip: str
    public_ip: str | None = None


class Desired(_Model):
    type: Literal["desired"] = "desired"
    node_id: int
    hostname: str
    status: str
    generation: int
    operation: PendingOperation | None
    roles: list[DesiredRole]
    node: NodeAddresses | None = None  # only for agents with the "node-addresses" feature
    # seconds over which agents spread their first reconnect (feature "reconnect-window")
    reconnect_window: float | None = Field(default=None, ge=0, le=RECONNECT_CAP)


def desired_exclusions(desired: Desired) -> set[str] | None:
    """The optional fields left out of a desired state (an older agent refuses unknown ones)."""
    left = {name for name in ("node", "reconnect_window") if getattr(desired, name) is None}
    return left or None


class Ack(_Model):
    type: Literal["ack"] = "ack"
    operation_id: str
    recorded: bool


class InventoryRequest(_Model):
    """The controller's copy of the inventory differs from the digest in the agent's hello
    (only to agents with the "inventory-digest" feature): answer with `inventory {inventory}`."""

    type: Literal["inventory-request"] = "inventory-request"
