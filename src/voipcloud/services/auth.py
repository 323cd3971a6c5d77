"""Administrators: argon2 password hashes and expiring bearer tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from voipcloud.domain.errors import NotAuthenticated
from voipcloud.services.context import Context
from voipcloud.services.secrets_box import token_digest
from voipcloud.store import accounts

ADMIN_USERNAME = "admin"
_hasher = PasswordHasher()
# verifying against this keeps the time of an unknown-user answer equal to a known one
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AuthService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def ensure_admin(self, password: str | None) -> str | None:
        """Create `admin` on an empty database; returns the generated password, if any."""
        generated = None
        with self._ctx.db.write() as conn:
            if accounts.administrator_count(conn):
                return None
            if not password:
                password = generated = secrets.token_urlsafe(15)
            accounts.add_administrator(
                conn,
                username=ADMIN_USERNAME,
                password_hash=_hasher.hash(password),
                now=self._ctx.clock(),
            )
        return generated

    def check_password(self, username: str, password: str) -> int:
        with self._ctx.db.read() as conn:
            found = accounts.find_administrator(conn, username)
        try:
            _hasher.verify(found[1] if found else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            raise NotAuthenticated("Wrong username or password.") from None
        if found is None:
            raise NotAuthenticated("Wrong username or password.")
        return found[0]

    def issue_token(self, username: str, password: str) -> tuple[str, int]:
        administrator_id = self.check_password(username, password)
        token = secrets.token_urlsafe(32)
        now = self._ctx.clock()
        ttl = timedelta(seconds=self._ctx.token_ttl)
        with self._ctx.db.write() as conn:
            accounts.purge_expired_tokens(conn, now)
            accounts.add_token(
                conn,
                digest=token_digest(token),
                administrator_id=administrator_id,
                now=now,
                expires_at=now + ttl,
            )
        return token, int(ttl.total_seconds())

    def authenticate(self, token: str) -> str:
        with self._ctx.db.read() as conn:
            username = accounts.token_owner(conn, digest=token_digest(token), now=self._ctx.clock())
        if username is None:
            raise NotAuthenticated("The token is invalid or has expired; log in again.")
        return username

    def revoke(self, token: str) -> None:
        with self._ctx.db.write() as conn:
            accounts.revoke_token(conn, token_digest(token))
