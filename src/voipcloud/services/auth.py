"""Signing in: passwords checked (throttled, rehashed), sessions and API tokens turned into a
`Principal` (domain/access.py). Accounts and tokens themselves: services/accounts.py and
services/tokens.py, reached as `controller.auth.accounts` and `controller.auth.tokens`."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from voipcloud.domain.access import Principal, actor_of
from voipcloud.domain.errors import NotAuthenticated
from voipcloud.services import passwords
from voipcloud.services.accounts import AccountService
from voipcloud.services.context import CONTROLLER_ACTOR, Context
from voipcloud.services.secrets_box import token_digest
from voipcloud.services.tokens import API_TOKEN_PREFIX, TokenService
from voipcloud.store import accounts, events, login_failures
from voipcloud.store.accounts import AccountRow
from voipcloud.store.database import Database
from voipcloud.store.types import utcnow

ADMIN_USERNAME = "admin"
# Login throttling (docs/security.md): per (account, source address) and per source address,
# never per account alone, so nobody can lock an account out from an address of their own.
FREE_LOGIN_FAILURES = 5  # wrong passwords for one account from one address before waits
FREE_ADDRESS_FAILURES = 20  # wrong passwords from one address, any accounts, before waits
MAX_LOGIN_DELAY = 60.0  # seconds: the longest wait; each failure beyond the free ones doubles it
FORGET_FAILURES_AFTER = 15 * 60.0  # seconds without a failure: the count starts again
MAX_TRACKED = 10_000  # entries per table; the least recently failed are forgotten first
FAILED_LOGIN_EVENTS_PER_MINUTE = 60  # beyond this a flood is summed up in one event
TOKEN_USE_RECORDED_EVERY = timedelta(seconds=60)  # an API token's last use: one write a minute
log = logging.getLogger("voipcloud.auth")
_STRIPES = 64
# the first key of the login throttle's advisory locks on PostgreSQL ("voil"): apart from the
# duties' locks (services/cluster.py LOCK_SPACE); the second key is the source's hash
LOGIN_LOCK_SPACE = 0x766F696C
SWEEP_BATCH = 5_000  # rows of login_failures deleted per sweep and kind, at most


class LoginThrottled(NotAuthenticated):
    """Too many wrong passwords from this address: the next attempt must wait (429)."""

    def __init__(self, wait_seconds: float) -> None:
        self.wait_seconds = max(1, math.ceil(wait_seconds))
        super().__init__(
            f"Too many failed sign-in attempts; wait {self.wait_seconds} s and try again."
        )


def source_key(address: str) -> str:
    """Whom a count belongs to: an IPv4 address, or the /64 network of an IPv6 address (one
    host usually has a whole /64)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    next_allowed: float = 0.0


def _delay(count: int, free: int) -> float:
    """The wait after the `count`th failure in a row: nothing for the free ones, then 1 s,
    2 s, 4 s ... at most MAX_LOGIN_DELAY."""
    extra = count - free
    return min(MAX_LOGIN_DELAY, 2.0 ** (extra - 1)) if extra > 0 else 0.0


class _Table:
    """Failure counts by key, bounded, forgetting old ones."""

    def __init__(self, free: int) -> None:
        self.free = free
        self._entries: OrderedDict[Any, _Failures] = OrderedDict()

    def get(self, key: Any, now: float) -> _Failures:
        found = self._entries.get(key)
        if found is None or now - found.last > FORGET_FAILURES_AFTER:
            return _Failures()
        return found

    def fail(self, key: Any, now: float) -> float:
        entry = self.get(key, now)
        entry.count += 1
        entry.last = now
        delay = _delay(entry.count, self.free)
        entry.next_allowed = now + delay
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_TRACKED:
            self._entries.popitem(last=False)
        return delay

    def clear(self, key: Any) -> None:
        self._entries.pop(key, None)


class LoginLimiter:
    """Slows down password guessing, for the web login and the API alike.

    Counted per (username, source address) and per source address: the first
    FREE_LOGIN_FAILURES (FREE_ADDRESS_FAILURES) wrong passwords cost nothing; after that each
    failure doubles the wait before that pair's (address's) next attempt, up to
    MAX_LOGIN_DELAY. Attempts during the wait are refused without checking the password and
    are not counted. A success clears its pair. Another address is never slowed down.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._pairs = _Table(FREE_LOGIN_FAILURES)
        self._addresses = _Table(FREE_ADDRESS_FAILURES)
        # one address's attempts are checked one after another: parallel guesses cannot all
        # slip in before the first failure is counted
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    def serialized(self, address: str) -> AbstractContextManager[object]:
        return self._stripes[hash(source_key(address)) % _STRIPES]

    def check(self, username: str, address: str) -> None:
        source = source_key(address)
        now = self._monotonic()
        with self._lock:
            wait = max(
                self._pairs.get((username, source), now).next_allowed,
                self._addresses.get(source, now).next_allowed,
            )
        if wait - now > 0:
            raise LoginThrottled(wait - now)

    def failed(self, username: str, address: str) -> float:
        """Count a wrong password; returns the seconds the next attempt must wait."""
        source = source_key(address)
        now = self._monotonic()
        with self._lock:
            return max(self._pairs.fail((username, source), now), self._addresses.fail(source, now))

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._pairs.clear((username, source_key(address)))

    def sweep(self) -> int:
        """Forget old counts (the tables in memory bound themselves)."""
        return 0


class SharedLoginLimiter(LoginLimiter):
    """The same throttle with its counts in the database (`login_failures`): one for every
    controller and `serve --workers` process on one PostgreSQL, so guesses spread over N
    processes are counted and slowed down as if they came to one.

    `serialized(address)` is one write transaction that first takes a transaction-scoped
    advisory lock on the source (PostgreSQL: `pg_advisory_xact_lock`), after this process's
    own stripe lock (so one source holds at most one pooled connection per process while it
    waits); check, failed and succeeded inside it use that transaction, so one source's
    attempts are checked one after another across all processes, and its failure is committed
    before the next attempt of that source is checked. A failure is counted by one atomic
    upsert that returns the count. Times come from the database server's clock (one clock for
    all controllers), or from `clock` when given (tests). When the database is away every step
    raises DatabaseUnavailable (503): an attempt is never let through uncounted."""

    def __init__(self, db: Database, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        self._db = db
        self._clock = clock
        self._local = threading.local()

    @contextmanager
    def serialized(self, address: str) -> Iterator[object]:
        source = source_key(address)
        with super().serialized(address), self._db.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:space, :key)"),
                    {"space": LOGIN_LOCK_SPACE, "key": _lock_key(source)},
                )
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """The serialized block's transaction, or one of its own outside one."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._db.write() as own:
            yield own

    def _now(self, conn: Connection) -> datetime:
        if self._clock is not None:
            return self._clock()
        if conn.dialect.name == "postgresql":
            return login_failures.database_now(conn)
        return utcnow()

    def check(self, username: str, address: str) -> None:
        source = source_key(address)
        pair = (login_failures.PAIR, login_failures.pair_key(username, source))
        whole = (login_failures.ADDRESS, source)
        with self._transaction() as conn:
            now = self._now(conn)
            found = login_failures.read(conn, [pair, whole], forget_before=now - _FORGET)
        wait = 0.0
        for key, free in ((pair, FREE_LOGIN_FAILURES), (whole, FREE_ADDRESS_FAILURES)):
            if key in found:
                count = found[key]
                until = (count.last_failed_at - now).total_seconds() + _delay(count.failures, free)
                wait = max(wait, until)
        if wait > 0:
            raise LoginThrottled(wait)

    def failed(self, username: str, address: str) -> float:
        source = source_key(address)
        with self._transaction() as conn:
            now = self._now(conn)
            forget_before = now - _FORGET
            pair = login_failures.count_failure(
                conn,
                login_failures.PAIR,
                login_failures.pair_key(username, source),
                now=now,
                forget_before=forget_before,
            )
            whole = login_failures.count_failure(
                conn, login_failures.ADDRESS, source, now=now, forget_before=forget_before
            )
        return max(_delay(pair, FREE_LOGIN_FAILURES), _delay(whole, FREE_ADDRESS_FAILURES))

    def succeeded(self, username: str, address: str) -> None:
        source = source_key(address)
        with self._transaction() as conn:
            login_failures.clear(
                conn, login_failures.PAIR, login_failures.pair_key(username, source)
            )

    def sweep(self) -> int:
        """Delete forgotten counts and those beyond MAX_TRACKED per kind (bounded)."""
        with self._db.write() as conn:
            now = self._now(conn)
            return login_failures.sweep(
                conn, forget_before=now - _FORGET, keep=MAX_TRACKED, batch=SWEEP_BATCH
            )


_FORGET = timedelta(seconds=FORGET_FAILURES_AFTER)


def _lock_key(source: str) -> int:
    """A source's advisory lock key: a signed 32-bit hash, the same in every process."""
    return int.from_bytes(hashlib.sha256(source.encode()).digest()[:4], "big", signed=True)


class _EventBudget:
    """Failed logins are events, but a flood must not fill the table: at most `per_minute`
    one by one, then one event that counts the rest of the minute."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._monotonic = monotonic
        self._window = -1
        self._count = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, int]:
        """(record this one?, failures left unrecorded in the previous window)."""
        with self._lock:
            window = int(self._monotonic() // 60)
            unrecorded = 0
            if window != self._window:
                unrecorded = max(0, self._count - self._per_minute)
                self._window, self._count = window, 0
            self._count += 1
            return self._count <= self._per_minute, unrecorded


class AuthService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        # PostgreSQL: counts shared by every controller on the database; SQLite has one
        # process (serve refuses --workers N on it), whose memory is exact and costs no write
        self.limiter: LoginLimiter = (
            SharedLoginLimiter(ctx.db) if ctx.db.dialect == "postgresql" else LoginLimiter()
        )
        self._failure_events = _EventBudget(FAILED_LOGIN_EVENTS_PER_MINUTE)
        self.accounts = AccountService(ctx, self.limiter)
        self.tokens = TokenService(ctx)

    def sweep_login_failures(self) -> int:
        """The periodic cleanup of the shared login throttle (one controller does it)."""
        return self.limiter.sweep()

    def signing_key(self, purpose: str) -> str:
        """A secret for signing web session cookies and CSRF tokens, from the data dir key."""
        return self._ctx.box.digest(f"voipcloud-signing:{purpose}")

    def ensure_admin(self, password: str | None) -> str | None:
        """Create `admin` on an empty database; returns the generated password, if any.

        After the first start a VOIPCLOUD_ADMIN_PASSWORD (`password`) is never silently
        ignored: when it is not the password of `admin` any more it is refused, in the log and
        as an event, with the way to reset a password offline."""
        generated = None
        with self._ctx.db.write() as conn:
            if accounts.administrator_count(conn):
                existing = accounts.find_account(conn, ADMIN_USERNAME)
            else:
                existing = None
                if not password:
                    password = generated = secrets.token_urlsafe(15)
                accounts.add_administrator(
                    conn,
                    username=ADMIN_USERNAME,
                    password_hash=passwords.hash_password(password),
                    now=self._ctx.clock(),
                )
                return generated
        if password:
            self._admin_password_after_first_start(existing, password)
        return None

    def _admin_password_after_first_start(self, existing: AccountRow | None, password: str) -> None:
        if existing is not None and passwords.verify(existing.password_hash, password):
            log.info("VOIPCLOUD_ADMIN_PASSWORD is the current password of 'admin'")
            return
        why = (
            "there is no account 'admin' any more"
            if existing is None
            else "it is not the password of 'admin' (changed since the first start)"
        )
        log.warning(
            "VOIPCLOUD_ADMIN_PASSWORD refused: %s; it was NOT applied and the current password "
            "stays. To reset a password on this host, stop the controller and run "
            "`voipcloud account reset-password NAME --password-stdin`; or unset the variable.",
            why,
        )
        with self._ctx.db.write() as conn:
            events.append(
                conn,
                at=self._ctx.clock(),
                actor=CONTROLLER_ACTOR,
                node_id=None,
                operation="admin-password-refused",
                reason=f"VOIPCLOUD_ADMIN_PASSWORD not applied at start: {why}",
            )

    def check_password(
        self, username: str, password: str, *, source: str = "unknown"
    ) -> AccountRow:
        """The account if the password is right (its hash renewed when the hashing parameters
        changed); else NotAuthenticated (a failed login, recorded) or LoginThrottled (not
        checked at all). A disabled account is refused after its password was checked."""
        delay = 0.0
        with self.limiter.serialized(source):
            self.limiter.check(username, source)
            with self._ctx.db.read() as conn:
                found = accounts.find_account(conn, username)
            right = passwords.verify(
                found.password_hash if found else passwords.dummy_hash(), password
            )
            right = right and found is not None
            if right:
                self.limiter.succeeded(username, source)
            else:
                delay = self.limiter.failed(username, source)
        if not right or found is None:
            self._record_failure(found, source)
            message = "Wrong username or password."
            if delay:
                message += f" Too many failed attempts: wait {math.ceil(delay)} s before the next."
            raise NotAuthenticated(message)
        if found.disabled:
            self._record_failure(found, source, why="account disabled")
            raise NotAuthenticated(
                f"The account {found.username} is disabled; ask an administrator."
            )
        if passwords.needs_rehash(found.password_hash):
            with self._ctx.db.write() as conn:
                accounts.set_password_hash(conn, found.id, passwords.hash_password(password))
            log.info("password hash of %s renewed with the current argon2 parameters", username)
        return found

    def _record_failure(
        self, account: AccountRow | None, source: str, *, why: str = "wrong password"
    ) -> None:
        """A failed login is an event: the account (or "an unknown username": what was typed
        may be a password typed in the wrong field) and the source address, never the
        password. Bounded by FAILED_LOGIN_EVENTS_PER_MINUTE."""
        record, unrecorded = self._failure_events.take()
        if not record and not unrecorded:
            return
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            if unrecorded:
                events.append(
                    conn,
                    at=now,
                    actor=CONTROLLER_ACTOR,
                    node_id=None,
                    operation="login-failed",
                    reason=f"{unrecorded} more failed logins in the minute before were not "
                    "recorded one by one (more than "
                    f"{FAILED_LOGIN_EVENTS_PER_MINUTE} a minute)",
                )
            if record:
                events.append(
                    conn,
                    at=now,
                    actor=actor_of(account.role, account.username) if account else "anonymous",
                    node_id=None,
                    operation="login-failed",
                    reason=(why if account else "unknown username") + f" from {_line(source)}",
                )

    def issue_token(
        self, username: str, password: str, *, source: str = "unknown", via: str = "API"
    ) -> tuple[str, int]:
        """Check the password and open a session (a short-lived bearer token); the login is
        an event (who, from where)."""
        account = self.check_password(username, password, source=source)
        token = secrets.token_urlsafe(32)
        now = self._ctx.clock()
        ttl = timedelta(seconds=self._ctx.token_ttl)
        with self._ctx.db.write() as conn:
            accounts.purge_expired_tokens(conn, now)
            accounts.add_token(
                conn,
                digest=token_digest(token),
                administrator_id=account.id,
                now=now,
                expires_at=now + ttl,
            )
            events.append(
                conn,
                at=now,
                actor=actor_of(account.role, account.username),
                node_id=None,
                operation="login",
                reason=f"signed in to the {via} from {_line(source)}",
            )
        return token, int(ttl.total_seconds())

    def principal(self, token: str) -> Principal:
        """Who presents this session or API token, with the account's role as it is now;
        NotAuthenticated when it is unknown, expired, revoked, or its account disabled."""
        now = self._ctx.clock()
        digest = token_digest(token)
        if token.startswith(API_TOKEN_PREFIX):
            with self._ctx.db.lookup() as conn:  # one statement
                found = accounts.api_token_owner(conn, digest=digest, now=now)
            if found is None or found[0].disabled:
                raise NotAuthenticated("The API token is invalid, revoked or expired.")
            account, row = found
            if row.last_used_at is None or now - row.last_used_at >= TOKEN_USE_RECORDED_EVERY:
                with self._ctx.db.write() as conn:
                    accounts.touch_api_token(
                        conn, row.id, now, older_than=now - TOKEN_USE_RECORDED_EVERY
                    )
            return Principal(account.id, account.username, account.role, row.scope, row.id)
        with self._ctx.db.lookup() as conn:  # one statement
            owner = accounts.session_owner(conn, digest=digest, now=now)
        if owner is None or owner.disabled:
            raise NotAuthenticated("The token is invalid or has expired; log in again.")
        return Principal(owner.id, owner.username, owner.role)

    def authenticate(self, token: str) -> str:
        """The username behind a session or API token (NotAuthenticated otherwise)."""
        return self.principal(token).username

    def revoke(self, token: str) -> None:
        """Log out: end the session (or API token) presented, and only that one."""
        digest = token_digest(token)
        with self._ctx.db.write() as conn:
            accounts.revoke_token(conn, digest)
            if token.startswith(API_TOKEN_PREFIX):
                found = accounts.api_token_owner(conn, digest=digest, now=self._ctx.clock())
                if found is not None:
                    accounts.delete_api_token(conn, found[1].id)

    def end_everywhere(self, principal: Principal) -> int:
        """Log out everywhere: end every session and API token of the account (this one
        too); an event. Returns how many were ended."""
        with self._ctx.db.write() as conn:
            ended = accounts.end_all(conn, principal.account_id)
            events.append(
                conn,
                at=self._ctx.clock(),
                actor=principal.actor,
                node_id=None,
                operation="logout-everywhere",
                reason=f"ended {ended} sessions and API tokens",
            )
        return ended


def _line(source: str) -> str:
    """A source address as one short line (it comes from the connection, but stay safe)."""
    return "".join(c if c.isprintable() else "?" for c in source)[:64]
