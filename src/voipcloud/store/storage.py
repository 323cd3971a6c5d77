"""Storage Configuration rows, the stored-resource table and migration progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, insert, or_, select, update

from voipcloud.store.tables import storage_config, storage_migrations, storage_resources


@dataclass(frozen=True, slots=True)
class ConfigRow:
    kind: str
    backend: str
    local_path: str
    s3: dict[str, Any]
    access_key_encrypted: bytes | None
    secret_key_encrypted: bytes | None
    row_version: int = 0  # 0: never saved (the defaults); bumped by every save


@dataclass(frozen=True, slots=True)
class ResourceRow:
    kind: str
    key: str
    backend: str
    stale_backend: str | None
    content_type: str
    size: int
    sha256: str
    created_at: datetime
    updated_at: datetime


# --- configuration ------------------------------------------------------------------------


def configs(conn: Connection) -> dict[str, ConfigRow]:
    rows = conn.execute(select(storage_config))
    return {
        r.kind: ConfigRow(
            kind=r.kind,
            backend=r.backend,
            local_path=r.local_path,
            s3=dict(r.s3),
            access_key_encrypted=r.s3_access_key_encrypted,
            secret_key_encrypted=r.s3_secret_key_encrypted,
            row_version=r.row_version,
        )
        for r in rows
    }


def save_config(conn: Connection, row: ConfigRow, *, now: datetime) -> bool:
    """Save one kind and bump its version: a compare-and-set on `row.row_version` (the
    version it was read at; 0 inserts). False when another transaction saved it first."""
    values = {
        "backend": row.backend,
        "local_path": row.local_path,
        "s3": row.s3,
        "s3_access_key_encrypted": row.access_key_encrypted,
        "s3_secret_key_encrypted": row.secret_key_encrypted,
        "updated_at": now,
    }
    if row.row_version == 0:
        conn.execute(insert(storage_config).values(kind=row.kind, row_version=1, **values))
        return True
    changed = conn.execute(
        update(storage_config)
        .where(storage_config.c.kind == row.kind, storage_config.c.row_version == row.row_version)
        .values(row_version=row.row_version + 1, **values)
    ).rowcount
    return changed == 1


# --- resources ----------------------------------------------------------------------------


def _resource(row: Row[Any]) -> ResourceRow:
    m = row._mapping
    return ResourceRow(
        kind=m["kind"],
        key=m["key"],
        backend=m["backend"],
        stale_backend=m["stale_backend"],
        content_type=m["content_type"],
        size=m["size"],
        sha256=m["sha256"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _at(kind: str, key: str) -> Any:
    return and_(storage_resources.c.kind == kind, storage_resources.c.key == key)


def resource(conn: Connection, kind: str, key: str) -> ResourceRow | None:
    row = conn.execute(select(storage_resources).where(_at(kind, key))).first()
    return _resource(row) if row else None


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def page(
    conn: Connection, kind: str, *, prefix: str, limit: int, offset: int
) -> tuple[list[ResourceRow], int]:
    where = storage_resources.c.kind == kind
    if prefix:
        where = and_(where, storage_resources.c.key.like(_escape_like(prefix) + "%", escape="\\"))
    rows = conn.execute(
        select(storage_resources)
        .where(where)
        .order_by(storage_resources.c.key)
        .limit(limit)
        .offset(offset)
    )
    total = conn.execute(select(func.count()).select_from(storage_resources).where(where))
    return [_resource(r) for r in rows], total.scalar_one()


def upsert(
    conn: Connection,
    *,
    kind: str,
    key: str,
    backend: str,
    stale_backend: str | None,
    content_type: str,
    size: int,
    sha256: str,
    now: datetime,
) -> None:
    values = {
        "backend": backend,
        "stale_backend": stale_backend,
        "content_type": content_type,
        "size": size,
        "sha256": sha256,
        "updated_at": now,
    }
    if not conn.execute(update(storage_resources).where(_at(kind, key)).values(**values)).rowcount:
        conn.execute(insert(storage_resources).values(kind=kind, key=key, created_at=now, **values))


def remove(conn: Connection, kind: str, key: str) -> bool:
    return conn.execute(delete(storage_resources).where(_at(kind, key))).rowcount == 1


def usage(conn: Connection) -> dict[str, dict[str, tuple[int, int]]]:
    """kind → backend → (count, bytes)."""
    rows = conn.execute(
        select(
            storage_resources.c.kind,
            storage_resources.c.backend,
            func.count(),
            func.coalesce(func.sum(storage_resources.c.size), 0),
        ).group_by(storage_resources.c.kind, storage_resources.c.backend)
    )
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for kind, backend, count, size in rows:
        found.setdefault(kind, {})[backend] = (int(count), int(size))
    return found


def _pending(kind: str, target: str) -> Any:
    return and_(
        storage_resources.c.kind == kind,
        or_(
            storage_resources.c.backend != target,
            storage_resources.c.stale_backend.is_not(None),
        ),
    )


def pending_after(
    conn: Connection, kind: str, target: str, *, after: str, limit: int
) -> list[ResourceRow]:
    """Resources not yet (fully) moved to `target`, in key order after `after`."""
    rows = conn.execute(
        select(storage_resources)
        .where(_pending(kind, target), storage_resources.c.key > after)
        .order_by(storage_resources.c.key)
        .limit(limit)
    )
    return [_resource(r) for r in rows]


def progress_counts(conn: Connection, kind: str, target: str) -> tuple[int, int, int, int]:
    """(total, done, bytes_total, bytes_done) of the kind towards `target`."""
    size = storage_resources.c.size
    total, bytes_total = conn.execute(
        select(func.count(), func.coalesce(func.sum(size), 0)).where(
            storage_resources.c.kind == kind
        )
    ).one()
    pending, bytes_pending = conn.execute(
        select(func.count(), func.coalesce(func.sum(size), 0)).where(_pending(kind, target))
    ).one()
    return int(total), int(total - pending), int(bytes_total), int(bytes_total - bytes_pending)


def mark_moved(
    conn: Connection, *, kind: str, key: str, source: str, target: str, sha256: str, now: datetime
) -> bool:
    """Point the row at its verified copy in `target`; the old copy is now stale."""
    changed = conn.execute(
        update(storage_resources)
        .where(
            _at(kind, key),
            storage_resources.c.backend == source,
            storage_resources.c.sha256 == sha256,
        )
        .values(backend=target, stale_backend=source, updated_at=now)
    ).rowcount
    return bool(changed)


def clear_stale(conn: Connection, *, kind: str, key: str, stale_backend: str) -> None:
    conn.execute(
        update(storage_resources)
        .where(_at(kind, key), storage_resources.c.stale_backend == stale_backend)
        .values(stale_backend=None)
    )


# --- migrations ---------------------------------------------------------------------------


def migration(conn: Connection, kind: str, *, for_update: bool = False) -> dict[str, Any] | None:
    """The kind's migration row; `for_update` locks it until the transaction ends, so a
    status read and written back in one transaction cannot undo another controller's pause
    (PostgreSQL; SQLite's writers take turns anyway)."""
    query = select(storage_migrations).where(storage_migrations.c.kind == kind)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return dict(row._mapping) if row else None


def set_migration_status_if(
    conn: Connection, kind: str, *, current: str, status: str, now: datetime
) -> bool:
    """Move the kind's migration from `current` to `status` in one statement (no read
    before the write to race with); False when it was not `current`."""
    changed = conn.execute(
        update(storage_migrations)
        .where(storage_migrations.c.kind == kind, storage_migrations.c.status == current)
        .values(status=status, updated_at=now)
    ).rowcount
    return bool(changed)


def save_migration(conn: Connection, kind: str, **values: Any) -> None:
    changed = conn.execute(
        update(storage_migrations).where(storage_migrations.c.kind == kind).values(**values)
    ).rowcount
    if not changed:
        conn.execute(insert(storage_migrations).values(kind=kind, **values))
