"""Accounts: add, change role, disable, delete; passwords changed, reset and recovered.

Rules (SPEC.md §9, docs/security.md):
- the last enabled `admin` cannot be demoted, disabled or deleted (409 `last-admin`);
- a new password follows the policy (domain/passwords.py; 422 naming the field);
- changing one's own password needs the current one (throttled like a login) and ends every
  other session and token of the account; an administrator's reset, a disable or a delete
  ends all of them;
- every change is an event (actor, what, never a password).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voipcloud.domain.access import (
    USERNAME_PATTERN,
    USERNAME_RULE,
    AccountRole,
    Principal,
)
from voipcloud.domain.errors import InvalidInput, NotFound, RuleViolation
from voipcloud.domain.passwords import password_problem
from voipcloud.services import passwords
from voipcloud.services.context import Context
from voipcloud.services.secrets_box import token_digest
from voipcloud.store import accounts, events
from voipcloud.store.accounts import AccountRow

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from voipcloud.services.auth import LoginLimiter

RECOVERY_ACTOR = "host"  # `voipcloud account reset-password` on the controller host


@dataclass(frozen=True, slots=True)
class PasswordChange:
    ended: int  # sessions and tokens ended by the change


def check_username(username: str, loc: tuple[str | int, ...] = ("body", "username")) -> str:
    if not USERNAME_PATTERN.match(username):
        raise InvalidInput.one(loc, f"must be {USERNAME_RULE}")
    return username


def check_new_password(
    password: str, username: str, loc: tuple[str | int, ...] = ("body", "new_password")
) -> None:
    problem = password_problem(password, username)
    if problem:
        raise InvalidInput.one(loc, problem)


class AccountService:
    def __init__(self, ctx: Context, limiter: LoginLimiter) -> None:
        self._ctx = ctx
        self._limiter = limiter

    # --- reading ----------------------------------------------------------------------

    def list(self) -> list[AccountRow]:
        with self._ctx.db.read() as conn:
            return accounts.list_accounts(conn)

    def get(self, username: str) -> AccountRow:
        with self._ctx.db.read() as conn:
            return _found(accounts.find_account(conn, username), username)

    # --- changes by an administrator --------------------------------------------------

    def add(
        self,
        *,
        actor: str,
        username: str,
        role: AccountRole,
        password: str,
        disabled: bool = False,
    ) -> AccountRow:
        check_username(username)
        check_new_password(password, username, ("body", "password"))
        password_hash = passwords.hash_password(password)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            if accounts.find_account(conn, username) is not None:
                raise RuleViolation("username-taken", f"An account {username} exists already.")
            account_id = accounts.add_account(
                conn, username=username, password_hash=password_hash, role=role, now=now
            )
            if disabled:
                accounts.update_account(conn, account_id, now=now, disabled=True)
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="account-added",
                reason=f"account {username} added with role {role.value}"
                + (", disabled" if disabled else ""),
            )
            return _found(accounts.get_account(conn, account_id), username)

    def update(
        self,
        *,
        actor: str,
        username: str,
        role: AccountRole | None = None,
        disabled: bool | None = None,
    ) -> AccountRow:
        """Change an account's role and/or disable or enable it. Disabling ends its sessions
        and tokens; a role change applies to them at their next request."""
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            account = _found(accounts.find_account(conn, username, lock=True), username)
            new_role = role if role is not None else account.role
            new_disabled = disabled if disabled is not None else account.disabled
            if new_role is not AccountRole.ADMIN or new_disabled:
                what = "disabled" if new_disabled else f"made {new_role.value}"
                _keep_an_admin(conn, account, what)
            changes: dict[str, Any] = {}
            said = []
            if new_role is not account.role:
                changes["role"] = new_role.value
                said.append(f"role {account.role.value} -> {new_role.value}")
            if new_disabled != account.disabled:
                changes["disabled"] = new_disabled
                said.append("disabled" if new_disabled else "enabled")
            if not changes:
                return account
            accounts.update_account(conn, account.id, now=now, **changes)
            ended = accounts.end_all(conn, account.id) if new_disabled else 0
            reason = f"account {username}: {', '.join(said)}"
            if ended:
                reason += f"; {ended} sessions and API tokens ended"
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="account-changed",
                reason=reason,
            )
            return _found(accounts.get_account(conn, account.id), username)

    def delete(self, *, actor: str, username: str) -> None:
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            account = _found(accounts.find_account(conn, username, lock=True), username)
            _keep_an_admin(conn, account, "deleted")
            accounts.delete_account(conn, account.id)
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="account-deleted",
                reason=f"account {username} ({account.role.value}) deleted with its sessions "
                "and API tokens",
            )

    def reset_password(self, *, actor: str, username: str, new_password: str) -> PasswordChange:
        """An administrator (or the host, offline) sets another account's password: every
        session and token of that account ends."""
        with self._ctx.db.read() as conn:
            _found(accounts.find_account(conn, username), username)
        check_new_password(new_password, username)
        password_hash = passwords.hash_password(new_password)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            account = _found(accounts.find_account(conn, username, lock=True), username)
            accounts.set_password_hash(conn, account.id, password_hash)
            accounts.update_account(conn, account.id, now=now)
            ended = accounts.end_all(conn, account.id)
            where = (
                " offline on the controller host (voipcloud account reset-password)"
                if actor == RECOVERY_ACTOR
                else ""
            )
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="password-reset",
                reason=f"password of {username} reset{where}; {ended} sessions and API "
                "tokens ended",
            )
        return PasswordChange(ended)

    # --- one's own password -------------------------------------------------------------

    def change_own(
        self,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
        session_token: str | None,
        source: str = "unknown",
    ) -> PasswordChange:
        """Change the signed-in account's password: the current one is required (a wrong one
        counts as a failed login for throttling); every other session and token ends, the
        one presenting this request stays."""
        username = principal.username
        with self._limiter.serialized(source):
            self._limiter.check(username, source)
            with self._ctx.db.read() as conn:
                account = _found(accounts.get_account(conn, principal.account_id), username)
            right = passwords.verify(account.password_hash, current_password)
            if not right:
                self._limiter.failed(username, source)
        if not right:
            raise InvalidInput.one(
                ("body", "current_password"), "is wrong; the password was not changed"
            )
        check_new_password(new_password, username)
        if passwords.verify(account.password_hash, new_password):
            raise InvalidInput.one(
                ("body", "new_password"), "must differ from the current password"
            )
        password_hash = passwords.hash_password(new_password)
        now = self._ctx.clock()
        keep_session = (
            token_digest(session_token)
            if session_token is not None and principal.token_id is None
            else None
        )
        with self._ctx.db.write() as conn:
            accounts.set_password_hash(conn, account.id, password_hash)
            accounts.update_account(conn, account.id, now=now)
            ended = accounts.end_all(
                conn,
                account.id,
                keep_session=keep_session or "",
                keep_token=principal.token_id if principal.token_id is not None else -1,
            )
            events.append(
                conn,
                at=now,
                actor=principal.actor,
                node_id=None,
                operation="password-changed",
                reason=f"own password changed from {source[:64]}; {ended} other sessions and "
                "API tokens ended",
            )
        return PasswordChange(ended)


def _found(account: AccountRow | None, username: str) -> AccountRow:
    if account is None:
        raise NotFound(f"No account {username}.")
    return account


def _keep_an_admin(conn: Connection, account: AccountRow, what: str) -> None:
    """409 `last-admin` when `account` is the last enabled administrator."""
    if account.role is not AccountRole.ADMIN or account.disabled:
        return
    others = [i for i in accounts.enabled_admin_ids(conn) if i != account.id]
    if not others:
        raise RuleViolation(
            "last-admin",
            f"{account.username} is the last enabled admin account; it cannot be {what}. "
            "Make another account an enabled admin first.",
        )
