"""The Configuration Wizard: detect this machine, plan, then configure and activate the IC node.

Running the wizard is one transaction: the properties are saved, the missing standard roles
are assigned to the IC node with their defaults, its public IP is set, and Activate is left
pending for its agent (the one `voipcloud serve` runs beside the controller). The outcome
arrives like any activation: Online, or ActivateFailed with the agent's reason.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from voipcloud.domain import policy
from voipcloud.domain.errors import RuleViolation
from voipcloud.domain.lifecycle import Operation, PendingOperation
from voipcloud.domain.model import Node
from voipcloud.domain.properties import masked, validate_changes
from voipcloud.domain.wizard import (
    WizardInput,
    WizardPlan,
    check_available,
    make_plan,
    validate_input,
)
from voipcloud.services import transitions
from voipcloud.services.bootstrap import this_machine
from voipcloud.services.context import Context
from voipcloud.services.nodes import NodeService, node_facts
from voipcloud.services.roles import RoleService
from voipcloud.services.transitions import Change
from voipcloud.store import infrastructure
from voipcloud.store import nodes as node_rows
from voipcloud.store import roles as role_rows

if TYPE_CHECKING:  # the infrastructure service owns this one
    from voipcloud.services.infrastructure import InfrastructureService


@dataclass(frozen=True, slots=True)
class Detected:
    """What the wizard knows before asking anything."""

    hostname: str  # this machine's host name
    addresses: list[str]  # this machine's addresses, as the resolver knows them
    controller: Node
    suggested_public_ip: str | None  # a global address of this machine, if it has one
    properties: dict[str, Any]  # the current properties, secrets masked
    available: bool
    unavailable_reason: str | None  # why the wizard may not run now (the 409 message)


@dataclass(frozen=True, slots=True)
class WizardRun:
    node: Node  # the IC node, Activate pending
    plan: WizardPlan


def machine_addresses(hostname: str) -> list[str]:
    found: list[str] = []
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except OSError:
        infos = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in found:
            found.append(address)
    return found


class WizardService:
    def __init__(
        self,
        ctx: Context,
        *,
        nodes: NodeService,
        roles: RoleService,
        infrastructure: InfrastructureService,
    ) -> None:
        self._ctx = ctx
        self._nodes = nodes
        self._roles = roles
        self._infrastructure = infrastructure

    def detect(self) -> Detected:
        hostname, primary = this_machine()
        addresses = machine_addresses(hostname)
        if primary not in addresses:
            addresses.insert(0, primary)
        with self._ctx.db.read() as conn:
            controller = _controller(conn)
            reason = check_available(node_facts(conn, controller)).reason
            properties = masked(self._infrastructure.read(conn))
        public = [a for a in addresses if ipaddress.ip_address(a).is_global]
        return Detected(
            hostname=hostname,
            addresses=addresses,
            controller=controller,
            suggested_public_ip=public[0] if public else controller.public_ip,
            properties=properties,
            available=reason is None,
            unavailable_reason=reason,
        )

    def controller_node(self) -> Node:
        with self._ctx.db.read() as conn:
            return _controller(conn)

    def plan(self, answers: dict[str, Any]) -> WizardPlan:
        """What `run` would do with these answers (409 when the wizard is not available)."""
        wanted = validate_input(answers)
        with self._ctx.db.read() as conn:
            return self._plan(conn, wanted)

    def run(self, answers: dict[str, Any], *, actor: str) -> WizardRun:
        wanted = validate_input(answers)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            infrastructure.lock(conn)
            plan = self._plan(conn, wanted)
            controller = _controller(conn)
            before = self._infrastructure.read(conn)
            after = validate_changes(before, wanted.property_changes())
            self._infrastructure.save(conn, before=before, after=after, actor=actor, now=now)
            for code in plan.new_roles:
                role_rows.add(conn, node_id=controller.id, role=code, parameters={}, now=now)
            key = None if controller.has_session_key else self._nodes.new_session_key()
            assigned = ", ".join(plan.new_roles) or "none (all present)"
            node = transitions.apply(
                conn,
                controller,
                Change(
                    Operation.WIZARD,
                    actor,
                    reason=(
                        f"Configuration Wizard: system domain {after['system_domain']}, "
                        f"public IP {plan.public_ip}; roles assigned: {assigned}"
                    ),
                    fields={"public_ip": plan.public_ip, "private_ip": plan.private_ip},
                    new_configuration=True,
                    session_key=key,
                ),
                now=now,
            )
            # the node as the wizard leaves it: the rulebook must accept its activation
            policy.decide(Operation.ACTIVATE, node_facts(conn, node)).check()
            node = transitions.apply(
                conn,
                node,
                Change(
                    Operation.ACTIVATE,
                    actor,
                    reason="activation started by the Configuration Wizard",
                    start=PendingOperation.ACTIVATE,
                ),
                now=now,
            )
        return WizardRun(node=node, plan=plan)

    def _plan(self, conn: Connection, wanted: WizardInput) -> WizardPlan:
        controller = _controller(conn)
        facts = node_facts(conn, controller)
        check_available(facts).check()
        after = validate_changes(self._infrastructure.read(conn), wanted.property_changes())
        explicit = {
            a.role: self._roles.reveal(a.parameters)
            for a in role_rows.for_node(conn, controller.id)
        }
        return make_plan(controller, wanted, facts, properties_after=after, explicit=explicit)


def _controller(conn: Connection) -> Node:
    node = node_rows.get_controller(conn)
    if node is None:  # pragma: no cover - created at first start
        raise RuleViolation(
            "no-controller-node",
            "There is no Infrastructure Controller node yet; restart voipcloud serve.",
        )
    return node
