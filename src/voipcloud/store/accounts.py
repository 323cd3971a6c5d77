"""Accounts, their sessions (`api_tokens`) and their named API tokens (`account_tokens`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, func, insert, select, update

from voipcloud.domain.access import AccountRole, TokenScope
from voipcloud.store.tables import account_tokens, administrators, api_tokens


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    username: str
    role: AccountRole
    disabled: bool
    password_hash: str
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiTokenRow:
    id: int
    account_id: int
    username: str
    name: str
    scope: TokenScope
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None


_ACCOUNT_COLUMNS = (
    administrators.c.id,
    administrators.c.username,
    administrators.c.role,
    administrators.c.disabled,
    administrators.c.password_hash,
    administrators.c.created_at,
    administrators.c.updated_at,
)
_TOKEN_COLUMNS = (
    account_tokens.c.id,
    account_tokens.c.administrator_id,
    administrators.c.username,
    account_tokens.c.name,
    account_tokens.c.scope,
    account_tokens.c.created_at,
    account_tokens.c.expires_at,
    account_tokens.c.last_used_at,
)


def _account(row: Any) -> AccountRow:
    return AccountRow(
        id=row.id,
        username=row.username,
        role=AccountRole(row.role),
        disabled=bool(row.disabled),
        password_hash=row.password_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _token(row: Any, prefix: str = "") -> ApiTokenRow:
    """`prefix`: how the token's columns are labelled where a query selects others beside."""
    value = row._mapping
    return ApiTokenRow(
        id=value[f"{prefix}id"],
        account_id=value[f"{prefix}administrator_id"],
        username=value[f"{prefix}username"],
        name=value[f"{prefix}name"],
        scope=TokenScope(value[f"{prefix}scope"]),
        created_at=value[f"{prefix}created_at"],
        expires_at=value[f"{prefix}expires_at"],
        last_used_at=value[f"{prefix}last_used_at"],
    )


def _insert(conn: Connection, table: Table, **values: Any) -> int:
    """Insert one row; its new id."""
    return int(conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one())


# --- accounts ---------------------------------------------------------------------------


def administrator_count(conn: Connection) -> int:
    """How many accounts exist (of any role): zero only before the first start."""
    return int(conn.execute(select(func.count()).select_from(administrators)).scalar_one())


def add_account(
    conn: Connection, *, username: str, password_hash: str, role: AccountRole, now: datetime
) -> int:
    return _insert(
        conn,
        administrators,
        username=username,
        password_hash=password_hash,
        role=role.value,
        disabled=False,
        created_at=now,
        updated_at=now,
    )


def add_administrator(conn: Connection, *, username: str, password_hash: str, now: datetime) -> int:
    return add_account(
        conn, username=username, password_hash=password_hash, role=AccountRole.ADMIN, now=now
    )


def find_account(conn: Connection, username: str, *, lock: bool = False) -> AccountRow | None:
    query = select(*_ACCOUNT_COLUMNS).where(administrators.c.username == username)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else _account(row)


def get_account(conn: Connection, account_id: int) -> AccountRow | None:
    row = conn.execute(select(*_ACCOUNT_COLUMNS).where(administrators.c.id == account_id)).first()
    return None if row is None else _account(row)


def list_accounts(conn: Connection) -> list[AccountRow]:
    rows = conn.execute(select(*_ACCOUNT_COLUMNS).order_by(administrators.c.username)).all()
    return [_account(r) for r in rows]


def enabled_admin_ids(conn: Connection) -> list[int]:
    """The enabled administrators, their rows locked until the transaction ends (PostgreSQL;
    SQLite writers are serialized anyway): two concurrent demotions cannot both pass the
    last-admin rule."""
    rows = conn.execute(
        select(administrators.c.id)
        .where(
            administrators.c.role == AccountRole.ADMIN.value,
            administrators.c.disabled.is_(False),
        )
        .order_by(administrators.c.id)
        .with_for_update()
    ).all()
    return [int(r.id) for r in rows]


def update_account(conn: Connection, account_id: int, *, now: datetime, **values: Any) -> None:
    conn.execute(
        update(administrators)
        .where(administrators.c.id == account_id)
        .values(updated_at=now, **values)
    )


def delete_account(conn: Connection, account_id: int) -> None:
    end_all(conn, account_id)
    conn.execute(delete(administrators).where(administrators.c.id == account_id))


def set_password_hash(conn: Connection, administrator_id: int, password_hash: str) -> None:
    conn.execute(
        update(administrators)
        .where(administrators.c.id == administrator_id)
        .values(password_hash=password_hash)
    )


# --- sessions (short-lived, from a login) -----------------------------------------------


def add_token(
    conn: Connection, *, digest: str, administrator_id: int, now: datetime, expires_at: datetime
) -> None:
    conn.execute(
        insert(api_tokens).values(
            digest=digest, administrator_id=administrator_id, created_at=now, expires_at=expires_at
        )
    )


def session_owner(conn: Connection, *, digest: str, now: datetime) -> AccountRow | None:
    row = conn.execute(
        select(*_ACCOUNT_COLUMNS)
        .join(api_tokens, api_tokens.c.administrator_id == administrators.c.id)
        .where(api_tokens.c.digest == digest, api_tokens.c.expires_at > now)
    ).first()
    return None if row is None else _account(row)


def token_owner(conn: Connection, *, digest: str, now: datetime) -> str | None:
    found = session_owner(conn, digest=digest, now=now)
    return None if found is None else found.username


def revoke_token(conn: Connection, digest: str) -> None:
    conn.execute(delete(api_tokens).where(api_tokens.c.digest == digest))


def purge_expired_tokens(conn: Connection, now: datetime) -> None:
    conn.execute(delete(api_tokens).where(api_tokens.c.expires_at <= now))


def session_count(conn: Connection, account_id: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(api_tokens)
            .where(api_tokens.c.administrator_id == account_id)
        ).scalar_one()
    )


def end_all(
    conn: Connection,
    account_id: int,
    *,
    keep_session: str | None = None,
    keep_token: int | None = None,
) -> int:
    """End every session and API token of an account, but the one named to keep; returns how
    many were ended."""
    sessions = delete(api_tokens).where(api_tokens.c.administrator_id == account_id)
    if keep_session is not None:
        sessions = sessions.where(api_tokens.c.digest != keep_session)
    tokens = delete(account_tokens).where(account_tokens.c.administrator_id == account_id)
    if keep_token is not None:
        tokens = tokens.where(account_tokens.c.id != keep_token)
    return int(conn.execute(sessions).rowcount or 0) + int(conn.execute(tokens).rowcount or 0)


# --- named API tokens -------------------------------------------------------------------


def add_api_token(
    conn: Connection,
    *,
    account_id: int,
    name: str,
    scope: TokenScope,
    digest: str,
    now: datetime,
    expires_at: datetime,
) -> int:
    return _insert(
        conn,
        account_tokens,
        administrator_id=account_id,
        name=name,
        scope=scope.value,
        digest=digest,
        created_at=now,
        expires_at=expires_at,
    )


def api_token_owner(
    conn: Connection, *, digest: str, now: datetime
) -> tuple[AccountRow, ApiTokenRow] | None:
    row = conn.execute(
        select(*_ACCOUNT_COLUMNS, *(c.label(f"token_{c.name}") for c in _TOKEN_COLUMNS))
        .join(account_tokens, account_tokens.c.administrator_id == administrators.c.id)
        .where(account_tokens.c.digest == digest, account_tokens.c.expires_at > now)
    ).first()
    if row is None:
        return None
    return _account(row), _token(row, prefix="token_")


def list_api_tokens(conn: Connection, account_id: int | None) -> list[ApiTokenRow]:
    query = select(*_TOKEN_COLUMNS).join(
        administrators, account_tokens.c.administrator_id == administrators.c.id
    )
    if account_id is not None:
        query = query.where(account_tokens.c.administrator_id == account_id)
    rows = conn.execute(query.order_by(administrators.c.username, account_tokens.c.id)).all()
    return [_token(r) for r in rows]


def get_api_token(conn: Connection, token_id: int) -> ApiTokenRow | None:
    row = conn.execute(
        select(*_TOKEN_COLUMNS)
        .join(administrators, account_tokens.c.administrator_id == administrators.c.id)
        .where(account_tokens.c.id == token_id)
    ).first()
    return None if row is None else _token(row)


def delete_api_token(conn: Connection, token_id: int) -> bool:
    done = conn.execute(delete(account_tokens).where(account_tokens.c.id == token_id))
    return bool(done.rowcount)


def touch_api_token(
    conn: Connection, token_id: int, now: datetime, *, older_than: datetime
) -> None:
    """Record a use; at most one write per token per interval (not one per request)."""
    conn.execute(
        update(account_tokens)
        .where(
            account_tokens.c.id == token_id,
            and_(
                (account_tokens.c.last_used_at.is_(None))
                | (account_tokens.c.last_used_at < older_than)
            ),
        )
        .values(last_used_at=now)
    )


def purge_expired_api_tokens(conn: Connection, now: datetime) -> None:
    conn.execute(delete(account_tokens).where(account_tokens.c.expires_at <= now))
