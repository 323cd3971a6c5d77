"""What the agent channels read cheaply: version stamps for the sweep, the reported inventory.

Statements are built once (STACK-NOTES: about 3x faster than building them per call).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, select

from voipcloud.domain.model import Node
from voipcloud.store import nodes as node_rows
from voipcloud.store.tables import nodes

# A node's desired state changes only through a compare-and-set write of its row (which bumps
# row_version); its agent's credential is agent_token_digest. Together: the channel's stamp.
Stamp = tuple[int, str | None]

_STAMPS = select(nodes.c.id, nodes.c.row_version, nodes.c.agent_token_digest)
_INVENTORY = select(
    nodes.c.os, nodes.c.kernel, nodes.c.container_id, nodes.c.agent_version, nodes.c.components
).where(nodes.c.id == bindparam("node_id"))


# What the agent's desired state needs: not the reported components (decoding a few hundred
# of them was half the cost of a desired state) nor any secret column.
_SKIPPED = {"components", "session_key_encrypted", "session_key_digest", "agent_token_digest"}
_FOR_AGENT = select(
    *[c for c in nodes.c if c.name not in _SKIPPED],
    nodes.c.session_key_digest.is_not(None).label("has_session_key"),
).where(nodes.c.id == bindparam("node_id"))


def node_for_agent(conn: Connection, node_id: int) -> Node | None:
    """The node as its agent's desired state reads it (components left out: empty)."""
    row = conn.execute(_FOR_AGENT, {"node_id": node_id}).first()
    if row is None:
        return None
    return node_rows._node(row._mapping, node_rows.roles_of(conn, [node_id])[node_id])


def stamps(conn: Connection) -> dict[int, Stamp]:
    """Every node's stamp, in one statement (a narrow scan: three small columns)."""
    return {row[0]: (row[1], row[2]) for row in conn.execute(_STAMPS)}


def reported_inventory(conn: Connection, node_id: int) -> dict[str, Any] | None:
    row = conn.execute(_INVENTORY, {"node_id": node_id}).mappings().first()
    return None if row is None else dict(row)
