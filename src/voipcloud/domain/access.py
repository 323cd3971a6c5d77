"""Who may do what: account roles, token scopes and the one permission table (SPEC.md §9).

Every API route and every web page declares the one `Permission` it needs (through
`voipcloud.api.deps.permit` / `voipcloud.web.deps.page`); this module decides whether a signed-in
account — through a browser session or an API token — holds it. No route checks roles itself.

| permission | covers | admin | oper. | viewer |
|---|---|---|---|---|
| `read` | every read: nodes, roles, events, properties, storage | yes | yes | yes |
| `read-secrets` | node session keys (the credential a node joins with) | yes | yes | no |
| `own-account` | one's own password and API tokens, log out everywhere | yes | yes | yes |
| `nodes` | node lifecycle, role assignment/parameters, bulk, rollout | yes | yes | no |
| `extensions` | the extensions registry | yes | no | no |
| `infrastructure` | Infrastructure Properties, Configuration Wizard | yes | no | no |
| `storage` | Storage Configuration, tests, migrations, resource writes | yes | no | no |
| `accounts` | other accounts, their passwords, everyone's API tokens | yes | no | no |
| `notifications` | webhooks: add, edit, delete, send a test | yes | no | no |

A token's scope narrows its account's role: a `read` token holds only the reading permissions
its role holds; a `write` token (and a browser session) holds exactly the role's. The role is
read again on every request, so a demotion takes effect at once for every session and token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from voipcloud.domain.errors import VoipcloudError


class AccountRole(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class TokenScope(StrEnum):
    READ = "read"
    WRITE = "write"


class Permission(StrEnum):
    READ = "read"
    READ_SECRETS = "read-secrets"
    OWN_ACCOUNT = "own-account"
    NODES = "nodes"
    EXTENSIONS = "extensions"
    INFRASTRUCTURE = "infrastructure"
    STORAGE = "storage"
    ACCOUNTS = "accounts"
    NOTIFICATIONS = "notifications"


READING: frozenset[Permission] = frozenset({Permission.READ, Permission.READ_SECRETS})

ROLE_PERMISSIONS: Mapping[AccountRole, frozenset[Permission]] = {
    AccountRole.ADMIN: frozenset(Permission),
    AccountRole.OPERATOR: frozenset(
        {Permission.READ, Permission.READ_SECRETS, Permission.OWN_ACCOUNT, Permission.NODES}
    ),
    AccountRole.VIEWER: frozenset({Permission.READ, Permission.OWN_ACCOUNT}),
}

SCOPE_PERMISSIONS: Mapping[TokenScope, frozenset[Permission]] = {
    TokenScope.READ: READING,
    TokenScope.WRITE: frozenset(Permission),
}

ROLE_SUMMARY: Mapping[AccountRole, str] = {
    AccountRole.ADMIN: "everything, including accounts, infrastructure properties and storage",
    AccountRole.OPERATOR: "node lifecycle, role assignment and parameters, bulk actions and "
    "rollouts; reads everything else",
    AccountRole.VIEWER: "reads everything (session keys hidden), changes nothing",
}

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
USERNAME_RULE = (
    "1 to 64 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter "
    "or digit"
)


class AccessDenied(VoipcloudError):
    """403: the signed-in account (or its token) may not do this; `rule` names why."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def permissions_of(
    role: AccountRole, scope: TokenScope = TokenScope.WRITE
) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role] & SCOPE_PERMISSIONS[scope]


def actor_of(role: AccountRole, username: str) -> str:
    """The event actor of an account: "admin:alice", "operator:bob", "viewer:carol"."""
    return f"{role.value}:{username}"


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in account as one request presents it: through a browser/CLI session or an
    API token (`token_id`)."""

    account_id: int
    username: str
    role: AccountRole
    scope: TokenScope = TokenScope.WRITE
    token_id: int | None = None  # the API token presented; None for a session

    @property
    def actor(self) -> str:
        return actor_of(self.role, self.username)

    @property
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(self.role, self.scope)

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        """AccessDenied (403) naming the rule unless this principal holds `permission`."""
        if self.may(permission):
            return
        if permission in ROLE_PERMISSIONS[self.role]:
            raise AccessDenied(
                "token-read-only",
                f"This API token is read-only; {describe(permission)} needs a write token.",
            )
        raise AccessDenied(
            "role-forbidden",
            f"The account {self.username} ({self.role.value}) may not {describe(permission)}; "
            f"that needs the role {needed_role(permission).value}.",
        )


_DESCRIPTIONS: Mapping[Permission, str] = {
    Permission.READ: "read the controller's state",
    Permission.READ_SECRETS: "see session keys",
    Permission.OWN_ACCOUNT: "change your own password and API tokens",
    Permission.NODES: "change nodes or their roles",
    Permission.EXTENSIONS: "change the extensions registry",
    Permission.INFRASTRUCTURE: "change the infrastructure properties or run the wizard",
    Permission.STORAGE: "change the storage configuration or stored resources",
    Permission.ACCOUNTS: "manage accounts",
    Permission.NOTIFICATIONS: "change the webhooks",
}


def describe(permission: Permission) -> str:
    return _DESCRIPTIONS[permission]


def needed_role(permission: Permission) -> AccountRole:
    """The least role that holds `permission`."""
    for role in (AccountRole.VIEWER, AccountRole.OPERATOR, AccountRole.ADMIN):
        if permission in ROLE_PERMISSIONS[role]:
            return role
    return AccountRole.ADMIN
