"""First start: the IC node (this machine, role `ic`) and the infrastructure row."""

from __future__ import annotations

import socket

from voipcloud.domain import validation
from voipcloud.domain.model import Node
from voipcloud.domain.properties import SECRET_PROPERTIES, initial_properties
from voipcloud.domain.roles import CONTROLLER_ROLE
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services import transitions
from voipcloud.services.context import CONTROLLER_ACTOR, Context
from voipcloud.services.nodes import NodeService
from voipcloud.services.secrets_box import seal
from voipcloud.store import events, infrastructure, roles
from voipcloud.store import nodes as node_rows


def this_machine() -> tuple[str, str]:
    """(hostname, private IP) of the machine the controller runs on."""
    try:
        hostname = validation.normalize_hostname(socket.gethostname())
    except ValueError:
        hostname = "controller"
    address = "127.0.0.1"
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        candidates = [str(info[4][0]) for info in infos]
        address = next((a for a in candidates if not a.startswith("127.")), address)
    except OSError:
        pass
    return hostname, address


def _sealed_initial(ctx: Context, hostname: str) -> dict[str, object]:
    """The first properties, their generated shared passwords encrypted at rest."""
    return seal(ctx.box, initial_properties(controller_hostname=hostname), secret=SECRET_PROPERTIES)


def ensure_controller_node(ctx: Context, nodes: NodeService) -> Node:
    with ctx.db.write() as conn:
        existing = node_rows.get_controller(conn)
        if existing is not None:
            if not infrastructure.exists(conn):
                infrastructure.create(
                    conn,
                    properties=_sealed_initial(ctx, existing.hostname),
                    now=ctx.clock(),
                )
            return existing
        hostname, address = this_machine()
        now = ctx.clock()
        if not infrastructure.exists(conn):
            infrastructure.create(conn, properties=_sealed_initial(ctx, hostname), now=now)
        if node_rows.live_hostname_owner(conn, hostname) is not None:
            hostname = f"{hostname}-controller"
        node_id = node_rows.insert_node(
            conn,
            hostname=hostname,
            private_ip=address,
            public_ip=None,
            container_id=None,
            is_controller=True,
            now=now,
        )
        roles.add(conn, node_id=node_id, role=CONTROLLER_ROLE, parameters={}, now=now)
        node = transitions.load(conn, node_id)
        node_rows.compare_and_set(conn, node, now=now, **nodes.session_key_values(node))
        events.append(
            conn,
            at=now,
            actor=CONTROLLER_ACTOR,
            node_id=node_id,
            operation="add-node",
            status_after=NodeStatus.OFFLINE.value,
            reason="Infrastructure Controller node created at first start",
        )
        return transitions.load(conn, node_id)
