"""Administrators and their API tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from voipcloud.store.tables import administrators, api_tokens


def administrator_count(conn: Connection) -> int:
    return len(conn.execute(select(administrators.c.id)).all())


def add_administrator(conn: Connection, *, username: str, password_hash: str, now: datetime) -> int:
    result = conn.execute(
        insert(administrators)
        .values(username=username, password_hash=password_hash, created_at=now)
        .returning(administrators.c.id)
    )
    return int(result.scalar_one())


def find_administrator(conn: Connection, username: str) -> tuple[int, str] | None:
    row = conn.execute(
        select(administrators.c.id, administrators.c.password_hash).where(
            administrators.c.username == username
        )
    ).first()
    return None if row is None else (row.id, row.password_hash)


def set_password_hash(conn: Connection, administrator_id: int, password_hash: str) -> None:
    conn.execute(
        administrators.update()
        .where(administrators.c.id == administrator_id)
        .values(password_hash=password_hash)
    )


def add_token(
    conn: Connection, *, digest: str, administrator_id: int, now: datetime, expires_at: datetime
) -> None:
    conn.execute(
        insert(api_tokens).values(
            digest=digest, administrator_id=administrator_id, created_at=now, expires_at=expires_at
        )
    )


def token_owner(conn: Connection, *, digest: str, now: datetime) -> str | None:
    row = conn.execute(
        select(administrators.c.username)
        .join(api_tokens, api_tokens.c.administrator_id == administrators.c.id)
        .where(api_tokens.c.digest == digest, api_tokens.c.expires_at > now)
    ).first()
    return None if row is None else str(row.username)


def revoke_token(conn: Connection, digest: str) -> None:
    conn.execute(delete(api_tokens).where(api_tokens.c.digest == digest))


def purge_expired_tokens(conn: Connection, now: datetime) -> None:
    conn.execute(delete(api_tokens).where(api_tokens.c.expires_at <= now))
