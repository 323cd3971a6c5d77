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
        RoleAssignment(r.node_id, r.role, dict(r.parameters or {}), r.created_at, r.updated_at)
        for r in rows
    ]


def add(
    conn: Connection, *, node_id: int, role: str, parameters: dict[str, Any], now: datetime
) -> None:
    conn.execute(
        insert(ra).values(
            node_id=node_id, role=role, parameters=parameters, created_at=now, updated_at=now
        )
    )


def set_parameters(
    conn: Connection, *, node_id: int, role: str, parameters: dict[str, Any], now: datetime
) -> None:
    conn.execute(
        update(ra)
        .where(ra.c.node_id == node_id, ra.c.role == role)
        .values(parameters=parameters, updated_at=now)
    )


def remove(conn: Connection, *, node_id: int, role: str) -> None:
    conn.execute(delete(ra).where(ra.c.node_id == node_id, ra.c.role == role))


def remove_all(conn: Connection, *, node_id: int) -> None:
    conn.execute(delete(ra).where(ra.c.node_id == node_id))
