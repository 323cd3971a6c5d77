"""Role assignment rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from voipcloud.domain.model import RoleAssignment
from voipcloud.store.tables import role_assignments as ra


def for_node(conn: Connection, node_id: int) -> list[RoleAssignment]:
    rows = conn.execute(
        select(ra).where(ra.c.node_id == node_id).order_by(ra.c.created_at, ra.c.role)
    )
    return [
        RoleAssignment(
            r.node_id,
            r.role,
            dict(r.parameters or {}),
            r.created_at,
            r.updated_at,
            r.row_version,
        )
        for r in rows
    ]


def add(
    conn: Connection, *, node_id: int, role: str, parameters: dict[str, Any], now: datetime
) -> None:
    conn.execute(
        insert(ra).values(
            node_id=node_id,
            role=role,
            parameters=parameters,
            created_at=now,
            updated_at=now,
            row_version=1,
        )
    )


def set_parameters(
    conn: Connection,
    *,
    node_id: int,
    role: str,
    parameters: dict[str, Any],
    now: datetime,
    version: int | None = None,
) -> bool:
    """Write the parameters and bump the version; with `version`, only if the assignment
    still has it (compare-and-set: False when another transaction changed it first)."""
    where = [ra.c.node_id == node_id, ra.c.role == role]
    if version is not None:
        where.append(ra.c.row_version == version)
    result = conn.execute(
        update(ra)
        .where(*where)
        .values(parameters=parameters, updated_at=now, row_version=ra.c.row_version + 1)
    )
    return result.rowcount == 1


def remove(conn: Connection, *, node_id: int, role: str) -> None:
    conn.execute(delete(ra).where(ra.c.node_id == node_id, ra.c.role == role))


def remove_all(conn: Connection, *, node_id: int) -> None:
    conn.execute(delete(ra).where(ra.c.node_id == node_id))
