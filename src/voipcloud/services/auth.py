"""Administrators: argon2 password hashes and expiring bearer tokens."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from voipcloud.domain.errors import NotAuthenticated
from voipcloud.services.context import Context
from voipcloud.services.secrets_box import token_digest
from voipcloud.store import accounts

ADMIN_USERNAME = "admin"
FREE_LOGIN_FAILURES = 3  # wrong passwords allowed before attempts are slowed down
MAX_LOGIN_DELAY = 60.0  # seconds: the longest wait between attempts after many failures
_hasher = PasswordHasher()
# verifying against this keeps the time of an unknown-user answer equal to a known one
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class LoginThrottled(NotAuthenticated):
    """Too many wrong passwords in a row: the next attempt must wait."""

    def __init__(self, wait_seconds: float) -> None:
        self.wait_seconds = max(1, int(wait_seconds + 0.999))
        super().__init__(
            f"Too many failed sign-in attempts; wait {self.wait_seconds} s and try again."
        )


class LoginLimiter:
    """Slows down password guessing, per username, for the web login and the API alike.

    The first FREE_LOGIN_FAILURES wrong passwords cost nothing; after that each failure
    doubles the wait before the next attempt (up to MAX_LOGIN_DELAY). A success resets it.
    Attempts during the wait are refused without checking the password.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # username -> (count, next allowed)

    def check(self, username: str) -> None:
        with self._lock:
            _count, next_allowed = self._failures.get(username, (0, 0.0))
        wait = next_allowed - self._monotonic()
        if wait > 0:
            raise LoginThrottled(wait)

    def failed(self, username: str) -> float:
        """Count a wrong password; returns the seconds the next attempt must wait."""
        with self._lock:
            count = self._failures.get(username, (0, 0.0))[0] + 1
            extra = count - FREE_LOGIN_FAILURES
            delay = min(MAX_LOGIN_DELAY, 2.0 ** (extra - 1)) if extra > 0 else 0.0
            self._failures[username] = (count, self._monotonic() + delay)
            if len(self._failures) > 10_000:  # unknown usernames must not grow it forever
                self._failures.pop(next(iter(self._failures)))
        return delay

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)


class AuthService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.limiter = LoginLimiter()

    def signing_key(self, purpose: str) -> str:
        """A secret for signing web session cookies and CSRF tokens, from the data dir key."""
        return self._ctx.box.digest(f"voipcloud-signing:{purpose}")

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
        self.limiter.check(username)
        with self._ctx.db.read() as conn:
            found = accounts.find_administrator(conn, username)
        try:
            _hasher.verify(found[1] if found else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            raise self._wrong_password(username) from None
        if found is None:
            raise self._wrong_password(username)
        self.limiter.succeeded(username)
        return found[0]

    def _wrong_password(self, username: str) -> NotAuthenticated:
        delay = self.limiter.failed(username)
        message = "Wrong username or password."
        if delay:
            message += f" Too many failed attempts: wait {int(delay + 0.999)} s before the next."
        return NotAuthenticated(message)

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
