"""Named API tokens for automation: per account, scoped `read` or `write`, expiring, shown once
(only their SHA-256 is stored: they are 256-bit random), listed with their last use,
revocable one by one. A token acts with its account's role as it is at each request, narrowed
by its scope (domain/access.py), so it never exceeds the role."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from voipcloud.domain.access import Permission, Principal, TokenScope
from voipcloud.domain.errors import InvalidInput, NotFound, RuleViolation
from voipcloud.services.context import Context
from voipcloud.services.secrets_box import token_digest
from voipcloud.store import accounts, events
from voipcloud.store.accounts import ApiTokenRow

API_TOKEN_PREFIX = "vct_"  # noqa: S105 - a prefix that tells API tokens from sessions
DEFAULT_LIFETIME = timedelta(days=90)
MAX_LIFETIME = timedelta(days=366)
MIN_LIFETIME = timedelta(minutes=1)
MAX_NAME = 64


class TokenService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def create(
        self,
        principal: Principal,
        *,
        name: str,
        scope: TokenScope,
        expires_at: datetime | None = None,
    ) -> tuple[ApiTokenRow, str]:
        """A new token of the signed-in account; the secret is returned this once."""
        name = name.strip()
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise InvalidInput.one(
                ("body", "name"), f"must be 1 to {MAX_NAME} printable characters"
            )
        now = self._ctx.clock()
        if expires_at is None:
            expires_at = now + DEFAULT_LIFETIME
        if expires_at.tzinfo is None:
            raise InvalidInput.one(("body", "expires_at"), "must carry a time zone (e.g. Z)")
        if expires_at < now + MIN_LIFETIME:
            raise InvalidInput.one(("body", "expires_at"), "must be in the future")
        if expires_at > now + MAX_LIFETIME:
            raise InvalidInput.one(
                ("body", "expires_at"), f"must be at most {MAX_LIFETIME.days} days ahead"
            )
        secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._ctx.db.write() as conn:
            taken = any(
                t.name == name for t in accounts.list_api_tokens(conn, principal.account_id)
            )
            if taken:
                raise RuleViolation(
                    "token-name-taken", f"You have an API token named {name} already."
                )
            token_id = accounts.add_api_token(
                conn,
                account_id=principal.account_id,
                name=name,
                scope=scope,
                digest=token_digest(secret),
                now=now,
                expires_at=expires_at,
            )
            events.append(
                conn,
                at=now,
                actor=principal.actor,
                node_id=None,
                operation="token-created",
                reason=f"API token {token_id} ({scope.value}) of {principal.username} created, "
                f"expires {expires_at:%Y-%m-%d %H:%M} UTC",
            )
            row = accounts.get_api_token(conn, token_id)
        assert row is not None
        return row, secret

    def list(self, principal: Principal) -> list[ApiTokenRow]:
        """The account's own tokens; an administrator sees every account's."""
        everyone = principal.may(Permission.ACCOUNTS)
        with self._ctx.db.read() as conn:
            return accounts.list_api_tokens(conn, None if everyone else principal.account_id)

    def revoke(self, principal: Principal, token_id: int) -> None:
        """Revoke one token: one's own, or (administrators) anyone's. It is refused at once."""
        with self._ctx.db.write() as conn:
            row = accounts.get_api_token(conn, token_id)
            mine = row is not None and row.account_id == principal.account_id
            if row is None or not (mine or principal.may(Permission.ACCOUNTS)):
                raise NotFound(f"No API token {token_id}.")
            accounts.delete_api_token(conn, token_id)
            events.append(
                conn,
                at=self._ctx.clock(),
                actor=principal.actor,
                node_id=None,
                operation="token-revoked",
                reason=f"API token {token_id} ({row.name!r}) of {row.username} revoked",
            )
