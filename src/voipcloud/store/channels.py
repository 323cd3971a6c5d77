"""What the agent channels read cheaply: version stamps for the sweep, the reported inventory.

Statements are built once (STACK-NOTES: about 3x faster than building them per call).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, select

from voipcloud.store.tables import nodes

# A node's desired state changes only through a compare-and-set write of its row (which bumps
# row_version); its agent's credential is agent_token_digest. Together: the channel's stamp.
Stamp = tuple[int, str | None]

_STAMPS = select(nodes.c.id, nodes.c.row_version, nodes.c.agent_token_digest)
_INVENTORY = select(
    nodes.c.os, nodes.c.kernel, nodes.c.container_id, nodes.c.agent_version, nodes.c.components
).where(nodes.c.id == bindparam("node_id"))


def stamps(conn: Connection) -> dict[int, Stamp]:
    """Every node's stamp, in one statement (a narrow scan: three small columns)."""
    return {row[0]: (row[1], row[2]) for row in conn.execute(_STAMPS)}


def reported_inventory(conn: Connection, node_id: int) -> dict[str, Any] | None:
    row = conn.execute(_INVENTORY, {"node_id": node_id}).mappings().first()
    return None if row is None else dict(row)
